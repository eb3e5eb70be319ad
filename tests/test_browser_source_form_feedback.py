"""The source form's feedback in headless Chromium: focus on the first
problem after a failed Save, errors that clear once fixed and are never shown
twice, invalid key names marked while typing with the rule they break, why
the API key must be typed again, a keyboard-operable +Add Field, and help
text beside the fields on a desktop."""

from __future__ import annotations

import pytest
from django.urls import reverse

from collectors import fieldnames
from tests.cast import make_collector, make_field
from tests.conftest import artifacts_dir

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def open_form(page, live_server):
    collector = make_collector("Production")
    make_field("department")
    page.goto(live_server.url + reverse("source-add", args=[collector.pk]))
    return collector


def focused(page) -> str:
    return page.evaluate("document.activeElement.name || document.activeElement.id")


def test_it_focuses_the_first_problem_and_clears_errors_once_fixed(page, live_server):
    open_form(page, live_server)
    page.click("#add-field")
    page.locator(".field-key").first.fill("department")
    page.locator(".field-value").first.fill("IT")
    page.fill("input[name=api_key]", "short")
    page.click("button[type=submit]:has-text('Save')")
    page.wait_for_selector("#error-summary")
    assert focused(page) == "name"
    summary = page.locator("#error-summary").inner_text()
    assert "Name" in summary and "Base URL" in summary and "API Key" in summary
    html = page.content()
    assert html.count("This field is required.") == 2  # name, base URL: once each
    assert "Check the Fields rows" not in html
    page.screenshot(
        path=str(artifacts_dir() / "source-form-failed-save.png"), full_page=True
    )

    name_error = page.locator('[data-field="name"] .errorlist')
    assert name_error.is_visible()
    page.type("input[name=name]", "KnowBe4 Events")
    assert not name_error.is_visible()
    assert page.get_attribute("input[name=name]", "aria-invalid") is None
    page.fill("input[name=name]", "")
    assert name_error.is_visible()

    # the summary's links move focus to the problem
    page.click("#error-summary a:has-text('Base URL')")
    assert focused(page) == "base_url_key"
    page.select_option("select[name=base_url_key]", "eu")
    assert not page.locator('[data-field="base_url_key"] .errorlist').is_visible()

    # why the key box is empty again
    note = page.locator(".reentry-note")
    assert "Enter the API key again" in note.inner_text()
    assert page.input_value("input[name=api_key]") == ""
    page.fill("input[name=api_key]", "a-long-enough-key-123")
    assert not note.is_visible()
    assert not page.locator('[data-field="api_key"] .errorlist').is_visible()


def test_it_marks_an_invalid_key_name_while_typing(page, live_server):
    open_form(page, live_server)
    page.click("#add-field")
    row = page.locator("[data-field-row]").first
    row.locator(".field-key").type("bad key!")
    assert row.locator(".indicator-invalid").is_visible()
    assert not row.locator(".indicator-missing").is_visible()
    assert row.locator(".key-error").inner_text() == fieldnames.key_error("bad key!")
    assert not page.locator("#auto-add").is_visible()
    page.screenshot(path=str(artifacts_dir() / "source-form-invalid-key.png"))
    # the browser's rules are the server's, case by case
    # (a key over 255 characters cannot be typed: the input's maxlength)
    for key in ["9lives", "a..b", "_sourceCategory", "é", "ok.name_1", "Dept"]:
        row.locator(".field-key").fill(key)
        shown = row.locator(".key-error")
        expected = fieldnames.key_error(key)
        if expected:
            assert shown.inner_text() == expected, key
        else:
            assert not shown.is_visible(), key
    row.locator(".field-key").fill("department")
    assert row.locator(".indicator-ok").is_visible()
    assert not row.locator(".indicator-invalid").is_visible()


def test_it_keeps_a_server_only_row_error_until_the_key_changes(page, live_server):
    open_form(page, live_server)
    for key in ("team", "TEAM"):
        page.click("#add-field")
        page.locator(".field-key").last.fill(key)
    page.fill("input[name=name]", "Twice")
    page.click("button[type=submit]:has-text('Save')")
    page.wait_for_selector("#error-summary")
    assert page.evaluate("document.activeElement.id") == "field-key-2"
    second = page.locator("[data-field-row]").nth(1)
    assert "given twice" in second.locator(".key-error").inner_text()
    second.locator(".field-key").fill("team2")
    assert not second.locator(".key-error").is_visible()


def test_it_adds_a_field_with_space_and_enter(page, live_server):
    open_form(page, live_server)
    page.focus("#add-field")
    page.keyboard.press("Space")
    assert page.locator("[data-field-row]").count() == 1
    page.focus("#add-field")
    page.keyboard.press("Enter")
    assert page.locator("[data-field-row]").count() == 2
    assert page.evaluate("document.activeElement.classList.contains('field-key')")


def test_it_puts_help_text_beside_the_fields_on_a_desktop(page, live_server):
    page.set_viewport_size({"width": 1440, "height": 900})
    open_form(page, live_server)
    field = page.locator("input[name=category]").bounding_box()
    help_text = page.locator("#id_category_helptext").bounding_box()
    assert help_text["x"] >= field["x"] + field["width"]
    assert abs(help_text["y"] - field["y"]) < field["height"] * 2
    page.screenshot(
        path=str(artifacts_dir() / "source-form-desktop.png"), full_page=True
    )

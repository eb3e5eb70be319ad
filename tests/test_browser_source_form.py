"""The real Add Source form in headless Chromium: +Add Field, the live schema
check, Save, and the new source on the Collection page in Pending."""

from __future__ import annotations

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from collectors.models import FieldDefinition, Source
from tests.cast import (
    make_collector,
    make_field,
    make_source,
    make_source_with_wrong_key,
)
from tests.conftest import artifacts_dir

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_it_adds_a_source_with_fields(page, live_server):
    collector = make_collector("Production")
    make_field("department")
    page.goto(live_server.url + reverse("collection"))
    page.click(f'tr[data-collector-id="{collector.pk}"] a.add-source')
    page.click("a.tile")
    page.fill("input[name=name]", "KnowBe4 Browser")
    page.fill("textarea[name=description]", "Added by the browser test")
    page.fill("input[name=category]", "Security/KnowBe4")

    page.click("#add-field")
    page.click("#add-field")
    rows = page.locator("[data-field-row]")
    assert rows.count() == 2
    rows.nth(0).locator(".field-key").type("Department")
    rows.nth(0).locator(".field-value").fill("IT")
    rows.nth(1).locator(".field-key").type("cost_center")
    rows.nth(1).locator(".field-value").fill("42")

    assert rows.nth(0).locator(".indicator-ok").is_visible()
    assert not rows.nth(0).locator(".indicator-missing").is_visible()
    assert rows.nth(1).locator(".indicator-missing").is_visible()
    assert not rows.nth(1).locator(".indicator-ok").is_visible()
    assert page.locator("#auto-add").is_visible()

    page.select_option("select[name=base_url_key]", "eu")
    page.fill("input[name=api_key]", "browser-key-0123456789")

    # The Advanced section's quota figures follow what is typed.
    page.click("details.advanced summary")
    budget = page.locator(".quota-live .quota-budget")
    expect(budget).to_contain_text("not known yet")
    page.locator("input[name=licensed_users]").type("75")
    expect(budget).to_have_text("750 requests")
    page.locator("input[name=licensed_users]").fill("0")
    expect(page.locator(".quota-live [role=alert]")).to_contain_text("Licensed users")
    page.locator("input[name=licensed_users]").fill("120")
    expect(budget).to_have_text("1,200 requests")
    page.screenshot(path=str(artifacts_dir() / "add-source-form.png"), full_page=True)
    page.click("button[type=submit]:has-text('Save')")

    page.wait_for_url(live_server.url + reverse("collection"))
    source = Source.objects.get(name="KnowBe4 Browser")
    row = page.locator(f'tr[data-source-id="{source.pk}"]')
    assert row.locator("[data-state]").inner_text() == "Pending"
    assert "cost_center" in page.locator(".flash").inner_text()
    assert dict(source.fields.values_list("key", "value")) == {
        "Department": "IT",
        "cost_center": "42",
    }
    assert not FieldDefinition.objects.filter(name="cost_center").exists()
    assert source.licensed_users == 120


def test_it_hides_the_auto_add_option_when_every_key_is_known(page, live_server):
    collector = make_collector("Production")
    make_field("team")
    page.goto(live_server.url + reverse("source-add", args=[collector.pk]))
    assert not page.locator("#auto-add").is_visible()
    page.click("#add-field")
    key = page.locator(".field-key").first
    key.type("teamx")
    assert page.locator("#auto-add").is_visible()
    key.press("Backspace")
    assert page.locator(".indicator-ok").first.is_visible()
    assert not page.locator("#auto-add").is_visible()
    page.click(".remove-field")
    assert page.locator("[data-field-row]").count() == 0


def test_it_stops_at_ten_fields(page, live_server):
    collector = make_collector("Production")
    page.goto(live_server.url + reverse("source-add", args=[collector.pk]))
    for _ in range(10):
        page.click("#add-field")
    assert page.locator("[data-field-row]").count() == 10
    assert not page.locator("#add-field").is_visible()
    assert page.locator("#field-limit").is_visible()


def test_it_screenshots_the_collection_page(page, live_server):
    prod = make_collector("Production", description="Main tenant")
    staging = make_collector("Staging", category="Staging/Security")
    make_source(prod, "KnowBe4 Events", category="Security/KnowBe4")
    make_source(prod, "KnowBe4 EU", base_url_key="eu", state="collecting")
    # In Error with the health event that put it there: a bare Error state
    # drew a red state pill beside a green health icon.
    broken = make_source_with_wrong_key(staging, "KnowBe4 Test")
    page.goto(live_server.url + reverse("collection"))
    page.screenshot(path=str(artifacts_dir() / "collection-page.png"), full_page=True)
    assert page.locator("tr[data-source-id]").count() == 3
    icon = page.locator(f'tr[data-source-id="{broken.pk}"] .status-icon')
    assert icon.get_attribute("data-status") == "error"


def test_it_tests_the_connection_in_place_without_saving(page, live_server, settings):
    from tests.sandbox_support import running_sandbox

    collector = make_collector("Production")
    with running_sandbox(days=2, events_per_day=5) as sandbox:
        settings.KNOWBE4_EXTRA_BASE_URLS = [f"Sandbox|{sandbox.url}"]
        page.goto(live_server.url + reverse("source-add", args=[collector.pk]))
        page.fill("input[name=name]", "Tested")
        page.select_option("select[name=base_url_key]", "x-sandbox")
        page.fill("input[name=api_key]", "kb4-wrong-key-0123456789")
        page.click("#test-connection")
        result = page.locator("#connection-result [data-outcome]")
        result.wait_for()
        assert result.get_attribute("data-outcome") == "unauthorized"

        page.fill("input[name=api_key]", sandbox.api_key)
        page.click("#test-connection")
        page.locator('#connection-result [data-outcome="authenticated"]').wait_for()
        page.screenshot(
            path=str(artifacts_dir() / "source-form-test-connection.png"),
            full_page=True,
        )
        assert sandbox.api_key not in page.content()
        assert [r.status for r in sandbox.requests if r.path == "/events"] == [401, 200]
    assert not Source.objects.exists()  # Nothing was saved.
    assert page.url.endswith(reverse("source-add", args=[collector.pk]))


def test_it_shows_the_figures_of_the_values_sent_after_a_failed_save(page, live_server):
    collector = make_collector("Production")
    page.goto(live_server.url + reverse("source-add-reporting", args=[collector.pk]))
    page.click("details.advanced summary")
    page.fill("input[name=reporting_licensed_users]", "300")
    page.click("button[type=submit]:has-text('Save')")  # no name, region or key
    expect(page.locator("#error-summary")).to_be_visible()
    assert page.input_value("input[name=reporting_licensed_users]") == "300"
    expect(page.locator(".quota-live .quota-budget")).to_have_text("2,300 requests")

"""A KnowBe4 KMSAT Reporting source added in headless Chromium through the
tile and its form (its Test connection pressed first), collected from the
sandbox, seen in Messages."""

from __future__ import annotations

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from collectors.engine import run
from collectors.models import LogMessage, Source
from tests.cast import make_collector
from tests.conftest import artifacts_dir
from tests.sandbox_support import REPORTING_KEY, running_sandbox

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_it_adds_a_reporting_source_and_shows_its_phishing_tests(
    page, live_server, settings
):
    settings.KNOWBE4_RATE_LIMIT = False
    collector = make_collector("Production")
    with running_sandbox(rate_limit=False) as sb:
        settings.KNOWBE4_EXTRA_BASE_URLS = [f"Sandbox (local)|{sb.url}"]
        page.goto(live_server.url + reverse("source-types", args=[collector.pk]))
        page.click("a.tile:has-text('KnowBe4 KMSAT Reporting')")
        page.fill("input[name=name]", "KMSAT Browser")
        page.fill("input[name=category]", "Security/KMSAT")
        page.select_option("select[name=base_url_key]", "x-sandbox-local")
        # Test connection first with the User Event key, then the right one.
        page.fill("input[name=api_key]", sb.api_key)
        page.click("#test-connection")
        refused = page.locator('#connection-result [data-outcome="unauthorized"]')
        refused.wait_for()
        assert "Reporting API key" in refused.inner_text()
        page.fill("input[name=api_key]", REPORTING_KEY)
        page.click("#test-connection")
        page.locator('#connection-result [data-outcome="authenticated"]').wait_for()
        assert [(r.path, r.status) for r in sb.requests] == [
            ("/v1/account", 401),
            ("/v1/account", 200),
        ]
        assert not Source.objects.exists()  # testing saves nothing
        assert page.locator("input[name=data_types][value=phishing]").is_checked()
        page.check("input[name=data_types][value=users]")
        # The Advanced section's limit figures follow what is typed.
        page.click("details.advanced summary")
        budget = page.locator(".quota-live .quota-budget")
        expect(budget).to_have_text("2,000 requests")
        page.locator("input[name=reporting_licensed_users]").type("300")
        expect(budget).to_have_text("2,300 requests")
        page.screenshot(
            path=str(artifacts_dir() / "add-reporting-source-form.png"), full_page=True
        )
        page.click("button[type=submit]:has-text('Save')")
        page.wait_for_url(live_server.url + reverse("collection"))
        source = Source.objects.get(name="KMSAT Browser")
        assert source.kind == "reporting"
        assert run(source.pk).outcome == "caught_up"
    tests = LogMessage.objects.filter(source=source, data_type="phishing_test")
    assert tests.exists()
    page.goto(live_server.url + reverse("messages"))
    page.select_option("select[name=data_type]", "phishing_test")
    page.click("button[type=submit]:has-text('Search')")
    rows = page.locator("table.messages tbody tr[data-message-id]")
    assert rows.count() == tests.count()
    assert "Phishing security test" in rows.first.inner_text()
    assert REPORTING_KEY not in page.content()
    page.screenshot(
        path=str(artifacts_dir() / "reporting-messages.png"), full_page=True
    )

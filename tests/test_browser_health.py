"""The Health and Status experience in headless Chromium.

Hover a status icon for its tooltip, click it for the Health Events panel,
Escape to close it; a source with a wrong sandbox key turns red within one
refresh of the Collection page, and green again once its key is corrected.
Screenshots go to artifacts/ for review.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from collectors import engine
from collectors.choices import ErrorType, HealthEventName, Severity, SourceState
from collectors.models import HealthEvent
from tests.cast import make_collector, make_source
from tests.conftest import artifacts_dir
from tests.sandbox_support import SANDBOX_KEY, running_sandbox

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("transactional_db")]

# How long to wait for the icon to change: health.js polls every 4 s, so this
# is a cap on a wait for a condition, never the verdict; a loaded machine may
# need several polls, so the cap is generous.
ONE_REFRESH_MS = 30_000


def icon(source) -> str:
    return f'tr[data-source-id="{source.pk}"] .status-icon'


def add_events(source) -> None:
    """Two open errors and one warning, plus a resolved one that must not show."""
    now = timezone.now()
    for name, severity, message in (
        (HealthEventName.THIRD_PARTY_CONFIG, Severity.ERROR, "KnowBe4 said 401"),
        (HealthEventName.FIRST_PARTY_GENERIC, Severity.ERROR, "Storage failed"),
        (HealthEventName.THIRD_PARTY_GENERIC, Severity.WARNING, "Daily quota spent"),
    ):
        HealthEvent.objects.create(
            source=source,
            event_name=name,
            error_type=name.removesuffix("Error"),
            severity=severity,
            message=message,
            error_code="E1",
            suggested_fix="Fix it",
            first_seen=now - timedelta(minutes=30),
            last_seen=now,
        )
    HealthEvent.objects.create(
        source=source,
        event_name=HealthEventName.THIRD_PARTY_GENERIC,
        error_type=ErrorType.THIRD_PARTY_GENERIC,
        severity=Severity.ERROR,
        message="An old resolved outage",
        resolved_at=now,
    )


def test_it_shows_the_tooltip_opens_the_panel_and_closes_it(page, live_server):
    collector = make_collector("Production")
    source = make_source(collector, "KnowBe4 Events", state=SourceState.ERROR)
    source.last_success_at = timezone.now().replace(
        year=2026, month=11, day=26, hour=8, minute=30, second=0, microsecond=0
    )
    source.save()
    healthy = make_source(collector, "Quiet one", state=SourceState.COLLECTING)
    add_events(source)

    page.goto(f"{live_server.url}/")
    page.hover(icon(source))
    tooltip = page.locator("#health-tooltip")
    tooltip.wait_for(state="visible")
    assert "2 errors, 1 warning" in tooltip.inner_text()
    assert "Last successful collection: 2026-11-26 08:30 UTC" in tooltip.inner_text()
    page.screenshot(path=str(artifacts_dir() / "collection-tooltip.png"))

    page.hover(icon(healthy))
    assert tooltip.inner_text().startswith("0 errors, 0 warnings")

    page.focus(icon(source))  # keyboard focus shows it too
    assert "2 errors, 1 warning" in tooltip.inner_text()

    page.click(icon(source))
    panel = page.locator("#health-panel-slot .health-panel")
    panel.wait_for(state="visible")
    text = panel.inner_text()
    for expected in ("KnowBe4 said 401", "Storage failed", "Daily quota spent"):
        assert expected in text
    assert "An old resolved outage" not in text
    assert "ThirdPartyConfigError" in text and "3 open events" in text
    assert page.evaluate("document.activeElement.classList.contains('health-panel')")
    assert page.url.rstrip("/") == live_server.url  # still on the Collection page
    page.screenshot(path=str(artifacts_dir() / "health-panel.png"))

    page.keyboard.press("Escape")
    panel.wait_for(state="detached")
    focused = page.evaluate(
        "document.activeElement.closest('tr')?.dataset.sourceId ?? null"
    )
    assert focused == str(source.pk)

    page.click(f'tr[data-collector-id="{collector.pk}"] .status-icon')
    panel.wait_for(state="visible")
    assert "Collector Production" in panel.inner_text()
    page.click("#health-panel-slot .panel-close")
    panel.wait_for(state="detached")


def test_it_turns_red_on_a_wrong_key_and_green_once_corrected(
    page, live_server, settings
):
    settings.COLLECTION_SETTLE_DELAY = timedelta(0)
    with running_sandbox(days=3, events_per_day=5) as sb:
        settings.KNOWBE4_EXTRA_BASE_URLS = [f"Sandbox|{sb.url}"]
        collector = make_collector("Production")
        source = make_source(
            collector,
            "KnowBe4 Events",
            base_url_key="x-sandbox",
            api_key="kb4-wrong-key-0000000000-ZZZZ",
            initial_lookback_days=2,
        )
        page.goto(f"{live_server.url}/")
        page.wait_for_selector(f'{icon(source)}[data-status="neutral"]')
        page.screenshot(path=str(artifacts_dir() / "collection.png"))

        engine.run(source.pk)
        source.refresh_from_db()
        assert source.state == SourceState.ERROR

        page.wait_for_selector(
            f'{icon(source)}[data-status="error"]', timeout=ONE_REFRESH_MS
        )
        state = page.locator(f'tr[data-source-id="{source.pk}"] [data-state]')
        assert state.inner_text() == "Error"
        page.wait_for_selector(
            f'tr[data-collector-id="{collector.pk}"] .status-icon[data-status="error"]'
        )
        page.click(icon(source))
        panel = page.locator("#health-panel-slot .health-panel")
        panel.wait_for(state="visible")
        assert "ThirdPartyConfigError" in panel.inner_text()
        page.screenshot(path=str(artifacts_dir() / "health-panel-config-error.png"))
        page.keyboard.press("Escape")

        page.goto(live_server.url + source.get_absolute_url())
        assert "ThirdPartyConfigError" in page.inner_text(".source-side")
        assert page.locator("form[action$='/restart/'] button").is_visible()
        page.screenshot(path=str(artifacts_dir() / "source-page.png"), full_page=True)
        page.goto(live_server.url + reverse("health-events"))
        page.screenshot(path=str(artifacts_dir() / "health-events.png"))
        page.goto(f"{live_server.url}/")

        page.click(f'tr[data-source-id="{source.pk}"] a:text("Edit")')
        page.fill("input[name=api_key]", SANDBOX_KEY)
        page.click("#source-form button[type=submit]")
        page.wait_for_url(f"{live_server.url}/")
        source.refresh_from_db()
        assert source.state == SourceState.PENDING

        engine.run(source.pk)
        source.refresh_from_db()
        assert source.state == SourceState.COLLECTING
        page.wait_for_selector(
            f'{icon(source)}[data-status="healthy"]', timeout=ONE_REFRESH_MS
        )
        assert state.inner_text() == "Collecting"
        assert source.messages.count() == 10
        page.screenshot(path=str(artifacts_dir() / "collection-healthy.png"))


def test_it_screenshots_the_add_source_form(page, live_server):
    collector = make_collector("Production")
    page.goto(live_server.url + reverse("source-add", args=[collector.pk]))
    page.wait_for_selector("#source-form")
    page.screenshot(path=str(artifacts_dir() / "add-source-form.png"), full_page=True)

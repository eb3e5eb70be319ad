"""The Collection page in headless Chromium: summary strip, Show filter,
sparklines, backfill bars, expand/collapse, states passed since the last
refresh, rows of deleted sources leaving live, and Restart/Edit in the panel.
Screenshots go to artifacts/; with DOCS_SCREENSHOTS=1 the first one also
replaces docs/collection.png, the README's picture."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from collectors import crypto, ledger
from collectors.choices import ErrorType, SourceState
from collectors.models import Source, StateTransition
from tests.cast import (
    add_messages,
    make_collector,
    make_source,
    make_source_with_wrong_key,
)
from tests.conftest import artifacts_dir

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("transactional_db")]
DOCS = Path(__file__).resolve().parent.parent / "docs"


def refresh(page) -> None:
    """One refresh of the live cells, synchronised on its completion event."""
    page.evaluate(
        """() => new Promise((done) => {
            document.addEventListener("health:refreshed", () => done(), {once: true});
            window.knowbe4Health.poll();
        })"""
    )


def world():
    now = timezone.now()
    prod = make_collector("Production", category="Security")
    lab = make_collector("Lab", category="Testing")
    live = make_source(prod, "Phishing events", state=SourceState.COLLECTING)
    # Created two days ago (its page's Timeline and State say so), collecting
    # since; its newest batch below came 20 minutes ago.
    created = now - timedelta(days=2)
    Source.objects.filter(pk=live.pk).update(
        created=created,
        state_changed=created,
        last_complete_day=date.today() - timedelta(days=1),
        last_success_at=now - timedelta(minutes=20),
    )
    StateTransition.objects.filter(source=live).update(at=created)
    for hours in range(0, 24, 3):
        add_messages(
            live,
            40 + hours * 5,
            received=now - timedelta(hours=hours, minutes=20),
            start=hours * 1000,
        )
    backfill = make_source(
        prod, "Training history", state=SourceState.COLLECTING, initial_lookback_days=90
    )
    # Created now (its 90-day window counts from today, so the bar's length
    # never depends on the hour the test runs), its first batches stored
    # since: its last success is not older than the source.
    checkpoint = date.today() - timedelta(days=60)
    Source.objects.filter(pk=backfill.pk).update(
        last_complete_day=checkpoint, last_success_at=timezone.now()
    )
    # Its events occurred on the days it has read so far, oldest day first.
    add_messages(
        backfill,
        900,
        received=timezone.now(),
        occurred=datetime.combine(checkpoint, time(12), UTC),
        start=100_000,
    )
    broken = make_source_with_wrong_key(lab)
    old = make_source(lab, "Retired", state=SourceState.STOPPING)
    return {
        "prod": prod,
        "lab": lab,
        "live": live,
        "backfill": backfill,
        "broken": broken,
        "old": old,
    }


def test_it_is_glanceable_and_live(page, live_server):
    w = world()
    page.goto(live_server.url + reverse("collection"))
    page.screenshot(path=str(artifacts_dir() / "collection-glance.png"), full_page=True)
    assert page.locator(".summary-collecting strong").inner_text() == "2"
    assert page.locator(".summary-errors strong").inner_text() == "1"
    live_row = page.locator(f'tr[data-source-id="{w["live"].pk}"]')
    assert live_row.locator("svg.sparkline rect").count() == 8
    bar = page.locator(f'tr[data-source-id="{w["backfill"].pk}"] progress')
    assert bar.get_attribute("max") == "90"
    assert (
        "Backfill"
        in page.locator(f'tr[data-source-id="{w["backfill"].pk}"]').inner_text()
    )
    page.screenshot(path=str(artifacts_dir() / "collection-glance.png"), full_page=True)
    if os.environ.get("DOCS_SCREENSHOTS") == "1":  # refresh the README's picture
        shutil.copy(artifacts_dir() / "collection-glance.png", DOCS / "collection.png")

    # a figure of the strip filters the table
    page.click(".summary-errors")
    page.wait_for_url("**show=errors")
    assert page.locator("tr[data-source-id]").count() == 1
    assert page.locator("select[name=show]").input_value() == "errors"
    page.select_option("select[name=show]", "all")
    page.wait_for_url("**show=all**")
    assert page.locator("tr[data-source-id]").count() == 4

    # trailing wildcard
    page.fill("input[name=q]", "train*")
    page.click("button:has-text('Filter')")
    page.wait_for_url("**q=train**")
    assert page.locator("tr[data-source-id]").count() == 1
    page.goto(live_server.url + reverse("collection"))

    # expand / collapse, remembered on reload
    toggle = page.locator(f'[data-toggle="{w["prod"].pk}"]')
    toggle.click()
    assert toggle.get_attribute("aria-expanded") == "false"
    assert not live_row.is_visible()
    page.reload()
    assert not page.locator(f'tr[data-source-id="{w["live"].pk}"]').is_visible()
    page.click("[data-expand-all]")
    assert page.locator(f'tr[data-source-id="{w["live"].pk}"]').is_visible()
    page.click("[data-collapse-all]")
    assert page.locator("tr.source-row:visible").count() == 0
    page.click("[data-expand-all]")

    # a new source walks its states; the refresh shows the ones it passed
    walker = make_source(w["prod"], "Walker")
    page.reload()
    refresh(page)
    for state in ("started", "initialized", "authenticated", "collecting"):
        walker.transition(state, "browser test")
    refresh(page)
    cell = page.locator(f'tr[data-source-id="{walker.pk}"] [data-live="status"]')
    assert "Pending → Started → Initialized → Authenticated →" in cell.inner_text()
    assert cell.locator("[data-state]").inner_text() == "Collecting"
    page.screenshot(path=str(artifacts_dir() / "collection-states-passed.png"))
    refresh(page)
    assert "Started" not in cell.inner_text()

    # a deleted source's row leaves the page
    Source.objects.filter(pk=w["old"].pk).delete()
    refresh(page)
    assert page.locator(f'tr[data-source-id="{w["old"].pk}"]').count() == 0


def test_it_offers_restart_and_edit_next_to_the_error(page, live_server):
    w = world()
    page.goto(live_server.url + reverse("collection"))
    page.click(f'tr[data-source-id="{w["broken"].pk}"] .status-icon')
    panel = page.locator(".health-panel")
    panel.wait_for()
    assert panel.locator("button:has-text('Restart')").is_visible()
    assert panel.locator("a:has-text('Edit source')").is_visible()
    page.screenshot(path=str(artifacts_dir() / "collection-panel-fixes.png"))
    panel.locator("button:has-text('Restart')").click()
    page.wait_for_url(live_server.url + reverse("collection"))  # back here
    assert "restarted" in page.locator(".flash").inner_text()
    broken = w["broken"]
    broken.refresh_from_db()
    assert broken.state == SourceState.PENDING
    broken.transition(
        SourceState.ERROR, "again", error_type=ErrorType.THIRD_PARTY_CONFIG
    )
    page.reload()
    page.click(f'tr[data-source-id="{broken.pk}"] .status-icon')
    panel.wait_for()
    panel.locator("a:has-text('Edit source')").click()
    page.wait_for_url("**/edit/")
    assert (
        "This source is in Error (ThirdPartyConfig)"
        in page.locator(".form-health").inner_text()
    )
    page.screenshot(
        path=str(artifacts_dir() / "edit-form-with-error.png"), full_page=True
    )
    page.goto(live_server.url + reverse("source-detail", args=[w["broken"].pk]))
    assert (
        "after you edit or restart the source"
        in page.locator('[data-live="next_attempt"]').inner_text()
    )
    page.click("form[action$='/restart/'] button")
    page.wait_for_selector(".flash")
    refresh(page)
    assert page.locator('[data-live="state"] [data-state]').inner_text() == "Pending"


def test_it_shows_backfill_progress_on_the_source_page(page, live_server):
    w = world()
    page.goto(live_server.url + reverse("source-detail", args=[w["backfill"].pk]))
    progress = page.locator('[data-live="progress"]')
    assert progress.locator("progress").get_attribute("max") == "90"
    assert "900 in the last 10 minutes" in progress.inner_text()
    # The run reads 30 more days; their events arrive with them.
    checkpoint = date.today() - timedelta(days=30)
    add_messages(
        w["backfill"],
        300,
        received=timezone.now() - timedelta(minutes=1),
        occurred=datetime.combine(checkpoint, time(12), UTC),
        start=200_000,
    )
    Source.objects.filter(pk=w["backfill"].pk).update(last_complete_day=checkpoint)
    refresh(page)
    freshness = page.locator('[data-live="freshness"]').inner_text()
    assert checkpoint.isoformat() in freshness
    expected = Source.objects.get(pk=w["backfill"].pk).backfill_progress(
        timezone.now(), 0, 0
    )
    assert progress.locator("progress").get_attribute("value") == str(
        expected.days_done
    )
    page.screenshot(
        path=str(artifacts_dir() / "source-page-backfill.png"), full_page=True
    )


def test_it_keeps_the_source_pages_freshness_and_quota_true(page, live_server):
    """A run stores events and spends the quota while the page is open: the
    freshness line and the Daily quota block follow without a reload."""
    w = world()
    live = Source.objects.get(pk=w["live"].pk)
    page.goto(live_server.url + reverse("source-detail", args=[live.pk]))
    freshness = page.locator('[data-live="freshness"]')
    used = page.locator('[data-live="quota"] .quota-used')
    assert used.inner_text() == "0"

    # The source reads closed days only: its newest event is from yesterday.
    midnight = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)  # UTC
    newest = midnight - timedelta(minutes=3)
    add_messages(live, 5, received=timezone.now(), occurred=newest, start=900_000)
    for _ in range(4):
        ledger.take(live.kind, crypto.key_fingerprint(live.get_api_key()), None)
    refresh(page)

    shown = timezone.localtime(newest).strftime("%Y-%m-%d %H:%M:%S")
    assert f"newest stored event occurred {shown}" in freshness.inner_text()
    assert used.inner_text() == "4"
    page.screenshot(
        path=str(artifacts_dir() / "source-page-freshness.png"), full_page=True
    )

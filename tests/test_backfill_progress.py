"""Backfill progress, "Next attempt" and the 24-hour activity: the model
rules behind the Status, Messages and Last 24 hours cells."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
import time_machine

from collectors.choices import SourceState
from collectors.message_stats import per_owner
from collectors.models import Activity, HostedCollector, LogMessage, Source
from tests.cast import add_messages, make_collector, make_source

pytestmark = pytest.mark.django_db
# 12:00 UTC: the newest closed day is 2026-11-26 (settle delay is minutes).
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def fresh(**kw) -> Source:
    with time_machine.travel(NOW - timedelta(hours=1), tick=False):
        collector = make_collector(f"C{HostedCollector.objects.count()}")
        return make_source(collector, initial_lookback_days=90, **kw)


def test_it_counts_days_done_of_the_look_back_window():
    source = fresh(state=SourceState.COLLECTING)
    progress = source.backfill_progress(NOW, 0, 0)
    assert (progress.start, progress.end) == (date(2026, 8, 29), date(2026, 11, 26))
    assert (progress.days_done, progress.days_total, progress.percent) == (0, 90, 0)
    assert progress.eta_text == "ETA after the first day is stored"
    source.last_complete_day = date(2026, 9, 7)  # ten days stored
    progress = source.backfill_progress(NOW, 5000, 600)
    assert (progress.days_done, progress.percent) == (10, 11)
    # 500 events/day, 80 days left = 40,000 events at 1 event/s (600 in 10 min)
    assert progress.eta == timedelta(seconds=40_000)
    assert progress.eta_text == "about 11 h left"


def test_it_has_no_progress_once_caught_up():
    source = fresh(state=SourceState.COLLECTING)
    source.last_complete_day = date(2026, 11, 26)
    assert source.backfill_progress(NOW, 9000, 0) is None
    source.last_complete_day = date(2026, 11, 25)  # a day closed: routine
    assert source.backfill_progress(NOW, 9000, 0) is None
    source.last_complete_day = date(2026, 11, 24)
    assert source.backfill_progress(NOW, 9000, 0).days_done == 88


def test_it_has_no_backfill_for_a_reporting_source():
    """A KMSAT Reporting source reads snapshots, not closed days: its
    last_complete_day stays empty, which showed "Backfill 0% · 0 of 7 days"
    for ever on the Collection page and the source page."""
    source = fresh(state=SourceState.COLLECTING, kind="reporting")
    assert source.backfill_progress(NOW, 144, 144) is None


def test_it_gives_no_eta_without_a_recent_rate_or_while_in_error():
    source = fresh(state=SourceState.COLLECTING, last_complete_day=date(2026, 9, 7))
    assert source.backfill_progress(NOW, 5000, 0).eta_text == (
        "no events stored in the last 10 minutes"
    )
    source.state = SourceState.ERROR
    progress = source.backfill_progress(NOW, 5000, 600)
    assert (progress.eta, progress.eta_text) == (None, "paused")


def test_it_shows_no_backfill_for_a_source_being_deleted_or_failed_at_once():
    source = fresh(state=SourceState.STOPPING, last_complete_day=date(2026, 9, 7))
    assert source.backfill_progress(NOW, 5000, 600) is None
    source = fresh(state=SourceState.ERROR)
    assert source.backfill_progress(NOW, 0, 0) is None


@pytest.mark.parametrize(
    ("state", "lease", "next_at", "kind", "text"),
    [
        (SourceState.ERROR, True, None, "after_fix", "after you edit or restart"),
        (SourceState.STOPPING, False, None, "stopping", "being deleted"),
        (SourceState.COLLECTING, True, NOW - timedelta(minutes=5), "now", "now, co"),
        (SourceState.AUTHENTICATED, True, None, "now", "now, collecting"),
        (
            SourceState.COLLECTING,
            False,
            NOW + timedelta(hours=2),
            "at",
            "2026-11-27 14",
        ),
        (SourceState.COLLECTING, False, NOW - timedelta(minutes=5), "due", "due now"),
        (SourceState.PENDING, False, None, "due", "at the next dispatch"),
    ],
)
def test_it_always_tells_the_truth_about_the_next_attempt(
    state, lease, next_at, kind, text
):
    source = fresh(state=state, next_attempt_at=next_at)
    if lease:
        source.lease_owner = "worker-1"
        source.lease_expires = NOW + timedelta(minutes=3)
    attempt = source.next_attempt(NOW)
    assert attempt.kind == kind
    assert text in attempt.text


def test_it_ignores_an_expired_lease():
    source = fresh(state=SourceState.COLLECTING)
    source.lease_owner, source.lease_expires = "dead", NOW - timedelta(seconds=1)
    assert source.next_attempt(NOW).kind == "due"


def test_it_buckets_the_last_24_hours_by_receipt_time():
    collector = make_collector("Busy")
    a = make_source(collector, "A")
    b = make_source(collector, "B")
    other = make_source(make_collector("Other"), "C")
    add_messages(a, 3, received=NOW - timedelta(minutes=30))  # last bucket
    add_messages(a, 2, received=NOW - timedelta(hours=23, minutes=30), start=10)
    add_messages(a, 4, received=NOW - timedelta(hours=25), start=20)  # too old
    add_messages(b, 1, received=NOW - timedelta(hours=5, minutes=1), start=30)
    add_messages(other, 7, received=NOW - timedelta(hours=1), start=40)
    per_source = LogMessage.objects.filter(source__collector=collector).activity(NOW)
    per_collector = per_owner(per_source, {a.pk: collector.pk, b.pk: collector.pk})
    assert per_source[a.pk].hourly[-1] == 3
    assert per_source[a.pk].hourly[0] == 2
    assert per_source[a.pk].total == 5
    assert per_source[b.pk].hourly[18] == 1
    assert other.pk not in per_source
    assert per_collector[collector.pk].total == 6
    assert len(per_collector[collector.pk].hourly) == 24
    # the same answer as a direct count
    direct = LogMessage.objects.filter(
        source__collector=collector, receipt_time__gte=NOW - timedelta(hours=24)
    ).count()
    assert per_collector[collector.pk].total == direct


def test_it_puts_a_message_on_an_hour_edge_in_the_later_hour():
    source = make_source(make_collector("Edges"))
    start = NOW - timedelta(hours=24)
    add_messages(source, 1, received=start)  # first instant of bucket 0
    add_messages(source, 1, received=start + timedelta(hours=1), start=1)
    add_messages(
        source, 1, received=start + timedelta(hours=2, microseconds=-1), start=2
    )
    add_messages(source, 1, received=NOW, start=3)  # the window is open at now
    hourly = LogMessage.objects.filter(source=source).activity(NOW)[source.pk].hourly
    assert hourly[:3] == (1, 2, 0)
    assert sum(hourly) == 3


def test_it_counts_what_arrived_in_the_last_fraction_of_a_second():
    """The page's total counts a message received a moment ago: so do the
    last 24 hours (their window is counted in whole seconds)."""
    source = make_source(make_collector("Fresh"))
    now = NOW + timedelta(microseconds=600_000)
    add_messages(source, 2, received=NOW + timedelta(microseconds=100_000))
    hourly = LogMessage.objects.filter(source=source).activity(now)[source.pk].hourly
    assert hourly[-1] == 2


def test_it_adds_activities_hour_by_hour():
    one = Activity(tuple(range(24)))
    assert (one + one).hourly[23] == 46


def test_it_counts_events_stored_and_recent_for_the_eta():
    source = fresh()
    add_messages(source, 50, received=NOW - timedelta(hours=2))
    add_messages(source, 8, received=NOW - timedelta(minutes=3), start=100)
    counts = LogMessage.objects.filter(source=source).backfill_counts(NOW)
    assert counts == {source.pk: (58, 8)}

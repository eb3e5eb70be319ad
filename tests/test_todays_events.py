"""Today's events as they arrive (opt-in): the current UTC day is polled at
the source's interval, resuming at the last page read; once the day closes the
closed-day pass reads it in full, so the stored set is the day's truth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from collectors import engine, lifecycle
from collectors.engine import daypages
from collectors.models import LogMessage, Source
from tests import engine_support as es
from tests.sandbox_support import running_sandbox

clock = es.clock
MIDNIGHT = datetime.combine(es.TODAY + timedelta(days=1), datetime.min.time(), UTC)


@pytest.fixture
def busy(clock):
    """400 events a day (four pages), so today's poll resumes past page 1."""
    with running_sandbox(days=3, events_per_day=400) as server:
        yield server


def polling_source(settings, server, collector, **kw) -> Source:
    kw.setdefault("initial_lookback_days", 1)
    return es.sandbox_source(
        settings, server, collector, collect_today=True, today_poll_minutes=15, **kw
    )


def today_ids(source: Source) -> list[str]:
    start = datetime.combine(es.TODAY, datetime.min.time(), UTC)
    return list(
        LogMessage.objects.filter(
            source=source, message_time__gte=start, message_time__lt=MIDNIGHT
        ).values_list("event_id", flat=True)
    )


def run_if_due(source: Source):
    """What the dispatcher does each minute for this source."""
    if lifecycle.due_sources().filter(pk=source.pk).exists():
        return engine.run(source.pk)
    return None


def test_it_is_off_by_default_and_reads_only_closed_days(settings, busy, collector):
    source = es.sandbox_source(settings, busy, collector, initial_lookback_days=1)
    engine.run(source.pk)
    assert today_ids(source) == []
    assert all(f"occurred_date={es.TODAY}" not in r.query for r in busy.requests)


def test_it_stores_events_of_today_within_one_interval(
    settings, busy, clock, collector
):
    source = polling_source(settings, busy, collector)
    engine.run(source.pk)
    assert set(today_ids(source)) == busy.event_ids(es.TODAY, es.TODAY) != set()

    for _ in range(4):  # An hour of polls as the day's events occur.
        source.refresh_from_db()
        # The latest the dispatcher starts a due source: still within one
        # interval of the last read.
        late = source.next_attempt_at + settings.COLLECTION_DISPATCH_LAG
        assert late == source.today_read_at + timedelta(minutes=15)
        clock.move_to(late)
        before = len(busy.event_ids(es.TODAY, es.TODAY))
        assert run_if_due(source) is not None
        ids = today_ids(source)
        assert len(ids) == len(set(ids))
        assert set(ids) == busy.event_ids(es.TODAY, es.TODAY)
        assert len(ids) >= before
    source.refresh_from_db()
    assert source.today_day == es.TODAY and source.today_page >= 2
    assert source.today_read_at >= es.NOON + timedelta(minutes=60)
    lag = settings.COLLECTION_DISPATCH_LAG
    assert source.next_attempt_at == source.today_read_at + timedelta(minutes=15) - lag
    # Not due before then.
    clock.move_to(source.next_attempt_at - timedelta(seconds=1))
    assert run_if_due(source) is None


def test_it_says_when_today_was_read_not_when_the_run_began(
    settings, busy, clock, collector, monkeypatch
):
    """A run that reads closed days for minutes first: "today last read" and
    the next poll count from the poll itself."""
    source = polling_source(settings, busy, collector, initial_lookback_days=2)
    real = daypages.EventsReader._read_days

    def slow_closed_days(self, *args, **kw):
        real(self, *args, **kw)
        clock.shift(timedelta(minutes=3))  # As a long backfill would take.

    monkeypatch.setattr(daypages.EventsReader, "_read_days", slow_closed_days)
    began = timezone.now()

    engine.run(source.pk)

    source.refresh_from_db()
    assert source.today_read_at >= began + timedelta(minutes=3)
    assert set(today_ids(source)) == busy.event_ids(es.TODAY, es.TODAY)
    lag = settings.COLLECTION_DISPATCH_LAG
    assert source.next_attempt_at == source.today_read_at + timedelta(minutes=15) - lag


def test_it_resumes_at_the_last_page_it_read(settings, busy, clock, collector):
    source = polling_source(settings, busy, collector)
    engine.run(source.pk)
    source.refresh_from_db()
    last_page = source.today_page
    busy.clear_requests()
    clock.move_to(es.NOON + timedelta(minutes=15, seconds=1))
    engine.run(source.pk)
    today = [r.query for r in es.api_requests(busy) if str(es.TODAY) in r.query]
    assert today and f"page={last_page}&" in today[0] + "&"
    assert "order_by=occurred_date" in today[0] and "order_direction=asc" in today[0]


def test_it_the_closed_day_pass_stores_the_days_truth_and_a_backdated_event(
    settings, busy, clock, collector
):
    source = polling_source(settings, busy, collector)
    engine.run(source.pk)
    # An event backdated into the morning lands on page 1, behind the page
    # the poll resumes at: the fast path does not see it...
    late = busy.add_event(occurred_date=f"{es.TODAY}T06:00:00Z")
    clock.move_to(es.NOON + timedelta(minutes=15, seconds=1))
    engine.run(source.pk)
    assert late["id"] not in today_ids(source)

    # ... the closed-day pass does, once the day has closed and settled.
    clock.move_to(MIDNIGHT + timedelta(minutes=11))
    assert run_if_due(source) is not None
    ids = today_ids(source)
    assert late["id"] in ids
    assert len(ids) == len(set(ids))
    assert set(ids) == busy.event_ids(es.TODAY, es.TODAY)

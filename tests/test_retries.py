"""Retries: backoff arithmetic, 5xx streaks (recovered and exhausted), broken
pages, 429 Too Many Requests and Limit Exceeded, over the sandbox."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from collectors import engine, lifecycle, retry
from collectors.choices import ErrorType, HealthEventName, Severity, SourceState
from collectors.models import HealthEvent, LogMessage, Source
from tests import engine_support as es
from tests.cast import make_source

clock, sb = es.clock, es.sb

MIDNIGHT = datetime.combine(es.TODAY + timedelta(days=1), datetime.min.time(), UTC)


def run_until(source, clock, outcomes, limit=60):
    """Run, moving time to each next attempt, until an outcome in `outcomes`."""
    seen = []
    for _ in range(limit):
        result = engine.run(source.pk)
        seen.append(result.outcome)
        if result.outcome in outcomes:
            return seen
        source.refresh_from_db()
        clock.move_to(source.next_attempt_at + timedelta(seconds=1))
    raise AssertionError(f"no {outcomes} after {seen}")


def test_it_backs_off_with_full_jitter_up_to_the_cap():
    rng = random.Random(7)
    for attempt, ceiling in [(1, 30), (2, 60), (3, 120), (6, 900), (40, 900)]:
        delays = [retry.backoff_delay(attempt, rng).total_seconds() for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # Spread over the whole range.
        assert min(delays) < ceiling * 0.2


def test_it_never_schedules_a_retry_after_the_window():
    started = es.NOON
    late = started + timedelta(minutes=89)
    assert retry.next_retry_at(started, 30, late) <= started + timedelta(minutes=90)
    assert not retry.exhausted(started, late)
    assert retry.exhausted(started, started + timedelta(minutes=90))
    assert retry.next_utc_midnight(es.NOON) == MIDNIGHT


def test_it_recovers_from_five_503s_with_nothing_lost(settings, sb, clock, collector):
    source = es.sandbox_source(settings, sb, collector)
    sb.inject("status", count=5, status=503)

    outcomes = run_until(source, clock, {"caught_up"})

    assert outcomes == ["retrying"] * 5 + ["caught_up"]
    assert set(es.stored_ids(source)) == sb.event_ids(*es.lookback())
    assert len(es.stored_ids(source)) == 350
    source.refresh_from_db()
    assert source.state == SourceState.COLLECTING
    assert source.error_streak_started is None
    event = HealthEvent.objects.get(source=source)
    assert event.event_name == HealthEventName.THIRD_PARTY_GENERIC
    assert event.count == 5 and event.error_code == "http_503"
    assert event.resolved_at is not None


def test_it_gives_up_after_90_minutes_of_500s(settings, sb, clock, collector):
    source = es.sandbox_source(settings, sb, collector)
    sb.inject("status", count=10_000, status=500)
    first = es.NOON

    outcomes = run_until(source, clock, {"retries_exhausted"})

    assert set(outcomes[:-1]) == {"retrying"}
    times = [r.time for r in es.api_requests(sb)]
    assert len(times) == len(outcomes)
    span = times[-1] - times[0]
    assert 90 * 60 <= span < 91 * 60  # The last try is at the window's end.
    source.refresh_from_db()
    assert source.state == SourceState.ERROR
    assert source.error_type == ErrorType.THIRD_PARTY_GENERIC
    assert source.error_streak_started.timestamp() - first.timestamp() < 5
    event = HealthEvent.objects.get(source=source, resolved_at=None)
    assert event.severity == Severity.ERROR
    assert "Retries exhausted" in event.message
    assert event.count == len(outcomes)

    # No request any more, however long we wait, until edited or restarted.
    clock.shift(timedelta(hours=5))
    assert engine.run(source.pk).requests == 0
    assert not lifecycle.due_sources().filter(pk=source.pk).exists()
    assert len(es.api_requests(sb)) == len(outcomes)
    sb.clear_faults()
    assert source.restart()
    assert engine.run(source.pk).outcome == "caught_up"
    assert set(es.stored_ids(source)) == sb.event_ids(*es.lookback())


def test_it_the_window_survives_a_restart_of_the_workers(
    settings, sb, clock, collector
):
    """The streak start is in the database: a new process does not reset it."""
    source = es.sandbox_source(settings, sb, collector)
    Source.objects.filter(pk=source.pk).update(
        error_streak_started=es.NOON - timedelta(minutes=95)
    )
    sb.inject("status", count=1, status=502)

    assert engine.run(source.pk).outcome == "retries_exhausted"
    assert len(es.api_requests(sb)) == 1


def test_it_a_truncated_page_is_retried_and_never_partly_stored(
    settings, clock, collector
):
    with es.running_sandbox(per_day={str(es.YESTERDAY): 250}, days=1) as server:
        source = es.sandbox_source(settings, server, collector, initial_lookback_days=1)
        assert engine.run(source.pk, max_pages=1).stored == 100
        server.inject("truncate", count=1)

        failed = engine.run(source.pk)

        assert failed.outcome == "retrying"
        assert LogMessage.objects.filter(source=source).count() == 100
        source.refresh_from_db()
        assert (source.cursor_day, source.cursor_page) == (es.YESTERDAY, 2)
        assert source.next_attempt_at > es.NOON
        assert HealthEvent.objects.get(source=source).error_code == "truncated_body"
        clock.move_to(source.next_attempt_at + timedelta(seconds=1))
        assert engine.run(source.pk).outcome == "caught_up"
        ids = es.stored_ids(source)
        assert sorted(ids) == sorted(server.event_ids(es.YESTERDAY))
        assert len(ids) == 250


def test_it_invalid_json_and_html_pages_are_retried(settings, sb, clock, collector):
    source = es.sandbox_source(settings, sb, collector)
    sb.inject("invalid_json", count=1)
    sb.inject("html", count=1)

    outcomes = run_until(source, clock, {"caught_up"})

    assert outcomes == ["retrying", "retrying", "caught_up"]
    assert set(es.stored_ids(source)) == sb.event_ids(*es.lookback())


def test_it_honours_a_long_retry_after(settings, sb, clock, collector):
    source = es.sandbox_source(settings, sb, collector)
    sb.inject("too_many_requests", count=1, headers={"Retry-After": "120"})

    result = engine.run(source.pk)

    assert result.outcome == "throttled"
    source.refresh_from_db()
    wait = (source.next_attempt_at - datetime.now(UTC)).total_seconds()
    assert 115 < wait <= 120
    assert source.error_streak_started is None  # Not an error.
    assert not HealthEvent.objects.filter(source=source).exists()
    clock.shift(timedelta(seconds=100))
    assert engine.run(source.pk).requests == 0
    clock.shift(timedelta(seconds=21))
    assert engine.run(source.pk).outcome == "caught_up"
    assert len(es.stored_ids(source)) == 350


def test_it_waits_out_a_short_retry_after_in_the_run(settings, sb, collector):
    source = es.sandbox_source(settings, sb, collector)
    sb.inject("too_many_requests", count=1, headers={"Retry-After": "1"})

    result = engine.run(source.pk)

    assert result.outcome == "caught_up"
    first, second = es.api_requests(sb)[:2]
    assert first.status == 429 and second.status == 200
    assert second.time - first.time >= 1.0
    assert len(es.stored_ids(source)) == 350


def test_it_limit_exceeded_waits_for_the_next_utc_day(settings, sb, clock, collector):
    # The limiter's state in the database: Redis keeps its own clock, which
    # time_machine cannot move (its quota marker would expire at once).
    settings.REDIS_URL = ""
    source = es.sandbox_source(settings, sb, collector)
    sibling = make_source(
        collector,
        "Same key",
        api_key=sb.api_key,
        base_url_key="x-sandbox",
    )
    sb.inject("limit_exceeded", count=1)

    assert engine.run(source.pk).outcome == "quota_exceeded"

    source.refresh_from_db()
    assert abs((source.next_attempt_at - MIDNIGHT).total_seconds()) <= 2
    assert source.error_streak_started is None  # The 90 minutes are not consumed.
    assert source.state != SourceState.ERROR
    event = HealthEvent.objects.get(source=source)
    assert event.severity == Severity.WARNING
    assert event.error_code == "limit_exceeded"
    assert "2026-03-11 00:00 UTC" in event.message
    # Another source with the same key does not even try.
    assert engine.run(sibling.pk).requests == 0
    sibling.refresh_from_db()
    assert abs((sibling.next_attempt_at - MIDNIGHT).total_seconds()) <= 2
    assert len(es.api_requests(sb)) == 1

    clock.move_to(MIDNIGHT - timedelta(minutes=1))
    assert engine.run(source.pk).requests == 0
    clock.move_to(MIDNIGHT + timedelta(seconds=3))
    result = engine.run(source.pk)
    assert result.outcome == "caught_up" and result.stored == 350
    assert HealthEvent.objects.get(source=source).resolved_at is not None

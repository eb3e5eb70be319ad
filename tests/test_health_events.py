"""Health events: one open event per (source, event name), repeats bump it,
success resolves it, and each carries a code, a message and a fix."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, OperationalError, transaction

from collectors import engine, health
from collectors.choices import ErrorType, HealthEventName, Severity
from collectors.engine import pipeline
from collectors.engine import store as engine_store
from collectors.models import HealthEvent, LogMessage
from tests import engine_support as es

clock, sb = es.clock, es.sb


def test_it_repeats_bump_the_open_event(source, clock):
    first = health.record(
        source, ErrorType.THIRD_PARTY_GENERIC, code="http_503", message="a"
    )
    clock.shift(timedelta(minutes=3))
    second = health.record(
        source, ErrorType.THIRD_PARTY_GENERIC, code="http_500", message="b"
    )

    assert second.pk == first.pk
    assert second.count == 2
    assert second.message == "b" and second.error_code == "http_500"
    assert second.last_seen - second.first_seen >= timedelta(minutes=3)
    assert HealthEvent.objects.count() == 1


def test_it_different_names_are_different_events(source):
    health.record(source, ErrorType.THIRD_PARTY_GENERIC, code="x", message="x")
    health.record(source, ErrorType.FIRST_PARTY_GENERIC, code="y", message="y")

    assert set(HealthEvent.objects.values_list("event_name", flat=True)) == {
        HealthEventName.THIRD_PARTY_GENERIC,
        HealthEventName.FIRST_PARTY_GENERIC,
    }


def test_it_resolve_closes_them_and_a_new_problem_opens_a_new_event(source):
    old = health.record(
        source, ErrorType.THIRD_PARTY_CONFIG, code="http_401", message="x"
    )

    assert health.resolve(source) == 1
    assert health.resolve(source) == 0
    new = health.record(
        source, ErrorType.THIRD_PARTY_CONFIG, code="http_401", message="x"
    )

    assert new.pk != old.pk and new.count == 1
    old.refresh_from_db()
    assert old.resolved_at is not None


def test_it_the_database_refuses_two_open_events_of_one_name(source):
    health.record(source, ErrorType.THIRD_PARTY_GENERIC, code="x", message="x")
    with pytest.raises(IntegrityError), transaction.atomic():
        HealthEvent.objects.create(
            source=source,
            event_name=HealthEventName.THIRD_PARTY_GENERIC,
            error_type=ErrorType.THIRD_PARTY_GENERIC,
            severity=Severity.WARNING,
            message="second",
        )


def test_it_a_5xx_warning_says_until_when_it_retries(settings, sb, collector):
    source = es.sandbox_source(settings, sb, collector)
    sb.inject("status", count=1, status=503)

    engine.run(source.pk)

    event = HealthEvent.objects.get(source=source)
    assert event.severity == Severity.WARNING
    assert event.error_type == ErrorType.THIRD_PARTY_GENERIC
    assert "503" in event.message
    # The streak started at 12:00 UTC: retries go on until 13:30 UTC.
    assert event.suggested_fix == "KnowBe4 is unavailable; retrying until 13:30 UTC."


def test_it_our_own_failure_is_a_first_party_error_and_stores_nothing(
    settings, sb, clock, collector, monkeypatch
):
    source = es.sandbox_source(settings, sb, collector)
    real = engine_store.MessageWriter.insert
    broken = {"on": True}

    def insert(writer, rows, *args, **kwargs):
        stored = real(writer, rows, *args, **kwargs)  # Written, then it fails.
        if broken["on"]:
            raise OperationalError("database is locked")
        return stored

    monkeypatch.setattr(engine_store.MessageWriter, "insert", insert)

    assert engine.run(source.pk).outcome == "retrying"

    event = HealthEvent.objects.get(source=source)
    assert event.event_name == HealthEventName.FIRST_PARTY_GENERIC
    assert event.severity == Severity.WARNING
    assert "database is locked" in event.message
    assert LogMessage.objects.count() == 0
    source.refresh_from_db()
    assert source.cursor_day is None and source.last_complete_day is None

    broken["on"] = False
    clock.move_to(source.next_attempt_at + timedelta(seconds=1))
    assert engine.run(source.pk).outcome == "caught_up"
    event.refresh_from_db()
    assert event.resolved_at is not None
    assert LogMessage.objects.count() == 350


def test_it_a_run_never_raises_even_when_nothing_can_be_recorded(
    settings, sb, collector, monkeypatch
):
    source = es.sandbox_source(settings, sb, collector)

    def broken(*args, **kw):
        raise OperationalError("disk I/O error")

    monkeypatch.setattr(pipeline, "collect", broken)
    monkeypatch.setattr(health, "record", broken)

    result = engine.run(source.pk)

    assert result.outcome == "failed"
    source.refresh_from_db()
    assert source.lease_owner == ""  # The lease is given back all the same.

"""Retention: the daily task deletes resolved health events and state
transitions older than HEALTH_RETENTION_DAYS, expired sessions, reprocessed
quarantine rows, and messages only when MESSAGE_RETENTION_DAYS is set."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django_q.models import Schedule

from collectors import retention, tasks
from collectors.choices import ErrorType, HealthEventName, Severity
from collectors.models import (
    HealthEvent,
    LogMessage,
    QuarantinedEvent,
    StateTransition,
)
from tests.cast import make_source

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def event(source, name, *, resolved_at=None, last_seen=T0) -> HealthEvent:
    return HealthEvent.objects.create(
        source=source,
        event_name=name,
        error_type=ErrorType.THIRD_PARTY_GENERIC,
        severity=Severity.WARNING,
        message="503",
        first_seen=last_seen,
        last_seen=last_seen,
        resolved_at=resolved_at,
    )


def message(source, event_id: str, when: datetime) -> LogMessage:
    return LogMessage.objects.create(
        source=source,
        event_id=event_id,
        raw="{}",
        message_time=when,
        source_name=source.name,
        collector_name=source.collector.name,
    )


@pytest.fixture
def history(collector):
    """A source created at T0, with history on both sides of 90 days later."""
    with time_machine.travel(T0, tick=False):
        source = make_source(collector)  # its creation transition, at T0
    late = T0 + 80 * DAY
    StateTransition.objects.create(source=source, from_state="pending",
                                   to_state="started", at=late)  # fmt: skip
    return {
        "source": source,
        "old_resolved": event(
            source, HealthEventName.THIRD_PARTY_GENERIC, resolved_at=T0 + DAY
        ),
        "recent_resolved": event(
            source, HealthEventName.FIRST_PARTY_GENERIC, resolved_at=late
        ),
        "old_open": event(source, HealthEventName.THIRD_PARTY_CONFIG),
        "old_message": message(source, "old", T0 - 400 * DAY),
        "new_message": message(source, "new", T0 + 85 * DAY),
    }


@pytest.mark.django_db
def test_it_deletes_old_resolved_history_and_keeps_the_rest(history):
    with time_machine.travel(T0 + 95 * DAY, tick=False):
        counts = retention.apply()
    assert counts["health events"] == 1
    assert counts["state transitions"] == 1  # the creation row, 95 days old
    remaining = set(HealthEvent.objects.values_list("pk", flat=True))
    assert remaining == {history["recent_resolved"].pk, history["old_open"].pk}
    assert StateTransition.objects.count() == 1
    assert LogMessage.objects.count() == 2  # MESSAGE_RETENTION_DAYS unset: kept
    assert "messages" not in counts


@pytest.mark.django_db
def test_it_keeps_everything_younger_than_the_setting(history, settings):
    settings.HEALTH_RETENTION_DAYS = 365
    with time_machine.travel(T0 + 95 * DAY, tick=False):
        counts = retention.apply()
    assert counts["health events"] == counts["state transitions"] == 0


@pytest.mark.django_db
def test_it_deletes_old_messages_only_when_asked(history, settings):
    settings.MESSAGE_RETENTION_DAYS = 30
    with time_machine.travel(T0 + 95 * DAY, tick=False):
        assert retention.apply()["messages"] == 1
    assert list(LogMessage.objects.values_list("event_id", flat=True)) == ["new"]


@pytest.mark.django_db
def test_it_deletes_expired_sessions(history):
    with time_machine.travel(T0, tick=False):
        expired = SessionStore()
        expired.set_expiry(60)
        expired.create()
    with time_machine.travel(T0 + 95 * DAY, tick=False):
        live = SessionStore()
        live.create()
        assert retention.apply()["sessions"] == 1
    assert list(Session.objects.values_list("session_key", flat=True)) == [
        live.session_key
    ]


@pytest.mark.django_db
def test_it_deletes_reprocessed_quarantine_rows_only(history):
    def quarantined(digest: str, reprocessed_at=None) -> QuarantinedEvent:
        return QuarantinedEvent.objects.create(
            source=history["source"],
            day=T0.date(),
            page=1,
            reason_code="bad_id",
            reason="The id is not a string of at most 64 characters.",
            raw=b"{}",
            digest=digest,
            reprocessed_at=reprocessed_at,
        )

    pending = quarantined("a")
    quarantined("b", reprocessed_at=T0)
    assert retention.apply()["quarantined events"] == 1
    assert list(QuarantinedEvent.objects.all()) == [pending]


@pytest.mark.django_db
def test_it_deletes_in_batches(collector):
    source = make_source(collector)
    for i in range(7):
        message(source, f"e{i}", T0)
    deleted = retention.delete_in_batches(LogMessage.objects.all(), batch=3)
    assert deleted == 7 and not LogMessage.objects.exists()


@pytest.mark.django_db
def test_the_task_is_registered_daily_and_reports_its_counts(history):
    call_command("setup_schedules", stdout=io.StringIO())
    schedule = Schedule.objects.get(name=tasks.RETENTION_NAME)
    assert schedule.func == tasks.RETENTION_FUNC == "collectors.tasks.apply_retention"
    assert schedule.schedule_type == Schedule.DAILY
    first_run = schedule.next_run
    call_command("setup_schedules", stdout=io.StringIO())
    assert Schedule.objects.get(name=tasks.RETENTION_NAME).next_run == first_run
    with time_machine.travel(T0 + 95 * DAY, tick=False):
        summary = tasks.apply_retention()
    assert summary.startswith("deleted 1 health events, 1 state transitions")

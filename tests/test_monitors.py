"""Monitors trigger and resolve exactly once per change (time moved), the
per-user variant, health conditions, and a disabled monitor never notifies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from alerts import checks
from alerts.models import HealthCondition, Monitor, Notification, Scope, Trigger
from collectors.choices import Severity, SourceState
from collectors.models import HealthEvent
from tests.alerts_support import (
    make_connection,
    make_health_monitor,
    make_log_monitor,
    store_messages,
)
from tests.cast import make_source

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def check_at(when: datetime) -> int:
    with time_machine.travel(when, tick=False):
        return checks.check_monitors()


def states(monitor: Monitor) -> list[str]:
    return list(monitor.triggers.order_by("at", "id").values_list("state", flat=True))


def test_it_triggers_once_and_resolves_once_as_the_window_moves(source, mailoutbox):
    monitor = make_log_monitor([make_connection()], threshold=2, window_minutes=10)
    store_messages(source, 2, at=T0)
    assert check_at(T0 + timedelta(minutes=1)) == 0  # 2 is not more than 2
    store_messages(source, 1, at=T0 + timedelta(minutes=2))
    assert check_at(T0 + timedelta(minutes=3)) == 1
    assert check_at(T0 + timedelta(minutes=4)) == 0  # still true: no new change
    assert check_at(T0 + timedelta(minutes=9)) == 0
    # At 10:11 the first two messages left the 10-minute window.
    assert check_at(T0 + timedelta(minutes=11)) == 1
    assert check_at(T0 + timedelta(minutes=12)) == 0
    assert states(monitor) == ["triggered", "resolved"]
    notes = Notification.objects.order_by("created")
    assert [n.payload["state"] for n in notes] == ["triggered", "resolved"]
    trigger = monitor.triggers.get(state="triggered")
    assert trigger.details["count"] == 3
    assert len(trigger.details["message_ids"]) == 3


def test_it_counts_messages_by_when_they_were_stored_not_their_event_time(source):
    """KnowBe4 events arrive a day late: the window is on receipt time."""
    monitor = make_log_monitor(threshold=0)
    store_messages(source, 1, at=T0, message_time=T0 - timedelta(days=2))
    check_at(T0 + timedelta(minutes=1))
    assert states(monitor) == ["triggered"]


def test_it_applies_the_saved_messages_filter(collector):
    phish = make_source(collector, "Phish", category="Security/KnowBe4")
    other = make_source(collector, "Other", category="Ops/Other")
    monitor = make_log_monitor(
        threshold=1, query={"category": "security/*", "risk_level": 9}
    )
    store_messages(other, 5, at=T0, risk_level=9)
    store_messages(phish, 5, at=T0, risk_level=3)
    check_at(T0 + timedelta(minutes=1))
    assert states(monitor) == []
    store_messages(phish, 2, at=T0 + timedelta(minutes=1), risk_level=9)
    check_at(T0 + timedelta(minutes=2))
    assert states(monitor) == ["triggered"]


def test_it_triggers_the_per_user_variant_only_for_one_user_above_n(source):
    monitor = make_log_monitor(threshold=2, per_user=True)
    for user in ("a@example.org", "b@example.org", "c@example.org"):
        store_messages(source, 2, at=T0, user=user)  # 6 in all, 2 each
    check_at(T0 + timedelta(minutes=1))
    assert states(monitor) == []
    store_messages(source, 1, at=T0 + timedelta(minutes=1), user="b@example.org")
    check_at(T0 + timedelta(minutes=2))
    assert states(monitor) == ["triggered"]
    trigger = monitor.triggers.get()
    assert trigger.details["users"] == [{"user": "b@example.org", "count": 3}]
    assert "b@example.org (3)" in trigger.summary


def test_it_never_checks_or_notifies_a_disabled_monitor(source, mailoutbox):
    monitor = make_log_monitor([make_connection()], threshold=0, enabled=False)
    store_messages(source, 5, at=T0)
    for minute in range(1, 5):
        check_at(T0 + timedelta(minutes=minute))
    assert Trigger.objects.count() == 0 and Notification.objects.count() == 0
    monitor.refresh_from_db()
    assert monitor.last_checked_at is None and not monitor.triggered


def test_it_notifies_a_change_once_even_when_two_checks_overlap(source):
    """Two workers evaluated the same change: only one flip wins."""
    monitor = make_log_monitor([make_connection()], threshold=0)
    store_messages(source, 1, at=T0)
    stale_copy = Monitor.objects.get(pk=monitor.pk)
    check_at(T0 + timedelta(minutes=1))
    from alerts import conditions

    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        check = conditions.Check(T0 + timedelta(minutes=1))
        finding = conditions.evaluate(stale_copy, check)
        assert finding.active and not stale_copy.triggered
        assert checks.change(stale_copy, finding, check) is False
    assert Trigger.objects.count() == 1 and Notification.objects.count() == 1


def test_it_triggers_when_a_source_enters_error_and_resolves_when_it_leaves(
    collector,
):
    watched = make_source(collector, "Watched")
    make_source(collector, "Elsewhere", state=SourceState.ERROR)
    monitor = make_health_monitor(HealthCondition.SOURCE_ERROR, scope=Scope.SOURCES)
    monitor.sources.set([watched])
    check_at(T0)
    assert states(monitor) == []
    watched.transition(SourceState.ERROR, "401", error_type="ThirdPartyConfig")
    check_at(T0 + timedelta(minutes=1))
    check_at(T0 + timedelta(minutes=2))
    watched.restart()
    check_at(T0 + timedelta(minutes=3))
    assert states(monitor) == ["triggered", "resolved"]
    assert "Watched" in monitor.triggers.get(state="triggered").summary


def test_it_triggers_on_a_warning_open_longer_than_n_minutes(source):
    monitor = make_health_monitor(HealthCondition.WARNING_OPEN, warning_minutes=30)
    HealthEvent.objects.create(
        source=source,
        event_name="ThirdPartyGenericError",
        error_type="ThirdPartyGeneric",
        severity=Severity.WARNING,
        message="HTTP 503",
        first_seen=T0,
        last_seen=T0,
    )
    check_at(T0 + timedelta(minutes=29))
    assert states(monitor) == []
    check_at(T0 + timedelta(minutes=31))
    assert states(monitor) == ["triggered"]
    HealthEvent.objects.update(resolved_at=T0 + timedelta(minutes=40))
    check_at(T0 + timedelta(minutes=41))
    assert states(monitor) == ["triggered", "resolved"]


def test_it_triggers_when_a_source_stored_nothing_for_n_hours(collector):
    with time_machine.travel(T0 - timedelta(days=2), tick=False):
        quiet = make_source(collector, "Quiet", state=SourceState.COLLECTING)
        busy = make_source(collector, "Busy", state=SourceState.COLLECTING)
    monitor = make_health_monitor(HealthCondition.STALE, stale_hours=6)
    store_messages(quiet, 1, at=T0 - timedelta(hours=7))
    store_messages(busy, 1, at=T0 - timedelta(hours=1))
    check_at(T0)
    trigger = monitor.triggers.get()
    assert [s["name"] for s in trigger.details["sources"]] == ["Quiet"]
    store_messages(quiet, 1, at=T0 + timedelta(minutes=1))
    check_at(T0 + timedelta(minutes=2))
    assert states(monitor) == ["triggered", "resolved"]


def test_it_projects_the_daily_quota(settings):
    from alerts.conditions import quota_overrun

    noon = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    assert quota_overrun(600, 1000, noon)  # 1,200 by midnight
    assert not quota_overrun(400, 1000, noon)
    assert not quota_overrun(10**6, None, noon)  # no quota known: no projection


def test_it_keeps_checking_the_others_when_one_monitor_fails(source):
    broken = make_log_monitor(name="Broken", threshold=0, query={"source": "x"})
    fine = make_log_monitor(name="Fine", threshold=0)
    store_messages(source, 1, at=T0)
    check_at(T0 + timedelta(minutes=1))
    assert states(fine) == ["triggered"] and states(broken) == []


def test_it_has_the_monitor_schedules_once_the_database_is_migrated():
    """A deployment that runs `migrate` and `qcluster` but never
    `setup_schedules` still checks monitors and retries notifications."""
    from django.core.management import call_command
    from django_q.models import Schedule

    from alerts.schedules import SCHEDULES

    Schedule.objects.all().delete()
    for _ in range(2):
        call_command("migrate", verbosity=0)
    names = Schedule.objects.filter(func__startswith="alerts.").values_list(
        "name", flat=True
    )
    assert sorted(names) == sorted(SCHEDULES)


def test_it_registers_the_monitor_check_every_minute_idempotently():
    from django.core.management import call_command
    from django_q.models import Schedule

    for _ in range(2):
        call_command("setup_schedules", verbosity=0)
    check = Schedule.objects.get(func="alerts.tasks.check_monitors")
    retry = Schedule.objects.get(func="alerts.tasks.deliver_due")
    for schedule in (check, retry):
        assert schedule.schedule_type == Schedule.MINUTES and schedule.minutes == 1
        assert schedule.repeats == -1


def test_it_words_conditions_and_findings_in_the_right_number(source):
    """'1 minute', '2 minutes': never 'message(s)' on a page or in a mail."""
    one = make_log_monitor(threshold=1, window_minutes=1)
    assert one.describe() == (
        "there are more than 1 matching message stored in the last 1 minute"
    )
    many = make_log_monitor(threshold=0, window_minutes=60, per_user=True)
    assert many.describe() == (
        "any one user has more than 0 matching messages stored in the last 60 minutes"
    )
    stale = make_health_monitor(HealthCondition.STALE, stale_hours=1)
    assert stale.describe() == "a source stored no message for 1 hour"
    warning = make_health_monitor(HealthCondition.WARNING_OPEN, warning_minutes=30)
    assert warning.describe() == "a Warning is open for more than 30 minutes"

    trip = make_log_monitor(threshold=0, window_minutes=1)
    store_messages(source, 1, at=T0)
    check_at(T0 + timedelta(seconds=30))
    assert trip.triggers.get().summary == (
        "1 matching message stored in the last 1 minute (threshold 0)"
    )

"""The outputs dispatcher: which outputs are due, one task per output with
its id only, the schedule, and a backlog that re-queues itself."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_q.models import Schedule

from collectors.choices import ErrorType
from outputs import delivery, tasks
from outputs.models import Output
from tests.cast import make_collector, make_messages, make_output, make_source
from tests.receiver_support import running_receiver


@pytest.fixture
def queued(monkeypatch):
    calls: list[tuple] = []
    monkeypatch.setattr(
        tasks, "async_task", lambda func, *args, **kw: calls.append((func, args))
    )
    return calls


def test_it_queues_one_task_per_due_output_with_its_id_only(db, queued):
    ids = make_messages(make_source(make_collector()), 3)
    now = timezone.now()
    due = make_output("https://a.example.com/", "due", token="tok-secret-1")
    make_output("https://b.example.com/", "disabled", enabled=False)
    make_output(
        "https://c.example.com/", "config", error_type=ErrorType.THIRD_PARTY_CONFIG
    )
    make_output("https://d.example.com/", "later", next_attempt_at=now + timedelta(1))
    make_output("https://e.example.com/", "leased", lease_expires=now + timedelta(1))
    make_output("https://f.example.com/", "caught up", checkpoint=ids[-1])

    assert tasks.dispatch() == 1
    assert queued == [(tasks.DELIVER_FUNC, (due.pk,))]
    assert tasks.dispatch() == 0  # queued already: not again
    due.refresh_from_db()
    assert due.dispatched_at is not None


def test_it_requeues_an_output_whose_run_ran_out_of_budget(db, queued, settings):
    settings.OUTPUT_RUN_BUDGET_SECONDS = 1e-9
    settings.EGRESS_ALLOW_PRIVATE = True
    make_messages(make_source(make_collector()), 3)
    with running_receiver() as rx:
        output = make_output(rx.url())
        summary = tasks.deliver_output(output.pk)

    assert "more" in summary
    assert queued == [(tasks.DELIVER_FUNC, (output.pk,))]


def test_it_registers_the_schedule_idempotently(db):
    call_command("setup_schedules", verbosity=0)
    call_command("setup_schedules", verbosity=0)
    schedule = Schedule.objects.get(name=tasks.DISPATCH_NAME)
    assert (schedule.func, schedule.schedule_type, schedule.minutes) == (
        "outputs.tasks.dispatch",
        Schedule.MINUTES,
        1,
    )


def test_it_delivers_through_the_task_queue(db, settings, monkeypatch):
    """The cluster's path end to end, with django-q2 running tasks inline."""
    from django_q.conf import Conf

    settings.EGRESS_ALLOW_PRIVATE = True
    monkeypatch.setattr(Conf, "SYNC", True)
    ids = make_messages(make_source(make_collector()), 12)
    with running_receiver() as rx:
        output = make_output(rx.url(), max_batch_count=5, checkpoint=ids[0] - 1)
        assert tasks.dispatch() == 1
    output.refresh_from_db()
    assert output.checkpoint == ids[-1] and output.delivered == 12
    assert len(rx.requests) == 3
    assert output.lease_owner == "" and output.dispatched_at is None
    assert Output.objects.get().batches == 3


def test_it_has_its_schedule_once_the_database_is_migrated(db):
    # The test database was built by `migrate`: the post_migrate handler ran.
    assert Schedule.objects.filter(name=tasks.DISPATCH_NAME).count() == 1
    Schedule.objects.filter(name=tasks.DISPATCH_NAME).delete()
    call_command("migrate", verbosity=0)
    assert Schedule.objects.filter(name=tasks.DISPATCH_NAME).count() == 1


def test_it_queues_again_an_output_whose_worker_died(db, queued, monkeypatch):
    make_messages(make_source(make_collector()), 2)
    now = timezone.now()
    output = make_output(
        "https://a.example.com/",
        lease_owner="thishost:4242:dead",
        lease_expires=now + timedelta(minutes=4),
        dispatched_at=now,
    )
    monkeypatch.setattr(
        delivery.lifecycle, "owner_is_dead", lambda owner: owner.endswith(":dead")
    )

    assert tasks.dispatch() == 1
    assert queued == [(tasks.DELIVER_FUNC, (output.pk,))]

"""The dispatcher schedule, due sources, task arguments, the lease and the
`collect` command."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.models import Schedule
from django_q.signing import SignedPackage

from collectors import lifecycle, tasks
from collectors.choices import SourceState
from collectors.models import Source
from tests import engine_support as es
from tests.cast import make_source

clock, sb = es.clock, es.sb
S = SourceState


@pytest.fixture
def broker(db):
    """The configured broker (ORM or Redis), empty."""
    broker = get_broker()
    broker.purge_queue()
    yield broker
    broker.purge_queue()


def queued(broker) -> list[dict]:
    """Every task waiting in the broker, decoded."""
    tasks_ = []
    for _ in range(20):
        batch = broker.dequeue() if broker.queue_size() else None
        if not batch:
            break
        tasks_ += [SignedPackage.loads(payload) for _id, payload in batch]
    return tasks_


def test_it_picks_exactly_the_due_sources(collector, clock):
    now = timezone.now()
    past, future = now - timedelta(minutes=1), now + timedelta(minutes=5)

    def src(name, **values):
        source = make_source(collector, name)
        Source.objects.filter(pk=source.pk).update(**values)
        return source.pk

    due = {
        src("pending"),
        src("stopping", state=S.STOPPING),
        src("collecting, due", state=S.COLLECTING, next_attempt_at=past),
        src("started, never tried", state=S.STARTED),
        src("lease expired", state=S.COLLECTING, lease_expires=past),
        src(
            "queued long ago",
            state=S.COLLECTING,
            dispatched_at=now - timedelta(hours=1),
        ),
    }
    src("error", state=S.ERROR)
    src("not yet", state=S.COLLECTING, next_attempt_at=future)
    src("leased", state=S.COLLECTING, lease_owner="x", lease_expires=future)
    src("queued", state=S.AUTHENTICATED, dispatched_at=now)

    assert set(lifecycle.due_sources().values_list("pk", flat=True)) == due


def test_it_dispatch_queues_one_task_per_source_with_its_id_only(collector, broker):
    source = make_source(collector)

    assert tasks.dispatch() == 1
    assert tasks.dispatch() == 0  # Queued already: not queued again.

    (task,) = queued(broker)
    assert task["func"] == "collectors.tasks.collect_source"
    assert task["args"] == (source.pk,)
    assert task["kwargs"] == {}
    source.refresh_from_db()
    assert source.state == S.STARTED
    assert source.dispatched_at is not None


def test_it_a_lost_task_is_queued_again_after_the_grace(collector, clock, broker):
    make_source(collector)
    tasks.dispatch()
    clock.shift(lifecycle.dispatch_grace() + timedelta(seconds=1))

    assert tasks.dispatch() == 1
    assert len(queued(broker)) == 2


def test_it_setup_schedules_is_idempotent(db):
    out = io.StringIO()
    call_command("setup_schedules", stdout=out)
    Schedule.objects.filter(name=tasks.DISPATCH_NAME).update(minutes=7)
    call_command("setup_schedules", stdout=out)

    schedule = Schedule.objects.get(name=tasks.DISPATCH_NAME)
    # the dispatcher and retention, the alerts app's two, outputs' one
    assert Schedule.objects.count() == 5
    assert schedule.func == "collectors.tasks.dispatch"
    assert schedule.schedule_type == Schedule.MINUTES
    assert schedule.minutes == 1
    assert schedule.repeats == -1
    assert schedule.args in (None, "", "()")


def test_it_the_task_returns_a_summary(settings, sb, collector):
    source = es.sandbox_source(settings, sb, collector)

    summary = tasks.collect_source(source.pk)

    assert summary == (
        f"source {source.pk}: caught_up, 7 request(s), 7 page(s), 350 new message(s)"
    )


def test_it_the_task_of_a_deleted_source_does_nothing(db):
    assert tasks.collect_source(987654) == "source 987654: gone, 0 request(s), " + (
        "0 page(s), 0 new message(s)"
    )


def test_it_collect_until_idle_finishes_a_backfill_in_small_runs(
    settings, sb, collector
):
    settings.COLLECTION_MAX_PAGES_PER_RUN = 2
    source = es.sandbox_source(settings, sb, collector)
    other = es.sandbox_source(settings, sb, collector, name="Other", rescan_days=0)
    out = io.StringIO()

    call_command("collect", "--until-idle", stdout=out)

    lines = out.getvalue().splitlines()
    assert len(lines) == 8  # 4 runs per source: 2 + 2 + 2 + 1 pages.
    assert lines[-1].endswith("1 page(s), 50 new message(s)")
    expected = sb.event_ids(*es.lookback())
    assert set(es.stored_ids(source)) == expected == set(es.stored_ids(other))


def test_it_collect_one_source(settings, sb, collector):
    source = es.sandbox_source(settings, sb, collector)
    es.sandbox_source(settings, sb, collector, name="Other")
    out = io.StringIO()

    call_command("collect", "--source", str(source.pk), stdout=out)

    assert out.getvalue().startswith(f"source {source.pk}: caught_up")
    assert len(es.stored_ids(source)) == 350
    assert Source.objects.exclude(pk=source.pk).get().state == S.PENDING


def test_it_the_lease_of_a_dead_worker_is_taken_over(collector):
    source = make_source(collector)
    future = timezone.now() + timedelta(minutes=3)
    host = lifecycle.new_owner().split(":")[0]
    Source.objects.filter(pk=source.pk).update(
        lease_owner=f"{host}:999999999:abc", lease_expires=future
    )
    assert lifecycle.dead_leases() == [source.pk]
    assert lifecycle.take_lease(source.pk, "me")

    # A live holder (this very process, another run) keeps its lease.
    Source.objects.filter(pk=source.pk).update(
        lease_owner=lifecycle.new_owner(), lease_expires=future
    )
    assert lifecycle.dead_leases() == []
    assert not lifecycle.take_lease(source.pk, "me again")

"""A dead worker is replaced within a minute: the dispatcher frees the lease
of a dead process of its own host and queues the source at once; the
dispatcher schedule exists as soon as the database is migrated; a real
qcluster killed mid-collection is continued by the next one."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.utils import timezone
from django_q.models import Schedule

from collectors import days, lifecycle, tasks
from collectors.choices import SourceState
from collectors.models import LogMessage, Source
from tests.cast import make_collector, make_source
from tests.sandbox_support import ROOT, db_env, sandbox_process

DEAD_PID = 999_999_999  # above any pid_max: never a live process


def hold_lease(source: Source, owner: str, *, dispatched_now: bool = True) -> None:
    now = timezone.now()
    Source.objects.filter(pk=source.pk).update(
        state=SourceState.COLLECTING,
        lease_owner=owner,
        lease_expires=now + lifecycle.lease_duration(),
        dispatched_at=now if dispatched_now else None,
    )


@pytest.fixture
def queued(monkeypatch) -> list[tuple]:
    calls: list[tuple] = []
    monkeypatch.setattr(tasks, "async_task", lambda *a, **kw: calls.append(a))
    return calls


def this_host() -> str:
    return lifecycle.new_owner().split(":")[0]


@pytest.mark.django_db
def test_it_queues_a_source_whose_worker_died_at_once(collector, queued):
    source = make_source(collector)
    hold_lease(source, f"{this_host()}:{DEAD_PID}:abc")

    assert tasks.dispatch() == 1

    assert queued == [(tasks.COLLECT_FUNC, source.pk)]
    source.refresh_from_db()
    assert source.lease_owner == "" and source.dispatched_at is not None


@pytest.mark.django_db
def test_it_leaves_a_live_workers_and_another_hosts_lease_alone(collector, queued):
    live = make_source(collector, "Live")
    remote = make_source(collector, "Remote")
    hold_lease(live, lifecycle.new_owner())  # this very process: alive
    hold_lease(remote, f"elsewhere-host:{DEAD_PID}:abc")

    assert tasks.dispatch() == 0

    assert queued == []
    assert Source.objects.get(pk=remote.pk).lease_owner.startswith("elsewhere")
    with time_machine.travel(timezone.now() + timedelta(minutes=6), tick=False):
        assert tasks.dispatch() == 2  # both leases and marks ran out: as before


@pytest.mark.django_db
def test_it_a_worker_that_took_the_lease_meanwhile_keeps_it(collector, monkeypatch):
    source = make_source(collector)
    dead = f"{this_host()}:{DEAD_PID}:abc"
    hold_lease(source, dead)
    real = lifecycle.owner_is_dead

    def dead_then_replaced(owner: str) -> bool:
        # Between the scan and the UPDATE a live worker takes the lease over.
        Source.objects.filter(pk=source.pk).update(lease_owner="new:1:live")
        return real(owner)

    monkeypatch.setattr(lifecycle, "owner_is_dead", dead_then_replaced)
    assert lifecycle.free_dead_leases() == []
    assert Source.objects.get(pk=source.pk).lease_owner == "new:1:live"


@pytest.mark.django_db
def test_the_dispatcher_schedule_exists_once_the_database_is_migrated():
    # The test database was built by `migrate`: the post_migrate handler ran.
    (schedule,) = Schedule.objects.filter(name=tasks.DISPATCH_NAME)
    assert (schedule.func, schedule.schedule_type, schedule.minutes) == (
        tasks.DISPATCH_FUNC,
        Schedule.MINUTES,
        1,
    )
    Schedule.objects.all().delete()
    call_command("migrate", verbosity=0)
    call_command("migrate", verbosity=0)
    assert Schedule.objects.filter(name=tasks.DISPATCH_NAME).count() == 1


# --- a real qcluster, SIGKILLed mid-collection --------------------------------

DAYS = 6
TOTAL_EVENTS = 12_000
KILL_AFTER_REQUESTS = 15


def start_qcluster(env: dict[str, str]) -> subprocess.Popen:
    """`manage.py qcluster` in its own process group, so that one killpg
    takes the cluster and its workers down together, as a crash would."""
    return subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group (the cluster, its workers and monitor)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def wait_for(condition, what: str, timeout: float = 180.0):
    """Poll a database/sandbox condition; the timeout only ends a hung test."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def stored(source_id: int) -> int:
    return LogMessage.objects.filter(source_id=source_id).count()


@pytest.mark.slow
def test_it_a_new_qcluster_continues_within_two_ticks_after_a_sigkill(
    transactional_db, settings
):
    with sandbox_process(
        days=DAYS, total_events=TOTAL_EVENTS, rate_limit=False, quota=False
    ) as sandbox:
        extra = f"Sandbox|{sandbox.url}"
        settings.KNOWBE4_EXTRA_BASE_URLS = [extra]
        source = make_source(
            make_collector(),
            api_key=sandbox.api_key,
            base_url_key="x-sandbox",
            initial_lookback_days=DAYS,
        )
        last = days.last_collectable_day(timezone.now())
        expected = sandbox.event_ids(last - timedelta(days=DAYS - 1), last)
        Schedule.objects.all().delete()  # the ticks are this test's own calls
        env = {
            **db_env(),
            "KNOWBE4_EXTRA_BASE_URLS": extra,
            "KNOWBE4_RATE_LIMIT": "0",
            "COLLECTION_DISPATCH_ON_SAVE": "0",
            "Q_WORKERS": "1",
            "LOG_LEVEL": "WARNING",
        }
        sandbox.gate(KILL_AFTER_REQUESTS)
        first = start_qcluster(env)
        second = None
        try:
            assert tasks.dispatch() == 1
            sandbox.wait_at_gate()  # the worker is mid-backfill, held here
            before = wait_for(lambda: stored(source.pk), "a stored page")
            kill_group(first)
            held = Source.objects.get(pk=source.pk)
            assert held.lease_owner and held.lease_expires > timezone.now()
            assert before < len(expected) - 1000
            # SIGKILL is delivered asynchronously: wait until the worker that
            # holds the lease is gone (a state, not a length of time).
            wait_for(lambda: lifecycle.owner_is_dead(held.lease_owner), "death")

            second = start_qcluster(env)
            sandbox.gate(None)
            ticks = 0
            with time_machine.travel(timezone.now(), tick=True) as clock:
                while ticks < 2:
                    ticks += 1
                    if tasks.dispatch():
                        break
                    clock.shift(timedelta(minutes=1))
                else:
                    pytest.fail("the source was not queued within two ticks")
            wait_for(lambda: stored(source.pk) > before, "the new cluster's pages")
            caught_up = Source.objects.filter(
                pk=source.pk, last_complete_day=last, cursor_day=None, lease_owner=""
            )
            while not caught_up.exists():  # runs cut by their budget go on
                if Source.objects.filter(pk=source.pk, lease_owner="").exists():
                    tasks.dispatch()
                time.sleep(0.1)
                assert second.poll() is None, "the qcluster died"
        finally:
            kill_group(first)
            if second is not None:
                kill_group(second)
    print(f"stored at the kill: {before}; resumed at tick {ticks}")
    ids = list(
        LogMessage.objects.filter(source=source).values_list("event_id", flat=True)
    )
    assert len(ids) == len(set(ids)), "an event was stored twice"
    assert set(ids) == expected
    assert Source.objects.get(pk=source.pk).state == SourceState.COLLECTING

"""Crash safety: a real collection process is killed with SIGKILL again and
again in the middle of a backfill and restarted; nothing is lost and nothing
is stored twice.

The sandbox runs as its own process (limits off) and the collector is
`manage.py collect --source ID --until-idle`, sharing this test's database
file (or PostgreSQL test database). A restarted process takes over the lease
of the killed one at once (the engine recognises a dead holder on this host).

The kill points are progress points, not moments on a clock: the sandbox's
gate answers only a few more requests per round, so each collector stops
within a known number of pages whatever the machine's speed, and the kill
lands at a random moment inside that bound (held at the gate once what it
read before has been committed, or just after one or two more pages were let
through: possibly mid-transaction, with pages that arrived together). Ten kills
therefore always land mid-backfill, on a fast machine or a loaded one.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from collectors import days
from collectors.choices import SourceState
from collectors.models import LogMessage, Source
from tests.cast import make_collector, make_source
from tests.sandbox_support import ROOT, SandboxProcess, db_env, sandbox_process

DAYS = 12
TOTAL_EVENTS = 40_000
KILLS = 10
# Requests each round may make: enough to store at least one new page (a
# possible first authenticating request, the checkpoint page, the page read
# ahead), few enough that ten rounds use a fraction of the ~400 pages.
ROUND_REQUESTS = (3, 8)


def start_collector(source_id: int, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "collect",
            "--source",
            str(source_id),
            "--until-idle",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def stored(source_id: int) -> int:
    return LogMessage.objects.filter(source_id=source_id).count()


def flush_gate(sandbox: SandboxProcess) -> int:
    """Let through the requests of killed collectors still held at the gate
    (answered into closed sockets), so they do not use the next allowance;
    returns the number of requests passed so far."""
    while (status := sandbox.gate_status())["waiting"]:
        sandbox.gate(status["passed"] + status["waiting"])
        time.sleep(0.01)
    return status["passed"]


def kill_in_round(
    sandbox: SandboxProcess, source_id: int, env: dict[str, str], rng: random.Random
) -> bool:
    """One round: allow a few requests, start a collector, wait until it is
    held at the gate (its allowance used), SIGKILL it at a random point inside
    the bound. True if it was killed, False if it finished first."""
    allow = flush_gate(sandbox) + rng.randint(*ROUND_REQUESTS)
    sandbox.gate(allow)
    before = stored(source_id)
    proc = start_collector(source_id, env)
    deadline = time.monotonic() + 120
    while sandbox.gate_status()["waiting"] == 0:
        if proc.poll() is not None:  # finished, or failed: say which
            err = proc.stderr.read() if proc.stderr else ""
            assert proc.returncode == 0, f"the collector failed: {err[-2000:]}"
            state = Source.objects.values("state", "lease_owner", "cursor_day").get(
                pk=source_id
            )
            print(f"the collector exited before the gate: {state} {err[-2000:]}")
            return False
        assert time.monotonic() < deadline, "the collector never reached the gate"
        time.sleep(0.02)
    # The pages it read before the gate commit once it waits there (pages that
    # arrived together share a transaction, `engine.store.Batch`): wait for
    # that progress, so a kill now shows what a restart kept.
    while stored(source_id) == before:
        assert proc.poll() is None, "the collector exited at the gate"
        assert time.monotonic() < deadline, "the collector never committed a page"
        time.sleep(0.02)
    extra = rng.choice((0, 0, 1, 2))
    if extra:  # one or two more pages, killed while it fetches or stores them
        sandbox.gate(allow + extra)
        time.sleep(rng.uniform(0.0, 0.05))
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    return True


@pytest.mark.slow
def test_it_survives_sigkill_at_random_moments(transactional_db, settings):
    seed = os.environ.get("CRASH_SEED") or str(random.randrange(10**6))
    rng = random.Random(seed)
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
        env = {
            **db_env(),
            "KNOWBE4_EXTRA_BASE_URLS": extra,
            "KNOWBE4_RATE_LIMIT": "0",
            "LOG_LEVEL": "WARNING",
        }
        at_kill: list[int] = []  # messages stored when each kill happened
        while len(at_kill) < KILLS and kill_in_round(sandbox, source.pk, env, rng):
            at_kill.append(stored(source.pk))
        print(f"CRASH_SEED={seed}; stored at each SIGKILL: {at_kill}")
        assert len(at_kill) == KILLS, f"the backfill finished after {at_kill}"
        assert at_kill == sorted(set(at_kill))  # each restart made progress
        assert at_kill[-1] < TOTAL_EVENTS - 1000  # all were mid-backfill

        flush_gate(sandbox)
        sandbox.gate(None)
        final = start_collector(source.pk, env)
        _out, err = final.communicate(timeout=300)
        assert final.returncode == 0, err[-2000:]

        # The source's window (near midnight the settle delay shifts it a day).
        last = days.last_collectable_day(timezone.now())
        expected = sandbox.event_ids(last - timedelta(days=DAYS - 1), last)

    ids = list(
        LogMessage.objects.filter(source=source).values_list("event_id", flat=True)
    )
    assert len(expected) >= 20_000
    assert len(ids) == len(set(ids)), "an event was stored twice"
    assert set(ids) == expected
    source.refresh_from_db()
    assert source.state == SourceState.COLLECTING
    assert source.lease_owner == ""
    assert Source.objects.count() == 1

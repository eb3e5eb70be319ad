"""Crash safety: a real collection process is killed with SIGKILL at random
moments of a backfill and restarted; nothing is lost and nothing is stored twice.

The sandbox runs as its own process (limits off) and the collector is
`manage.py collect --source ID --until-idle`, sharing this test's database
file (or PostgreSQL test database). A restarted process takes over the lease
of the killed one at once (the engine recognises a dead holder on this host).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from collectors import collection
from collectors.choices import SourceState
from collectors.models import LogMessage, Source
from tests.cast import make_collector, make_source
from tests.sandbox_support import db_env, sandbox_process

ROOT = Path(__file__).resolve().parent.parent
DAYS = 12
TOTAL_EVENTS = 40_000
KILLS = 10


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


def kill_mid_collection(source_id: int, env: dict[str, str], rng: random.Random):
    """Start a collector, wait until it stores something, SIGKILL it at a random
    moment after that. Returns True if it was killed, False if it finished."""
    before = stored(source_id)
    proc = start_collector(source_id, env)
    deadline = time.monotonic() + 60
    while stored(source_id) == before and proc.poll() is None:
        assert time.monotonic() < deadline, "the collector stored nothing in 60 s"
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 0.4))
    if proc.poll() is not None:
        proc.wait()
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    return True


@pytest.mark.slow
def test_it_survives_sigkill_at_random_moments(transactional_db, settings):
    rng = random.Random(os.environ.get("CRASH_SEED") or None)
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
        while len(at_kill) < KILLS and kill_mid_collection(source.pk, env, rng):
            at_kill.append(stored(source.pk))
        print(f"stored at each SIGKILL: {at_kill}")
        assert len(at_kill) == KILLS, f"the backfill finished after {at_kill}"
        assert at_kill == sorted(set(at_kill))  # each restart made progress
        assert at_kill[-1] < TOTAL_EVENTS - 1000  # all were mid-backfill

        final = start_collector(source.pk, env)
        _out, err = final.communicate(timeout=120)
        assert final.returncode == 0, err[-2000:]

        # The source's window (near midnight the settle delay shifts it a day).
        last = collection.last_collectable_day(timezone.now())
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

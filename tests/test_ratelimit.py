"""The shared per-key limiter: 4 requests per second (and the Reporting API's
50 per minute) across threads, processes and hosts, on both backends; every
request it lets go counted in the key's daily window, and the quota block."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine

from collectors import ratelimit
from collectors.models import ApiKeyUsage
from collectors.ratelimit import (
    DatabaseBackend,
    Limiter,
    NullLimiter,
    RedisBackend,
    limiter_for,
    mark_quota_exhausted,
    quota_blocked_until,
    requests_today,
)
from tests.sandbox_support import db_env

ROOT = Path(__file__).resolve().parent.parent


def redis_url() -> str | None:
    """REDIS_URL, or the local Redis if it answers; None when there is none."""
    import redis

    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
    except redis.RedisError:
        return None
    return url


@pytest.fixture(params=["db", "redis"])
def backend_spec(request, transactional_db):
    """('db', None) or ('redis', (url, prefix)) with a unique key prefix.

    Real transactions (not a test-wide atomic block) so that threads and
    processes see each other's writes.
    """
    if request.param == "db":
        yield "db", None
        return
    url = redis_url()
    if url is None:
        pytest.skip("no Redis on REDIS_URL or 127.0.0.1:6379")
    prefix = f"kb4test:{uuid.uuid4().hex}:"
    yield "redis", (url, prefix)
    import redis

    client = redis.Redis.from_url(url)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)


def make_backend(spec):
    kind, arg = spec
    if kind == "db":
        return DatabaseBackend()
    import redis

    url, prefix = arg
    return RedisBackend(redis.Redis.from_url(url), prefix)


def backend_clock(backend):
    """The clock the backend judges by (Redis: the server's TIME)."""
    if isinstance(backend, RedisBackend):
        return lambda: RedisBackend._now(backend.client)
    return time.time


def assert_never_five_in_a_second(intervals: list[tuple[float, float]]) -> None:
    """The server-side judge, whatever the latency of each request.

    For each request X, at most 3 requests started before X may have finished
    less than one second before X started: then no 5 requests can reach a
    server within one second, since one of them answered >= 1 s before X left.
    """
    ordered = sorted(intervals)
    for i, (start, _end) in enumerate(ordered):
        recent = [1 for s, e in ordered[:i] if e > start - 1.0]
        assert len(recent) <= 3, f"request {i} at {start:.3f} had {len(recent)}"
    starts = [s for s, _e in ordered]
    for i in range(len(starts) - 4):
        assert starts[i + 4] - starts[i] >= 1.0


def run_requests(lim, count: int) -> list[tuple[float, float]]:
    """Acquire, 'send' (sleep 0-20 ms), release, `count` times."""
    out = []
    for _ in range(count):
        lim.acquire()
        start = time.time()
        time.sleep(random.uniform(0, 0.02))
        end = time.time()
        lim.release()
        out.append((start, end))
    return out


def test_it_lets_four_requests_go_at_once_and_holds_the_fifth():
    now = 1000.0
    entries: list = []
    for n in range(4):
        wait, entries = ratelimit.grant(entries, now, f"t{n}", 40.0)
        assert wait == 0
    wait, same = ratelimit.grant(entries, now + 0.5, "t4", 40.0)
    assert wait > 0 and same is entries


def test_it_counts_the_fifth_second_from_the_first_response():
    entries: list = []
    for n in range(4):
        _, entries = ratelimit.grant(entries, 1000.0, f"t{n}", 40.0)
    # The answers arrive late, the first at 1000.8: the fifth waits until 1001.8
    # (their requests may have reached the server just before that).
    entries = ratelimit.complete(entries, 1000.8, "t0")
    for n in range(1, 4):
        entries = ratelimit.complete(entries, 1000.9, f"t{n}")
    assert ratelimit.next_slot(entries, 1001.5, 40.0) >= 1001.8


def test_it_treats_a_request_in_flight_as_happening_now():
    entries: list = []
    for n in range(4):
        _, entries = ratelimit.grant(entries, 1000.0, f"t{n}", 40.0)
    # Ten seconds later, still no response for any of them: keep waiting.
    wait, _ = ratelimit.grant(entries, 1010.0, "t4", 40.0)
    assert wait >= 1.0
    # Until they count as lost (the process was killed).
    wait, _ = ratelimit.grant(entries, 1041.1, "t4", 40.0)
    assert wait == 0


def test_it_keeps_at_most_four_entries():
    entries: list = []
    now = 1000.0
    for n in range(20):
        wait, entries = ratelimit.grant(entries, now, f"t{n}", 40.0)
        assert wait == 0
        entries = ratelimit.complete(entries, now + 0.01, f"t{n}")
        now += 0.3
    assert len(entries) == 4


def test_it_limits_threads_sharing_a_key(backend_spec):
    backend = make_backend(backend_spec)
    lim = Limiter("k-threads", backend)
    results: list[tuple[float, float]] = []
    lock = threading.Lock()

    def worker():
        from django.db import connection

        try:
            got = run_requests(lim, 4)
            with lock:
                results.extend(got)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 12
    assert_never_five_in_a_second(results)
    assert requests_today("k-threads") == 12


PROC_SCRIPT = """
import json, os, random, sys, time
import django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "knowbe4sumo.settings")
django.setup()
from collectors.ratelimit import DatabaseBackend, Limiter, RedisBackend
kind, key, count, start_at = sys.argv[1:5]
count, start_at = int(count), float(start_at)
if kind == "db":
    backend = DatabaseBackend()
else:
    import redis
    backend = RedisBackend(redis.Redis.from_url(sys.argv[5]), sys.argv[6])
lim = Limiter(key, backend)
time.sleep(max(0, start_at - time.time()))
out = []
for _ in range(count):
    lim.acquire()
    s = time.time()
    time.sleep(random.uniform(0, 0.02))
    e = time.time()
    lim.release()
    out.append((s, e))
print(json.dumps(out))
"""


def test_it_limits_processes_sharing_a_key(backend_spec):
    kind, arg = backend_spec
    backend = make_backend(backend_spec)
    if kind == "db":
        # Create the row first so the processes only ever update it.
        backend.release("k-procs", "none")
    start_at = time.time() + 2.5  # every process is ready by then
    args = [kind, "k-procs", "4", repr(start_at)] + (list(arg) if arg else [])
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PROC_SCRIPT, *args],
            cwd=ROOT,
            env=db_env(),  # the daily count is in the database either way
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.extend(tuple(x) for x in json.loads(out.strip().splitlines()[-1]))
    assert len(results) == 12
    assert_never_five_in_a_second(results)
    assert requests_today("k-procs") == 12


def test_it_keeps_keys_apart(backend_spec):
    backend = make_backend(backend_spec)
    for n in range(4):
        assert backend.try_acquire("key-a", f"a{n}", 40.0) == 0
    assert backend.try_acquire("key-a", "a4", 40.0) > 0
    assert backend.try_acquire("key-b", "b0", 40.0) == 0
    # The same fingerprint on the other API is another key: its own limits.
    assert backend.try_acquire("key-a", "r0", 40.0, api="reporting") == 0


def test_it_keeps_the_reporting_burst_of_fifty_a_minute():
    entries, now = [], 1000.0
    limits = ratelimit.LIMITS["reporting"]
    starts = []
    while len(starts) < 120:
        wait, new = ratelimit.grant(entries, now, f"t{len(starts)}", 40.0, limits)
        if wait:
            now += wait
            continue
        starts.append(now)
        entries = ratelimit.complete(new, now + 0.05, f"t{len(starts) - 1}")
        now += 0.05
    assert len(entries) == 50
    for i, start in enumerate(starts):
        assert sum(1 for s in starts[: i + 1] if s > start - 60.0) <= 50
        assert sum(1 for s in starts[: i + 1] if s > start - 1.0) <= 4
    # Fifty went in the first 12.5 s or so; the 51st waited for the minute.
    assert starts[50] - starts[0] > 60.0


def test_it_takes_each_request_from_the_budget_before_it_goes(db, settings):
    settings.REDIS_URL = ""
    lim = Limiter("key-budget", DatabaseBackend(), budget=2)
    lim.acquire()
    lim.acquire()
    with pytest.raises(ratelimit.BudgetSpent):
        lim.acquire()
    assert requests_today("key-budget") == 2
    # The refused one gave its slot back: no request is left in flight.
    row = ApiKeyUsage.objects.get(api="events", key_hash="key-budget")
    assert [done for _at, _tok, done in row.recent] == [False, False, True]


def test_it_keeps_a_known_budget_with_the_limits_off(db, settings):
    settings.KNOWBE4_RATE_LIMIT = False
    lim = limiter_for("key-null", budget=1)
    lim.acquire()
    with pytest.raises(ratelimit.BudgetSpent):
        lim.acquire()
    assert requests_today("key-null") == 1


class FakeClock:
    """One clock for the limiter's wall time, its monotonic readings and the
    Redis server's TIME, moved by the test: the expected waits are exact,
    whatever the machine's speed."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake_clock(monkeypatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(ratelimit, "time", clock)
    monkeypatch.setattr(RedisBackend, "_now", staticmethod(lambda conn: clock.now))
    return clock


def test_it_counts_from_when_a_response_arrived_if_told(backend_spec, fake_clock):
    """A page fetched ahead is released late; its real completion time counts."""
    backend = make_backend(backend_spec)
    lim = Limiter("key-late", backend)
    for _ in range(4):
        lim.acquire()
    fake_clock.sleep(0.3)
    arrived = fake_clock.monotonic() - 0.25  # the answers came 0.25 s ago
    for _ in range(4):
        lim.release(finished_at=arrived)
    wait = lim.backend.try_acquire("key-late", "fifth", 40.0)
    # A second (and the margin) after the arrival, 0.05 s after the grants;
    # counted from now it would be 1.0 s.
    assert wait == pytest.approx(0.75 + ratelimit.MARGIN, abs=1e-6)


def test_it_never_records_a_completion_before_the_grant(backend_spec, fake_clock):
    backend = make_backend(backend_spec)
    lim = Limiter("key-early", backend)
    for _ in range(4):
        lim.acquire()
    fake_clock.sleep(0.2)
    for _ in range(4):
        lim.release(finished_at=fake_clock.monotonic() - 30)
    wait = lim.backend.try_acquire("key-early", "fifth", 40.0)
    # Counted from the grants (not 30 s ago, which would leave no wait).
    assert wait == pytest.approx(0.8 + ratelimit.MARGIN, abs=1e-6)


def test_it_blocks_a_spent_quota_until_the_given_time(db):
    assert quota_blocked_until("key-q") is None
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=3)
    mark_quota_exhausted("key-q", until)
    assert quota_blocked_until("key-q") == until
    assert quota_blocked_until("key-other") is None
    assert quota_blocked_until("key-q", "reporting") is None  # another API
    mark_quota_exhausted("key-q", datetime.now(UTC) - timedelta(seconds=1))
    assert quota_blocked_until("key-q") is None


def test_it_lifts_the_quota_block_when_its_time_passes(db, settings):
    settings.REDIS_URL = ""  # the database backend: its clock can be moved
    until = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
    with time_machine.travel(datetime(2026, 3, 1, 18, 0, tzinfo=UTC), tick=False):
        mark_quota_exhausted("key-q", until)
        assert quota_blocked_until("key-q") == until
    with time_machine.travel(datetime(2026, 3, 2, 0, 0, 1, tzinfo=UTC), tick=False):
        assert quota_blocked_until("key-q") is None


def test_it_counts_requests_per_utc_day(db, settings):
    settings.REDIS_URL = ""
    settings.KNOWBE4_RATE_LIMIT = True
    lim = limiter_for("key-day")
    with time_machine.travel(datetime(2026, 3, 1, 23, 59, 58, tzinfo=UTC)) as trav:
        for _ in range(3):
            lim.acquire()
            lim.release()
        assert requests_today("key-day") == 3
        trav.move_to(datetime(2026, 3, 2, 0, 0, 5, tzinfo=UTC))
        assert requests_today("key-day") == 0
        lim.acquire()
        lim.release()
        assert requests_today("key-day") == 1
    assert requests_today("key-never-used") == 0


def test_it_uses_redis_when_redis_url_is_set(db, settings):
    url = redis_url()
    if url is None:
        pytest.skip("no Redis on REDIS_URL or 127.0.0.1:6379")
    settings.REDIS_URL = url
    settings.KNOWBE4_RATE_LIMIT_REDIS_PREFIX = f"kb4test:{uuid.uuid4().hex}:"
    settings.KNOWBE4_RATE_LIMIT = True
    lim = limiter_for("key-r")
    assert isinstance(lim.backend, RedisBackend)
    lim.acquire()
    lim.release()
    assert requests_today("key-r") == 1  # counted in the database ledger


def test_it_can_be_switched_off_for_benchmarks(settings, db):
    settings.KNOWBE4_RATE_LIMIT = False
    lim = limiter_for("key-off")
    assert isinstance(lim, NullLimiter)
    for _ in range(5):
        lim.acquire()  # no per-second limit ...
    assert requests_today("key-off") == 5  # ... but every request counted

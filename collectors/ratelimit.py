"""The per-API-key request limiter and daily quota accounting.

KnowBe4 allows four requests per second per key and a daily quota. Several
sources can share one key and run in different processes on different hosts,
so the limiter's state lives where all of them see it: the database
(`ApiKeyUsage`, one short transaction per decision) or Redis when
`settings.REDIS_URL` is set.

Why the schedule is safe against any server-side sliding window: we keep the
last four requests per key. A request's time is its *grant* time while it is
in flight (and counts as "now" until it completes, since its response may
still be on its way), and its *completion* time once `release()` ran. A new
request may start at `max(now, 4th most recent time + 1 s)`. The fifth request
therefore leaves at least one second after the first one's response arrived,
so whatever the network delays, the server cannot see five arrivals within one
second. An entry never released (its process was killed) counts as finished
`INFLIGHT_TIMEOUT` after its grant: longer than the client's timeouts.

Sleeping always happens outside any transaction or lock.

Usage (the engine wires these into `KnowBe4Client(throttle=..., after_request=...)`):

    lim = limiter_for(key_fingerprint(api_key))
    lim.acquire()   # blocks until a request may go
    ...             # the request
    lim.release()   # after the response, success or failure
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from datetime import UTC, date, datetime
from functools import cache

from django.conf import settings
from django.db import connection, transaction

LIMIT = 4  # requests ...
WINDOW = 1.0  # ... per this many seconds, per key
# A hair over the window so that a boundary-inclusive server count is safe too.
MARGIN = 0.002
# An unreleased request counts as finished this long after its grant; the
# client's connect + read timeouts (5 s + 30 s) are shorter.
INFLIGHT_TIMEOUT = 40.0
MAX_SLEEP = 1.0
REDIS_PREFIX = "kb4:ratelimit:"


# --- the schedule: pure functions shared by both backends -------------------


def _effective(entry: list, now: float, stale: float) -> float:
    """When a request counts as having happened, for the next decision."""
    at, _token, done = entry
    if done:
        return at
    # In flight: its response arrives no earlier than now (bounded for crashes).
    return min(max(at, now), at + stale)


def _prune(entries: list, now: float, stale: float) -> list:
    """Keep only the LIMIT most recent requests: older ones can never matter."""
    ordered = sorted(entries, key=lambda e: _effective(e, now, stale), reverse=True)
    return ordered[:LIMIT]


def next_slot(entries: list, now: float, stale: float = INFLIGHT_TIMEOUT) -> float:
    """The earliest time a new request may start, given the recorded ones."""
    times = sorted((_effective(e, now, stale) for e in entries), reverse=True)
    if len(times) < LIMIT:
        return now
    return max(now, times[LIMIT - 1] + WINDOW + MARGIN)


def grant(entries: list, now: float, token: str, stale: float) -> tuple[float, list]:
    """Try to start a request at `now`: (0, new entries) or (seconds to wait, old)."""
    wait = next_slot(entries, now, stale) - now
    if wait > 0:
        return wait, entries
    return 0.0, _prune([*entries, [now, token, False]], now, stale)


def complete(entries: list, now: float, token: str) -> list:
    """Record the completion time of a request (no-op if it was pruned).

    Never earlier than its grant: a completion is what the next window counts
    from, so it may only move later.
    """
    return [
        [max(at, now), tok, True] if tok == token and not done else [at, tok, done]
        for at, tok, done in entries
    ]


def _utc_day(ts: float) -> date:
    return datetime.fromtimestamp(ts, UTC).date()


# --- backends ----------------------------------------------------------------


class DatabaseBackend:
    """State in `ApiKeyUsage`: one short, serialized transaction per decision.

    On PostgreSQL the row is locked with SELECT ... FOR UPDATE; on SQLite the
    transactions are IMMEDIATE (settings), so they queue on the write lock.
    Times come from this host's clock (keep hosts NTP-synchronized, or use the
    Redis backend, which takes its time from the Redis server).
    """

    @staticmethod
    def _no_fsync() -> None:
        """PostgreSQL: don't wait for this transaction's WAL flush (a few ms).

        Only a database crash could lose the last limiter writes; the limiter's
        state is worth less than the time an fsync per request costs.
        """
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")

    def _row(self, key_hash: str):
        """The key's row, locked; created on first use (one query once it exists).

        get_or_create creates in a savepoint and re-reads on a unique-key race,
        so two processes using a new key at once both end up on one row.
        """
        from collectors.models import ApiKeyUsage

        row, _created = ApiKeyUsage.objects.select_for_update().get_or_create(
            key_hash=key_hash
        )
        return row

    def try_acquire(self, key_hash: str, token: str, stale: float) -> float:
        with transaction.atomic():
            self._no_fsync()
            row = self._row(key_hash)
            now = time.time()
            wait, entries = grant(row.recent or [], now, token, stale)
            if wait > 0:
                return wait
            today = _utc_day(now)
            if row.day != today:
                row.day, row.requests_today = today, 0
            row.recent = entries
            row.requests_today += 1
            row.save(update_fields=["recent", "day", "requests_today"])
        return 0.0

    def release(self, key_hash: str, token: str, ago: float = 0.0) -> None:
        """Record the request as finished `ago` seconds before now."""
        with transaction.atomic():
            self._no_fsync()
            row = self._row(key_hash)
            row.recent = complete(row.recent or [], time.time() - ago, token)
            row.save(update_fields=["recent"])

    def requests_today(self, key_hash: str) -> int:
        from collectors.models import ApiKeyUsage

        row = ApiKeyUsage.objects.filter(key_hash=key_hash).first()
        if row is None or row.day != _utc_day(time.time()):
            return 0
        return row.requests_today

    def quota_blocked_until(self, key_hash: str) -> datetime | None:
        from collectors.models import ApiKeyUsage

        row = ApiKeyUsage.objects.filter(key_hash=key_hash).first()
        until = row.quota_reset_at if row else None
        if until is None or until.timestamp() <= time.time():
            return None
        return until

    def mark_quota_exhausted(self, key_hash: str, until: datetime) -> None:
        from collectors.models import ApiKeyUsage

        ApiKeyUsage.objects.get_or_create(key_hash=key_hash)
        ApiKeyUsage.objects.filter(key_hash=key_hash).update(quota_reset_at=until)


class RedisBackend:
    """State in Redis, updated with WATCH/MULTI (optimistic, retried on conflict).

    The clock is the Redis server's (TIME), so hosts need not agree on time.
    """

    def __init__(self, client, prefix: str = REDIS_PREFIX) -> None:
        self.client = client
        self.prefix = prefix

    def _key(self, key_hash: str, part: str) -> str:
        return f"{self.prefix}{key_hash}:{part}"

    @staticmethod
    def _now(conn) -> float:
        seconds, micros = conn.time()
        return seconds + micros / 1_000_000

    def _update(self, key_hash: str, change, *, counts: bool) -> float:
        """Run `change(entries, now) -> (wait, entries|None)` atomically.

        `entries` None means "nothing to write". A write with `counts` also
        adds one to the day's request counter in the same transaction.
        """
        import redis

        key = self._key(key_hash, "recent")
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    now = self._now(pipe)
                    wait, entries = change(json.loads(raw) if raw else [], now)
                    if entries is None:
                        pipe.unwatch()
                        return wait
                    pipe.multi()
                    pipe.set(key, json.dumps(entries), ex=int(INFLIGHT_TIMEOUT) * 3)
                    if counts:
                        day_key = self._key(key_hash, f"day:{_utc_day(now)}")
                        pipe.incr(day_key)
                        pipe.expire(day_key, 3 * 86400)
                    pipe.execute()
                    return wait
                except redis.WatchError:
                    continue

    def try_acquire(self, key_hash: str, token: str, stale: float) -> float:
        def granting(entries, now):
            wait, new = grant(entries, now, token, stale)
            return (wait, None) if wait > 0 else (0.0, new)

        return self._update(key_hash, granting, counts=True)

    def release(self, key_hash: str, token: str, ago: float = 0.0) -> None:
        """Record the request as finished `ago` seconds before now."""

        def completing(entries, now):
            return 0.0, complete(entries, now - ago, token)

        self._update(key_hash, completing, counts=False)

    def requests_today(self, key_hash: str) -> int:
        day = _utc_day(self._now(self.client))
        return int(self.client.get(self._key(key_hash, f"day:{day}")) or 0)

    def quota_blocked_until(self, key_hash: str) -> datetime | None:
        raw = self.client.get(self._key(key_hash, "quota"))
        if raw is None:
            return None
        until = float(raw)
        if until <= self._now(self.client):
            return None
        return datetime.fromtimestamp(until, UTC)

    def mark_quota_exhausted(self, key_hash: str, until: datetime) -> None:
        key = self._key(key_hash, "quota")
        self.client.set(key, repr(until.timestamp()))
        self.client.expireat(key, int(until.timestamp()) + 60)


@cache
def _redis_backend(url: str, prefix: str) -> RedisBackend:
    import redis

    return RedisBackend(redis.Redis.from_url(url), prefix)


_database_backend = DatabaseBackend()


def default_backend() -> DatabaseBackend | RedisBackend:
    """Redis when REDIS_URL is set, otherwise the database."""
    url = getattr(settings, "REDIS_URL", "")
    if url:
        prefix = getattr(settings, "KNOWBE4_RATE_LIMIT_REDIS_PREFIX", REDIS_PREFIX)
        return _redis_backend(url, prefix)
    return _database_backend


def rate_limit_enabled() -> bool:
    """Off only for benchmarks against a sandbox whose limits are off too.

    `settings.KNOWBE4_RATE_LIMIT` wins; otherwise the environment variable of
    the same name ("0", "false", "off" or "no" turn it off).
    """
    value = getattr(settings, "KNOWBE4_RATE_LIMIT", None)
    if value is None:
        value = os.environ.get("KNOWBE4_RATE_LIMIT", "1").strip().lower() not in {
            "0",
            "false",
            "off",
            "no",
        }
    return bool(value)


# --- the limiter -------------------------------------------------------------


class Limiter:
    """Acquire/release around each request of one API key.

    Safe to share between threads: each thread's in-flight tokens are its own.
    """

    def __init__(self, key_hash: str, backend=None, *, stale: float | None = None):
        self.key_hash = key_hash
        self.backend = backend or default_backend()
        self.stale = INFLIGHT_TIMEOUT if stale is None else stale
        self._local = threading.local()

    def _tokens(self) -> list[str]:
        if not hasattr(self._local, "tokens"):
            self._local.tokens = []
        return self._local.tokens

    def acquire(self) -> None:
        """Block until a request may be sent; record it as in flight."""
        token = uuid.uuid4().hex[:12]
        while True:
            wait = self.backend.try_acquire(self.key_hash, token, self.stale)
            if wait <= 0:
                self._tokens().append(token)
                return
            time.sleep(min(wait, MAX_SLEEP))

    def release(self, finished_at: float | None = None) -> None:
        """Record that the oldest in-flight request of this thread completed.

        `finished_at` is a `time.monotonic()` reading taken when its response
        arrived, for a caller that releases later (e.g. a page fetched ahead
        on another thread): the limiter then counts from the real completion
        rather than from now, which would be safe but slower.
        """
        tokens = self._tokens()
        if not tokens:
            return
        ago = 0.0 if finished_at is None else max(0.0, time.monotonic() - finished_at)
        self.backend.release(self.key_hash, tokens.pop(0), ago)


class NullLimiter:
    """No limits at all: for benchmarks with the sandbox's limits off."""

    def __init__(self, key_hash: str) -> None:
        self.key_hash = key_hash

    def acquire(self) -> None:
        """Send at once."""

    def release(self, finished_at: float | None = None) -> None:
        """Nothing to record."""


def limiter_for(key_hash: str) -> Limiter | NullLimiter:
    """The limiter of one API key (by `crypto.key_fingerprint`)."""
    if not rate_limit_enabled():
        return NullLimiter(key_hash)
    return Limiter(key_hash)


def quota_blocked_until(key_hash: str) -> datetime | None:
    """When a spent daily quota lets requests go again, or None if it is not spent."""
    return default_backend().quota_blocked_until(key_hash)


def mark_quota_exhausted(key_hash: str, until: datetime) -> None:
    """Record a `Limit Exceeded` answer: no request for this key before `until`."""
    default_backend().mark_quota_exhausted(key_hash, until)


def requests_today(key_hash: str) -> int:
    """Requests made with this key on the current UTC day (every process)."""
    return default_backend().requests_today(key_hash)

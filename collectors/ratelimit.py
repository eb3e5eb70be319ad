"""The per-API-key request limiter, in front of the daily quota ledger.

KnowBe4 allows four requests per second per key (the Reporting API also a
burst of 50 per minute) and a daily quota. Several sources can share one key
and run in different processes on different hosts, so the limiter's state
lives where all of them see it: the database (`ApiKeyUsage`, one short
transaction per decision) or Redis when `settings.REDIS_URL` is set. Once a
request may go, `Limiter.acquire` takes it from the key's daily budget
(`ledger.take`, always in the database) before it is sent, so a request
that then fails is counted too, as KnowBe4 counts it.

Why the schedule is safe against any server-side sliding window: we keep the
last four requests per key (fifty on the Reporting API, for its burst limit).
A request's time is its *grant* time while it is in flight (and counts as
"now" until it completes, since its response may still be on its way), and
its *completion* time once `release()` ran. A new request may start at
`max(now, 4th most recent time + 1 s)` (and 50th most recent + 60 s). The
fifth request therefore leaves at least one second after the first one's
response arrived, so whatever the network delays, the server cannot see five
arrivals within one second. An entry never released (its process was killed)
counts as finished `INFLIGHT_TIMEOUT` after its grant: longer than the
client's timeouts.

Sleeping always happens outside any transaction or lock.

Usage (the engine wires these into `KnowBe4Client(throttle=..., after_request=...)`):

    lim = limiter_for(key_fingerprint(api_key), api, budget=...)
    lim.acquire()   # blocks until a request may go; BudgetSpent if it may not
    ...             # the request
    lim.release()   # after the response, success or failure
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from functools import cache

from django.conf import settings
from django.db import connection, transaction

from collectors import ledger

LIMIT = 4  # requests ...
WINDOW = 1.0  # ... per this many seconds, per key
BURST_LIMIT = 50  # Reporting API: requests ...
BURST_WINDOW = 60.0  # ... per this many seconds, per key
# The limits of each API: (requests, per seconds).
LIMITS = {
    ledger.EVENTS: ((LIMIT, WINDOW),),
    ledger.REPORTING: ((LIMIT, WINDOW), (BURST_LIMIT, BURST_WINDOW)),
}
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


Limits = tuple[tuple[int, float], ...]
ONE_PER_SECOND: Limits = LIMITS[ledger.EVENTS]


def _prune(entries: list, now: float, stale: float, keep: int = LIMIT) -> list:
    """Keep only the `keep` most recent requests: older ones can never matter."""
    ordered = sorted(entries, key=lambda e: _effective(e, now, stale), reverse=True)
    return ordered[:keep]


def next_slot(
    entries: list,
    now: float,
    stale: float = INFLIGHT_TIMEOUT,
    limits: Limits = ONE_PER_SECOND,
) -> float:
    """The earliest time a new request may start, given the recorded ones:
    for each limit of N requests per W seconds, W after the Nth most recent."""
    times = sorted((_effective(e, now, stale) for e in entries), reverse=True)
    slot = now
    for count, window in limits:
        if len(times) >= count:
            slot = max(slot, times[count - 1] + window + MARGIN)
    return slot


def grant(
    entries: list,
    now: float,
    token: str,
    stale: float,
    limits: Limits = ONE_PER_SECOND,
) -> tuple[float, list]:
    """Try to start a request at `now`: (0, new entries) or (seconds to wait, old)."""
    wait = next_slot(entries, now, stale, limits) - now
    if wait > 0:
        return wait, entries
    keep = max(count for count, _window in limits)
    return 0.0, _prune([*entries, [now, token, False]], now, stale, keep)


def complete(entries: list, now: float, token: str) -> list:
    """Record the completion time of a request (no-op if it was pruned).

    Never earlier than its grant: a completion is what the next window counts
    from, so it may only move later.
    """
    return [
        [max(at, now), tok, True] if tok == token and not done else [at, tok, done]
        for at, tok, done in entries
    ]


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

    def _row(self, key_hash: str, api: str):
        """The key's row, locked; created on first use (one query once it exists).

        get_or_create creates in a savepoint and re-reads on a unique-key race,
        so two processes using a new key at once both end up on one row.
        """
        from collectors.models import ApiKeyUsage

        row, _created = ApiKeyUsage.objects.select_for_update().get_or_create(
            api=api, key_hash=key_hash
        )
        return row

    def try_acquire(
        self, key_hash: str, token: str, stale: float, api: str = ledger.EVENTS
    ) -> float:
        with transaction.atomic():
            self._no_fsync()
            row = self._row(key_hash, api)
            now = time.time()
            wait, entries = grant(row.recent or [], now, token, stale, LIMITS[api])
            if wait > 0:
                return wait
            row.recent = entries
            row.save(update_fields=["recent"])
        return 0.0

    def release(
        self, key_hash: str, token: str, ago: float = 0.0, api: str = ledger.EVENTS
    ) -> None:
        """Record the request as finished `ago` seconds before now."""
        with transaction.atomic():
            self._no_fsync()
            row = self._row(key_hash, api)
            row.recent = complete(row.recent or [], time.time() - ago, token)
            row.save(update_fields=["recent"])


class RedisBackend:
    """State in Redis, updated with WATCH/MULTI (optimistic, retried on conflict).

    The clock is the Redis server's (TIME), so hosts need not agree on time.
    """

    def __init__(self, client, prefix: str = REDIS_PREFIX) -> None:
        self.client = client
        self.prefix = prefix

    def _key(self, key_hash: str, part: str, api: str = ledger.EVENTS) -> str:
        scope = key_hash if api == ledger.EVENTS else f"{api}:{key_hash}"
        return f"{self.prefix}{scope}:{part}"

    @staticmethod
    def _now(conn) -> float:
        seconds, micros = conn.time()
        return seconds + micros / 1_000_000

    def _update(self, key_hash: str, change, api: str) -> float:
        """Run `change(entries, now) -> (wait, entries|None)` atomically.

        `entries` None means "nothing to write".
        """
        import redis

        key = self._key(key_hash, "recent", api)
        expiry = int(max(INFLIGHT_TIMEOUT, BURST_WINDOW)) * 3
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
                    pipe.set(key, json.dumps(entries), ex=expiry)
                    pipe.execute()
                    return wait
                except redis.WatchError:
                    continue

    def try_acquire(
        self, key_hash: str, token: str, stale: float, api: str = ledger.EVENTS
    ) -> float:
        def granting(entries, now):
            wait, new = grant(entries, now, token, stale, LIMITS[api])
            return (wait, None) if wait > 0 else (0.0, new)

        return self._update(key_hash, granting, api)

    def release(
        self, key_hash: str, token: str, ago: float = 0.0, api: str = ledger.EVENTS
    ) -> None:
        """Record the request as finished `ago` seconds before now."""

        def completing(entries, now):
            return 0.0, complete(entries, now - ago, token)

        self._update(key_hash, completing, api)


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


class BudgetSpent(Exception):
    """The key's known daily budget is used up: wait for the reset rather
    than cause a Limit Exceeded (nothing was sent or counted)."""


class WaitLonger(Exception):
    """The next slot is further off than the caller will sleep (the burst
    limit): come back at `at` (a `time.time()` value)."""

    def __init__(self, at: float) -> None:
        super().__init__("wait for the limiter")
        self.at = at


class Limiter:
    """Acquire/release around each request of one API key.

    `api` chooses the limits (the Reporting API adds the burst limit) and
    the ledger row; `budget` is the key's daily budget (None: unknown, every
    request is counted but none refused). Safe to share between threads:
    each thread's in-flight tokens are its own.
    """

    def __init__(
        self,
        key_hash: str,
        backend=None,
        *,
        stale: float | None = None,
        api: str = ledger.EVENTS,
        budget: int | None = None,
    ):
        self.key_hash = key_hash
        self.backend = backend or default_backend()
        self.stale = INFLIGHT_TIMEOUT if stale is None else stale
        self.api = api
        self.budget = budget
        self._local = threading.local()

    @property
    def uses_database(self) -> bool:
        """Whether its slots are rows of this database: written in the
        caller's transaction, and rolled back with it."""
        return isinstance(self.backend, DatabaseBackend)

    def _tokens(self) -> list[str]:
        if not hasattr(self._local, "tokens"):
            self._local.tokens = []
        return self._local.tokens

    def acquire(
        self, longest: float | None = None, take: Callable[[], bool] | None = None
    ) -> None:
        """Block until a request may be sent; record it as in flight and take
        it from the key's daily budget (`ledger.take`, or `take` when given: a
        `ledger.Reservation`'s). BudgetSpent when the budget is used up;
        WaitLonger when the wait would pass `longest` seconds."""
        token = uuid.uuid4().hex[:12]
        while True:
            wait = self.backend.try_acquire(
                self.key_hash, token, self.stale, api=self.api
            )
            if wait <= 0:
                break
            if longest is not None and wait > longest:
                raise WaitLonger(time.time() + wait)
            time.sleep(min(wait, MAX_SLEEP))
        if not (take or self._take)():
            # Not sent: the slot is given back as a request that finished now.
            self.backend.release(self.key_hash, token, api=self.api)
            raise BudgetSpent
        self._tokens().append(token)

    def _take(self) -> bool:
        return ledger.take(self.api, self.key_hash, self.budget)

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
        self.backend.release(self.key_hash, tokens.pop(0), ago, api=self.api)


class NullLimiter:
    """No per-second or burst limit: for benchmarks with the sandbox's limits
    off. Every request is still taken from the key's daily budget and counted,
    as in production: the source page's "used today" stays true, and the
    benchmark measures what a deployment pays per request."""

    uses_database = False  # No slots kept (the ledger's count is separate).

    def __init__(
        self, key_hash: str, *, api: str = ledger.EVENTS, budget: int | None = None
    ) -> None:
        self.key_hash, self.api, self.budget = key_hash, api, budget

    def acquire(
        self, longest: float | None = None, take: Callable[[], bool] | None = None
    ) -> None:
        """Send at once, if the budget allows (`take`: as `Limiter.acquire`)."""
        if not (take or self._take)():
            raise BudgetSpent

    def _take(self) -> bool:
        return ledger.take(self.api, self.key_hash, self.budget)

    def release(self, finished_at: float | None = None) -> None:
        """Nothing to record."""


def limiter_for(
    key_hash: str, api: str = ledger.EVENTS, budget: int | None = None
) -> Limiter | NullLimiter:
    """The limiter of one API key (by `crypto.key_fingerprint`) of one API."""
    if not rate_limit_enabled():
        return NullLimiter(key_hash, api=api, budget=budget)
    return Limiter(key_hash, api=api, budget=budget)


def quota_blocked_until(key_hash: str, api: str = ledger.EVENTS) -> datetime | None:
    """When a spent daily quota lets requests go again, or None if it is not spent."""
    return ledger.blocked_until(api, key_hash)


def mark_quota_exhausted(
    key_hash: str, until: datetime, api: str = ledger.EVENTS
) -> None:
    """Record a `Limit Exceeded` answer: no request for this key before `until`."""
    ledger.block(api, key_hash, until)


def requests_today(key_hash: str, api: str = ledger.EVENTS) -> int:
    """Requests made with this key in its current daily window (every process)."""
    return ledger.used(api, key_hash)

"""The quota ledger: each API key's requests in its current daily window.

KnowBe4 counts every request a key makes, failed ones included, against a
daily limit: 10 x licensed users per day on the User Event API, 2,000 +
licensed users per rolling 24 hours from the first request on the Reporting
API. Several sources (and workers, and hosts) may share a key, so a request
is taken from the key's budget by ONE conditional UPDATE before it is sent
(`take`): the row's count goes up only while it is below the budget, and the
database serializes the writers (PostgreSQL re-checks the condition on the
row a concurrent UPDATE just committed; SQLite has one writer at a time), so
two workers racing for the last request cannot both get it. A run's pages
stored in one transaction take their requests a block at a time instead
(`Reservation`), exact again by the COMMIT.

A window opens with the first request after the previous one reset and
resets at `days.quota_resets_at(opened, api)`: the one reset rule. The
ledger always lives in the database (one row per (API, key fingerprint),
`ApiKeyUsage`), whichever backend the per-second limiter uses.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.db import connection
from django.db.models import F
from django.utils import timezone

from collectors import days
from collectors.models import ApiKeyUsage

EVENTS = ApiKeyUsage.Api.EVENTS.value
REPORTING = ApiKeyUsage.Api.REPORTING.value

# Called with (api, key_hash) right before the UPDATE: a seam for the tests
# that line two workers up at the last unit of a budget.
before_take: Callable[[str, str], None] = lambda api, key_hash: None  # noqa: E731


@dataclass(frozen=True)
class Window:
    """A key's current quota window: what it used and when it resets.

    `opened_at` is None when no window is open (no request since the last
    reset); `resets_at` is then when one opened now would reset."""

    used: int
    opened_at: datetime | None
    resets_at: datetime

    @property
    def open(self) -> bool:
        return self.opened_at is not None


def _row(api: str, key_hash: str) -> None:
    """Make sure the key's row exists (a race on a new key ends on one row)."""
    ApiKeyUsage.objects.bulk_create(
        [ApiKeyUsage(api=api, key_hash=key_hash)], ignore_conflicts=True
    )


def take(
    api: str,
    key_hash: str,
    budget: int | None,
    now: datetime | None = None,
    count: int = 1,
) -> bool:
    """Count `count` requests of this key now, if its window's budget allows
    them all (None: no known budget, always counted). True: send them; False:
    the budget is spent (or has fewer left) until the window resets, do not
    send.

    One UPDATE (`_count`): a window past its reset starts over with these
    requests; otherwise the count goes up only while it stays within
    `budget`. Only when it changed nothing is the row looked for (and made,
    for a key's first request) and the UPDATE tried again.
    """
    now = now or timezone.now()
    if budget is not None and budget < count:
        return False
    if _count(api, key_hash, budget, now, lined_up=True, count=count):
        return True
    # Nothing changed: the budget is spent, or the key had no row when the
    # UPDATE ran (another process may have made it since: the UPDATE is then
    # tried once more, never answered from a look at the row).
    if not ApiKeyUsage.objects.filter(api=api, key_hash=key_hash).exists():
        _row(api, key_hash)
    return _count(api, key_hash, budget, now, count=count)


def _count(
    api: str,
    key_hash: str,
    budget: int | None,
    now: datetime,
    lined_up: bool = False,
    count: int = 1,
) -> bool:
    """The one UPDATE: True when these requests were counted. `lined_up`: the
    first try, where the tests' `before_take` seam stops the workers.

    Written as SQL (`_count_sql`): the ORM's Case/When form cost 1.5 ms of
    Python per request, a tenth of a backfill's CPU."""
    adapt = connection.ops.adapt_datetimefield_value
    at, resets = adapt(now), adapt(days.quota_resets_at(now, api))
    params = [at, count, count, at, at, at, resets, api, key_hash]
    if budget is not None:
        params += [at, count, budget]
    if lined_up:
        before_take(api, key_hash)
    with connection.cursor() as cursor:
        cursor.execute(_count_sql(budget is not None), params)
        return cursor.rowcount == 1


@functools.cache
def _count_sql(with_budget: bool) -> str:
    """A window past its reset (or none yet) starts over at this request;
    a live one counts it, only below the budget when there is one."""
    quote = connection.ops.quote_name
    table = quote(ApiKeyUsage._meta.db_table)
    used, opened, resets, api, key = (
        quote(ApiKeyUsage._meta.get_field(name).column)
        for name in ("used", "window_opened_at", "window_resets_at", "api", "key_hash")
    )
    live = f"{resets} > %s"
    # Only quoted names and placeholders: the values go as parameters.
    sql = (
        f"UPDATE {table} SET {used} = CASE WHEN {live} THEN {used} + %s ELSE %s END, "  # noqa: S608
        f"{opened} = CASE WHEN {live} THEN {opened} ELSE %s END, "
        f"{resets} = CASE WHEN {live} THEN {resets} ELSE %s END "
        f"WHERE {api} = %s AND {key} = %s"
    )
    if with_budget:
        sql += f" AND ({resets} IS NULL OR {resets} <= %s OR {used} + %s <= %s)"
    return sql


class Reservation:
    """A key's requests taken a block at a time, in the caller's open
    transaction (a `store.Batch`): one UPDATE for a block of requests, not
    one per request. On SQLite each statement of the run's thread hands the
    GIL to the fetch thread and waits to take it back: the per-request
    UPDATE cost a backfill about 7 % of its rate.

    The count is exact by the time the transaction commits: `settle()` gives
    back, in the same transaction, what was not sent, and no other connection
    sees the row in between (PostgreSQL locks it until the COMMIT, as it did
    for the per-request UPDATEs; SQLite has one writer). When the transaction
    rolls back, the block goes with it (`forget()`) and the caller counts
    again what it sent, as before. A block serves only the window it was
    taken in: once that has reset, the rest is given back and the next
    request opens the new window. When less than a block is left of a known
    budget, requests are taken one by one, the last refused as ever.
    """

    def __init__(self, api: str, key_hash: str, budget: int | None) -> None:
        self.api, self.key_hash, self.budget = api, key_hash, budget
        self.left = 0  # taken and not sent yet
        self.until: datetime | None = None  # when their window resets
        self.blocks = True  # False once a block no longer fits the budget

    def take(self, now: datetime | None = None, block: int = 1) -> bool:
        """Count one request now (True: send it): from the block held, else
        from a new block of `block` requests (as many as the caller expects
        to send before it settles), else alone, as `take` counts it."""
        now = now or timezone.now()
        if self.left and now < self.until:
            self.left -= 1
            return True
        self.settle()
        size = block if self.budget is None else min(block, self.budget)
        if size > 1 and self.blocks:
            if take(self.api, self.key_hash, self.budget, now, size):
                self.left = size - 1
                self.until = window(self.api, self.key_hash, now).resets_at
                return True
            self.blocks = False
        return take(self.api, self.key_hash, self.budget, now)

    def settle(self) -> None:
        """Give back what the block holds and was not sent: before the
        transaction commits."""
        if self.left:
            ApiKeyUsage.objects.filter(api=self.api, key_hash=self.key_hash).update(
                used=F("used") - self.left
            )
        self.forget()

    def forget(self) -> None:
        """The transaction rolled back: the block went with it."""
        self.left, self.until = 0, None


def window(api: str, key_hash: str | None, now: datetime | None = None) -> Window:
    """The key's current window (an empty one when none is open)."""
    now = now or timezone.now()
    row = (
        ApiKeyUsage.objects.filter(api=api, key_hash=key_hash).first()
        if key_hash
        else None
    )
    if row is None or row.window_resets_at is None or row.window_resets_at <= now:
        return Window(0, None, days.quota_resets_at(now, api))
    return Window(row.used, row.window_opened_at, row.window_resets_at)


def used(api: str, key_hash: str) -> int:
    """Requests this key made in its current window (every process)."""
    return window(api, key_hash).used


def learn(api: str, key_hash: str) -> None:
    """A Limit Exceeded: the requests made in this window are the budget
    (the request that got it was counted too: one past the budget)."""
    spent = used(api, key_hash) - 1
    if spent > 0:
        ApiKeyUsage.objects.update_or_create(
            api=api, key_hash=key_hash, defaults={"learned_budget": spent}
        )


def learned_budget(api: str, key_hash: str) -> int | None:
    """The budget a Limit Exceeded showed for this key, if any."""
    return (
        ApiKeyUsage.objects.filter(api=api, key_hash=key_hash)
        .values_list("learned_budget", flat=True)
        .first()
    )


def blocked_until(api: str, key_hash: str, now: datetime | None = None):
    """When a spent quota lets this key's requests go again (None: not spent)."""
    now = now or timezone.now()
    until = (
        ApiKeyUsage.objects.filter(api=api, key_hash=key_hash)
        .values_list("quota_reset_at", flat=True)
        .first()
    )
    return until if until is not None and until > now else None


def block(api: str, key_hash: str, until: datetime) -> None:
    """Record a Limit Exceeded answer: no request with this key before `until`."""
    _row(api, key_hash)
    ApiKeyUsage.objects.filter(api=api, key_hash=key_hash).update(quota_reset_at=until)

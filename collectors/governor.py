"""The quota governor: one API key's daily request budget, planned.

KnowBe4 allows 10 requests per licensed user per day. The budget is
10 x *Licensed users* (a source setting, Advanced) or, without it, what the
key had made when the first `Limit Exceeded` came (learned). Every source
using the key shares it. The plan of the day:
- the closed-day pass and its re-scans are reserved first (`reserve`);
- today's polling spends only what is left and widens its interval before it
  would eat into the reserve (`poll_interval`);
- while the budget is known, no request is sent past it: the limiter takes
  each request from the key's window in the ledger before it is sent
  (`ledger.take`, one atomic UPDATE), so a source never causes a Limit
  Exceeded, however many workers share the key.
Projections come from the settings and the events per day stored recently:
a page is 100 events, and a day costs at least one request.

A Reporting key is planned the same way with the Reporting API's rule:
2,000 + Licensed users per rolling 24 hours from the first request, shared by
the Reporting sources using the key (never with a User Event key: the ledger
keeps the two APIs apart). A snapshot's requests per data type come from the
last snapshot's count (the checkpoint), else from the records stored (a list
costs ceil((records + 1) / 500) pages), times the snapshots a poll interval
fits in 24 hours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count
from django.utils import timezone

from collectors import crypto, days, ledger
from collectors.knowbe4 import records
from collectors.models import LogMessage, Source

REQUESTS_PER_USER = 10
REPORTING_BASE = 2000  # + licensed users, per rolling 24 h (Reporting API)
REPORTING_PER_PAGE = 500
PER_PAGE = 100
DAY = timedelta(days=1)
WEEK = 7 * 24 * 60  # minutes: the longest re-scan interval
# Events per day are averaged over this many closed days of stored messages.
SAMPLE_DAYS = 7


def rescan_interval(source: Source) -> timedelta:
    """How often the re-scan window is re-read: the source's or the default."""
    if source.rescan_interval_minutes:
        # Clamped as the field's validators are: a form that refused a value
        # still shows figures for what it holds.
        return timedelta(minutes=min(max(15, source.rescan_interval_minutes), WEEK))
    return settings.COLLECTION_RESCAN_INTERVAL


def poll_interval_setting(source: Source) -> timedelta:
    """Today's poll interval as set on the source (before the governor)."""
    return timedelta(minutes=min(max(5, source.today_poll_minutes or 15), 24 * 60))


def poll_spacing(interval: timedelta) -> timedelta:
    """From one poll of today to when the next is due: the interval less the
    dispatcher's lag (COLLECTION_DISPATCH_LAG), so that a poll started that
    late still runs within `interval` of the one before, and an event of
    today is stored within one interval. Never under half the interval."""
    return max(interval - settings.COLLECTION_DISPATCH_LAG, interval / 2)


def _interval_of_spacing(spacing: timedelta) -> timedelta:
    """The interval whose `poll_spacing` is `spacing` (its inverse)."""
    lag = settings.COLLECTION_DISPATCH_LAG
    return spacing + lag if spacing >= lag else 2 * spacing


@dataclass(frozen=True)
class Cost:
    """One source's requests per day, by what spends them."""

    pages_per_day: int
    closed_day: int  # the pass when a day closes, its re-scan included
    rescans: int  # the re-scans on the clock between two closed days
    today: int  # today's polls

    @property
    def total(self) -> int:
        return self.closed_day + self.rescans + self.today

    @property
    def parts(self) -> list[tuple[int, str]]:
        """What spends the requests, for the page: "2 for the closed-day pass,
        3 for re-scans, 0 for today's polls"."""
        return [
            (self.closed_day, "for the closed-day pass"),
            (self.rescans, "for re-scans"),
            (self.today, "for today's polls"),
        ]

    @property
    def note(self) -> str:
        pages = self.pages_per_day
        return f"about {pages:,} page{'s' if pages != 1 else ''} a day"


@dataclass(frozen=True)
class ReportingCost:
    """One Reporting source's requests per day: a snapshot's requests per
    data type (the setting's values), times the snapshots per day."""

    per_snapshot: dict[str, int]
    snapshots_per_day: int

    @property
    def total(self) -> int:
        return sum(self.per_snapshot.values()) * self.snapshots_per_day

    @property
    def parts(self) -> list[tuple[int, str]]:
        labels = dict(records.DATA_TYPE_CHOICES)
        return [
            (n * self.snapshots_per_day, labels.get(kind, kind))
            for kind, n in self.per_snapshot.items()
        ]

    @property
    def note(self) -> str:
        n = self.snapshots_per_day
        return f"{n:,} snapshot{'s' if n != 1 else ''} a day"


def cost(source: Source, events_per_day: float) -> Cost:
    """What a source's settings cost per day, for `events_per_day`."""
    pages = max(1, math.ceil(events_per_day / PER_PAGE))
    window = min(max(0, source.rescan_days or 0), 14)
    closed = (1 + window) * pages
    per_day = max(1, int(DAY / rescan_interval(source)))
    rescans = (per_day - 1) * window * pages if window else 0
    today = 0
    if source.collect_today:
        polls = max(1, int(DAY / poll_spacing(poll_interval_setting(source))))
        today = polls + pages  # each poll re-reads one page; new pages on top
    return Cost(pages, closed, rescans, today)


@dataclass(frozen=True)
class Plan:
    """One key's day: budget, use, reserve and each source's projection."""

    budget: int | None  # None: not known (no Licensed users, no Limit yet)
    learned: bool  # the budget came from a Limit Exceeded
    used: int
    resets_at: datetime
    costs: dict[int, Cost | ReportingCost] = field(default_factory=dict)
    reserve: int = 0  # what the closed-day passes and re-scans still need today
    api: str = ledger.EVENTS
    window_open: bool = True  # False: the window opens with the next request

    @property
    def rolling(self) -> bool:
        """The window is 24 hours from its first request (the Reporting API)."""
        return self.api == ledger.REPORTING

    @property
    def left(self) -> int | None:
        return None if self.budget is None else max(0, self.budget - self.used)

    @property
    def projected(self) -> int:
        """Requests per day all the key's sources' settings call for."""
        return sum(c.total for c in self.costs.values())

    @property
    def overrun(self) -> bool:
        return self.budget is not None and self.projected > self.budget

    @property
    def for_polling(self) -> int | None:
        """What today's polls may still spend (None: no known limit)."""
        return None if self.left is None else max(0, self.left - self.reserve)


def _fingerprint(source: Source) -> str | None:
    if not source.api_key_encrypted:
        return None  # A source not saved yet.
    try:
        return crypto.key_fingerprint(source.get_api_key())
    except crypto.KeyUnreadable:
        return None


def siblings(source: Source) -> list[Source]:
    """The live sources that use the same API key as `source` (it included).

    Keys are stored encrypted with a random nonce, so they are compared by
    fingerprint after decrypting each one: a few microseconds a source.
    """
    mine = _fingerprint(source)
    if mine is None or source.pk is None:
        return [source]
    others = (
        Source.objects.filter(kind=source.kind)
        .exclude(pk=source.pk)
        .exclude(state="stopping")
    )
    return [source, *(s for s in others if _fingerprint(s) == mine)]


def events_per_day(source_ids: list[int], now: datetime) -> dict[int, float]:
    """Average events per closed day over the last SAMPLE_DAYS, per source."""
    last = days.last_collectable_day(now)
    start = days.midnight_after(last - timedelta(days=SAMPLE_DAYS))
    end = days.midnight_after(last)
    rows = (
        LogMessage.objects.filter(
            source_id__in=source_ids, message_time__gte=start, message_time__lt=end
        )
        .values_list("source_id")
        .annotate(n=Count("pk"))
        .order_by()
    )
    counts = dict(rows)
    return {pk: counts.get(pk, 0) / SAMPLE_DAYS for pk in source_ids}


def budget_of(sources: list[Source], key_hash: str | None) -> tuple[int | None, bool]:
    """(budget, learned): Licensed users on any of the key's sources wins,
    then the installation's KNOWBE4_DAILY_QUOTA, then what was learned. A
    Reporting key's is always known: 2,000 + the largest Licensed users."""
    if sources and sources[0].kind == ledger.REPORTING:
        users = max(records.settings_of(s)["licensed_users"] for s in sources)
        return REPORTING_BASE + users, False
    users = [s.licensed_users for s in sources if s.licensed_users]
    if users:
        return REQUESTS_PER_USER * max(users), False
    if settings.KNOWBE4_DAILY_QUOTA:
        return settings.KNOWBE4_DAILY_QUOTA, False
    if key_hash:
        learned = ledger.learned_budget(ledger.EVENTS, key_hash)
        if learned:
            return learned, True
    return None, False


def _reserve_today(source: Source, pages: int, now: datetime, resets: datetime) -> int:
    """The closed-day pass (if due before the reset) and the clock re-scans
    still to come before the quota resets."""
    need = 0
    last = days.last_collectable_day(now)
    if source.last_complete_day is None or source.last_complete_day < last:
        need += (1 + source.rescan_days) * pages
    if source.rescan_days:
        interval = rescan_interval(source)
        since = source.last_rescan_at or now
        next_at = max(now, since + interval)
        if next_at < resets:
            count = 1 + int((resets - next_at) / interval)
            need += count * source.rescan_days * pages
    return need


def plan(source: Source, now: datetime | None = None) -> Plan:
    """The plan of the day for `source`'s API key (every source using it)."""
    now = now or timezone.now()
    group = siblings(source)
    key_hash = _fingerprint(source)
    budget, learned = budget_of(group, key_hash)
    window = ledger.window(source.kind, key_hash, now)
    if source.kind == ledger.REPORTING:
        # Counted only for sources with a data type no snapshot has read yet.
        stored = stored_records([s.pk for s in group if _estimated(s)])
        costs = {s.pk: reporting_cost(s, stored.get(s.pk, {})) for s in group}
        return Plan(
            budget,
            False,
            window.used,
            window.resets_at,
            costs,
            api=ledger.REPORTING,
            window_open=window.open,
        )
    rates = events_per_day([s.pk for s in group], now)
    costs = {s.pk: cost(s, rates[s.pk]) for s in group}
    reserve = sum(
        _reserve_today(s, costs[s.pk].pages_per_day, now, window.resets_at)
        for s in group
    )
    return Plan(budget, learned, window.used, window.resets_at, costs, reserve)


def stored_records(source_ids: list[int]) -> dict[int, dict[str, int]]:
    """Distinct records stored per Reporting source and message type."""
    rows = (
        LogMessage.objects.filter(source_id__in=source_ids)
        .exclude(data_type="events")
        .values_list("source_id", "data_type")
        .annotate(n=Count("event_id", distinct=True))
        .order_by()
    )
    out: dict[int, dict[str, int]] = {}
    for pk, data_type, n in rows:
        out.setdefault(pk, {})[data_type] = n
    return out


def _last_counts(source: Source) -> dict[str, int]:
    """The last complete snapshot's requests per message type."""
    return dict((source.snapshot or {}).get("requests") or {})


def _estimated(source: Source) -> bool:
    """Whether some selected data type has no snapshot count to go by."""
    last = _last_counts(source)
    return source.pk is not None and any(
        not any(t in last for t in records.MESSAGE_TYPES_OF.get(kind, ()))
        for kind in records.settings_of(source)["data_types"]
    )


def _list_pages(count: int) -> int:
    """Requests to read a list of `count` records: until a short page."""
    return count // REPORTING_PER_PAGE + 1


# The list types whose records each have a child list: (parent, child).
CHILD_LISTS = {**records.TEST_RECIPIENTS, "group": "group_member"}


def _estimate(kind: str, stored: dict[str, int]) -> int:
    """A snapshot's requests for one data type, from the records stored:
    each list read to its short page, and a child list per parent (a test's
    recipients, a group's members: an upper bound, as old tests are skipped)."""
    if kind == "account":
        return 2  # the account object and its risk score history
    children = set(CHILD_LISTS.values())
    requests = 0
    for data_type in records.MESSAGE_TYPES_OF[kind]:
        if data_type in children:
            continue
        count = stored.get(data_type, 0)
        requests += _list_pages(count)
        if data_type in CHILD_LISTS:
            members = stored.get(CHILD_LISTS[data_type], 0)
            requests += max(count, math.ceil(members / REPORTING_PER_PAGE))
    return requests


def reporting_cost(source: Source, stored: dict[str, int]) -> ReportingCost:
    """What a Reporting source's settings cost per day: each selected data
    type's requests per snapshot (the last snapshot's count where it read
    that type, else an estimate from the records stored), times the
    snapshots its poll interval fits in 24 hours."""
    conf = records.settings_of(source)
    last = _last_counts(source)
    per_snapshot = {}
    for kind in conf["data_types"]:
        if kind not in records.MESSAGE_TYPES_OF:
            continue
        types = records.MESSAGE_TYPES_OF[kind]
        if any(t in last for t in types):
            per_snapshot[kind] = sum(int(last.get(t, 0)) for t in types)
        else:
            per_snapshot[kind] = _estimate(kind, stored)
    hours = min(max(1, conf["poll_hours"]), 24)
    return ReportingCost(per_snapshot, math.ceil(24 / hours))


def figures(source: Source) -> dict:
    """The plan's figures for a page (`_quota_plan.html`): the key's plan and
    this source's projection. A source not saved yet is alone on its key."""
    key_plan = plan(source)
    return {"plan": key_plan, "plan_cost": key_plan.costs[source.pk]}


def poll_interval(source: Source, key_plan: Plan, now: datetime) -> timedelta | None:
    """Today's poll interval under the plan: the setting, widened so that the
    polls left before the reset fit in what the reserve leaves; None when no
    poll fits before the reset."""
    wanted = poll_interval_setting(source)
    allowance = key_plan.for_polling
    if allowance is None:
        return wanted
    pollers = [pk for pk, c in key_plan.costs.items() if c.today or pk == source.pk]
    share = allowance // max(1, len(pollers))
    if share < 1:
        return None
    until_reset = key_plan.resets_at - now
    return max(wanted, _interval_of_spacing(until_reset / share))


def advice(source: Source, key_plan: Plan) -> str:
    """Which setting to change so the projection fits the budget: the one
    that spends the most of this source's requests."""
    c = key_plan.costs[source.pk]
    if isinstance(c, ReportingCost):
        return reporting_advice(source, c)
    if c.today and c.today >= max(c.rescans, c.closed_day):
        return (
            "Raise the poll interval of “Collect today's events as they arrive” "
            f"(now {source.today_poll_minutes} min) or turn it off."
        )
    if c.rescans and c.rescans >= c.closed_day:
        return "Raise the Re-scan interval or lower the Re-scan window (days)."
    if not source.licensed_users:
        return "Set Licensed users to the number of licensed users of the account."
    return "Lower the Re-scan window (days) of the sources that use this API key."


def reporting_advice(source: Source, c: ReportingCost) -> str:
    """A Reporting source's setting to change: the poll interval while it
    reads more than once a day, else the data type that costs the most."""
    conf = records.settings_of(source)
    hint = (
        ""
        if conf["licensed_users"]
        else " Set Licensed users (Advanced): the limit is 2,000 plus them."
    )
    if c.snapshots_per_day > 1:
        return (
            f"Raise the Poll interval (hours) (now {conf['poll_hours']} h): every "
            f"snapshot costs {sum(c.per_snapshot.values()):,} requests.{hint}"
        )
    labels = dict(records.DATA_TYPE_CHOICES)
    costly = max(c.per_snapshot, key=c.per_snapshot.get, default="")
    return (
        f"Turn off data types you do not need: “{labels.get(costly, costly)}” "
        f"costs the most ({c.per_snapshot.get(costly, 0):,} requests a snapshot)."
        + hint
    )


def review(source: Source, budget: int | None) -> None:
    """Open (or resolve) the Warning that the source's settings project more
    requests per day than its key's budget."""
    from collectors import health
    from collectors.choices import ErrorType, HealthEventName, Severity

    if budget is None:
        health.resolve(source, HealthEventName.QUOTA_OVERRUN)
        return
    key_plan = plan(source)
    if not key_plan.overrun:
        health.resolve(source, HealthEventName.QUOTA_OVERRUN)
        return
    health.record(
        source,
        ErrorType.THIRD_PARTY_GENERIC,
        code="quota_projection",
        message=(
            f"The settings of the sources using this API key project "
            f"{key_plan.projected:,} requests per day, over its daily budget of "
            f"{key_plan.budget:,}: collection would pause until the quota resets."
        ),
        suggested_fix=advice(source, key_plan),
        severity=Severity.WARNING,
        event_name=HealthEventName.QUOTA_OVERRUN,
    )

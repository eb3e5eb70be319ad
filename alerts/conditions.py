"""Evaluate a monitor's condition at one instant: a `Finding`.

Log monitors count messages *stored* (receipt time) in their window: KnowBe4
events are collected a day late, so their own time would never be recent.
The message table has no receipt-time index; ids grow with receipt time, so
each check finds, once per window length, the newest id stored before the
window (walking the primary key backwards over the recent rows only) and
every monitor then reads the id range after it. `FLOOR_SLACK` absorbs the
seconds by which concurrent workers' commits can interleave.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db.models import Count, Q, QuerySet
from django.template.defaultfilters import pluralize

from alerts.models import HealthCondition, Monitor, MonitorKind, Scope
from collectors import crypto
from collectors.choices import Severity, SourceState
from collectors.models import HealthEvent, LogMessage, Source
from collectors.search import MessageSearch, known_categories

logger = logging.getLogger(__name__)

FLOOR_SLACK = timedelta(minutes=10)
ID_CEILING = 2**62
# The Messages filter parameters a log monitor saves (no time range: the
# window replaces it).
QUERY_KEYS = ("category", "source", "collector", "event_type", "risk_level")
QUERY_KEYS += ("user_email", "q")
MAX_LISTED = 50


@dataclass
class Finding:
    """Whether the condition holds, in words, and what made it hold."""

    active: bool
    summary: str
    details: dict = field(default_factory=dict)


class Check:
    """One minute's check: the instant, and what all monitors share."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self._floors: dict[datetime, int] = {}
        self._categories: list[str] | None = None
        self._fresh: dict[datetime, set[int]] = {}
        self._quota: dict[int, bool] | None = None

    @property
    def categories(self) -> list[str]:
        """The stored messages' distinct categories, listed once per check."""
        if self._categories is None:
            self._categories = known_categories()
        return self._categories

    def floor(self, cutoff: datetime) -> int:
        """An id below every message stored at or after `cutoff` (cached)."""
        if cutoff not in self._floors:
            older = LogMessage.objects.filter(receipt_time__lt=cutoff - FLOOR_SLACK)
            pk = older.order_by("-pk").values_list("pk", flat=True).first()
            self._floors[cutoff] = pk or 0
        return self._floors[cutoff]

    def fresh_sources(self, cutoff: datetime) -> set[int]:
        """Ids of the sources that stored a message at or after `cutoff`."""
        if cutoff not in self._fresh:
            rows = self.stored_since(cutoff).order_by().values_list("source_id")
            self._fresh[cutoff] = {pk for (pk,) in rows.distinct()}
        return self._fresh[cutoff]

    def quota_overruns(self) -> dict[int, bool]:
        """{source id: quota spent or projected to run out}, once per check
        (each API key is decrypted and looked up once, not per monitor)."""
        if self._quota is None:
            self._quota = _quota_overruns(self.now)
        return self._quota

    def stored_since(self, cutoff: datetime) -> QuerySet[LogMessage]:
        """Messages stored at or after `cutoff`, as an id range. The range is
        closed (by an id no table reaches) because SQLite's planner judges a
        two-sided range on the primary key selective and then walks it rather
        than an index on another filter's column."""
        return LogMessage.objects.filter(
            pk__gt=self.floor(cutoff), pk__lt=ID_CEILING, receipt_time__gte=cutoff
        )


def evaluate(monitor: Monitor, check: Check) -> Finding:
    """The monitor's Finding now."""
    if monitor.kind == MonitorKind.LOG:
        return _log(monitor, check)
    return HEALTH[monitor.condition](monitor, check)


def log_filters(query: dict, check: Check | None = None) -> Q:
    """The saved Messages filter as a Q, built by the Messages page's own
    search, so a monitor matches exactly what that page shows. The filter was
    validated by that page's form when the monitor was saved."""
    data = {k: v for k, v in query.items() if k in QUERY_KEYS and v not in ("", None)}
    categories = check.categories if check is not None else None
    return MessageSearch.saved(data, categories).filters()


def log_window(monitor: Monitor, check: Check) -> QuerySet[LogMessage]:
    """The monitor's matching messages stored inside its window."""
    cutoff = check.now - timedelta(minutes=monitor.window_minutes)
    return check.stored_since(cutoff).filter(log_filters(monitor.query, check))


def _log(monitor: Monitor, check: Check) -> Finding:
    window = log_window(monitor, check)
    if monitor.per_user:
        over = list(
            window.exclude(user_email="")
            .values("user_email")
            .annotate(n=Count("pk"))
            .filter(n__gt=monitor.threshold)
            .order_by("-n", "user_email")[:MAX_LISTED]
        )
        users = [{"user": row["user_email"], "count": row["n"]} for row in over]
        summary = (
            f"{len(users)} user{pluralize(len(users))} with more than "
            f"{monitor.threshold} message{pluralize(monitor.threshold)}"
            f" in {monitor.window_minutes} min: "
            + ", ".join(f"{u['user']} ({u['count']})" for u in users[:5])
            if users
            else f"No user above {monitor.threshold} "
            f"message{pluralize(monitor.threshold)}"
        )
        return Finding(bool(users), summary, {"users": users})
    count = window.count()
    summary = (
        f"{count} matching message{pluralize(count)} stored in the last "
        f"{monitor.window_minutes} minute{pluralize(monitor.window_minutes)} "
        f"(threshold {monitor.threshold})"
    )
    return Finding(count > monitor.threshold, summary, {"count": count})


def scope_sources(monitor: Monitor) -> QuerySet[Source]:
    """The sources a health monitor watches."""
    if monitor.scope == Scope.COLLECTOR:
        return Source.objects.filter(collector_id=monitor.collector_id)
    if monitor.scope == Scope.SOURCES:
        return Source.objects.filter(monitor=monitor)
    return Source.objects.all()


def _sources_finding(rows: list[tuple[int, str]], what: str) -> Finding:
    sources = [{"id": pk, "name": name} for pk, name in rows[:MAX_LISTED]]
    if not sources:
        return Finding(False, f"No source {what}")
    names = ", ".join(s["name"] for s in sources[:5])
    more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
    return Finding(
        True,
        f"{len(rows)} source{pluralize(len(rows))} {what}: {names}{more}",
        {"sources": sources},
    )


def _source_error(monitor: Monitor, check: Check) -> Finding:
    rows = scope_sources(monitor).filter(state=SourceState.ERROR)
    return _sources_finding(list(rows.values_list("pk", "name")), "in Error")


def _warning_open(monitor: Monitor, check: Check) -> Finding:
    since = check.now - timedelta(minutes=monitor.warning_minutes)
    warned = (
        HealthEvent.objects.open()
        .filter(severity=Severity.WARNING, first_seen__lte=since)
        .filter(source__in=scope_sources(monitor))
        .values_list("source_id", flat=True)
    )
    rows = scope_sources(monitor).filter(pk__in=warned).values_list("pk", "name")
    what = f"with a Warning open for more than {monitor.warning_minutes} min"
    return _sources_finding(list(rows), what)


def _stale(monitor: Monitor, check: Check) -> Finding:
    """Sources that stored nothing in N hours (new, Pending and Stopping
    sources are not expected to have)."""
    cutoff = check.now - timedelta(hours=monitor.stale_hours)
    candidates = (
        scope_sources(monitor)
        .exclude(state__in=(SourceState.PENDING, SourceState.STOPPING))
        .filter(created__lte=cutoff)
    )
    fresh = check.fresh_sources(cutoff)
    rows = [r for r in candidates.values_list("pk", "name") if r[0] not in fresh]
    return _sources_finding(rows, f"with no message stored for {monitor.stale_hours} h")


def quota_overrun(used: int, quota: int | None, now: datetime) -> bool:
    """Whether today's requests, projected linearly to midnight UTC, exceed
    the daily quota (the first 10 minutes of a day are too short to judge)."""
    if not quota:
        return False
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    elapsed = max((now - midnight).total_seconds(), 600.0)
    return used * 86400 / elapsed > quota


def _quota_overruns(now: datetime) -> dict[int, bool]:
    """Whether each source's key has its quota spent now or projected to be
    by midnight (sources sharing a key share the answer)."""
    from collectors import ratelimit

    quota = getattr(settings, "KNOWBE4_DAILY_QUOTA", None)
    by_key: dict[str, bool] = {}
    result = {}
    sources = Source.objects.exclude(state=SourceState.STOPPING)
    rows = sources.values_list("pk", "api_key_encrypted", "kind")
    for pk, token, api in rows:
        if token not in by_key:
            try:
                fingerprint = crypto.key_fingerprint(crypto.decrypt(token))
            except crypto.KeyUnreadable:
                by_key[token] = False
                continue
            blocked = ratelimit.quota_blocked_until(fingerprint, api)
            spent = blocked is not None and blocked > now
            used = ratelimit.requests_today(fingerprint, api)
            by_key[token] = spent or (
                api == "events" and quota_overrun(used, quota, now)
            )
        result[pk] = by_key[token]
    return result


def _quota(monitor: Monitor, check: Check) -> Finding:
    """Sources whose key's quota is spent now or projected to be by midnight."""
    over = check.quota_overruns()
    rows = [
        (pk, name)
        for pk, name in scope_sources(monitor).values_list("pk", "name")
        if over.get(pk)
    ]
    return _sources_finding(rows, "projected to exceed the daily quota")


HEALTH = {
    HealthCondition.SOURCE_ERROR: _source_error,
    HealthCondition.WARNING_OPEN: _warning_open,
    HealthCondition.STALE: _stale,
    HealthCondition.QUOTA: _quota,
}


def sample_messages(monitor: Monitor, check: Check, finding: Finding) -> list[dict]:
    """Up to 10 of the newest matching messages, each cut short, for the
    notification (a per-user monitor's are those of the users above N)."""
    if monitor.kind != MonitorKind.LOG or not finding.active:
        return []
    window = log_window(monitor, check)
    users = [u["user"] for u in finding.details.get("users", [])]
    if monitor.per_user:
        window = window.filter(user_email__in=users)
    rows = window.order_by("-pk").values(
        "pk",
        "event_id",
        "message_time",
        "receipt_time",
        "source_name",
        "source_category",
        "event_type",
        "risk_level",
        "user_email",
        "raw",
    )[:10]
    return [
        {
            **{k: v for k, v in row.items() if k not in ("pk", "raw")},
            "id": row["pk"],
            "message_time": row["message_time"].isoformat(),
            "receipt_time": row["receipt_time"].isoformat(),
            "raw": row["raw"][:500] + ("…" if len(row["raw"]) > 500 else ""),
        }
        for row in rows
    ]

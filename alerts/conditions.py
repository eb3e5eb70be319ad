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

from alerts.models import HealthCondition, Monitor, MonitorKind, Scope
from collectors import crypto
from collectors.choices import Severity, SourceState
from collectors.models import HealthEvent, LogMessage, Source
from collectors.search import MessageSearch

logger = logging.getLogger(__name__)

FLOOR_SLACK = timedelta(minutes=10)
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

    def floor(self, cutoff: datetime) -> int:
        """An id below every message stored at or after `cutoff` (cached)."""
        if cutoff not in self._floors:
            older = LogMessage.objects.filter(receipt_time__lt=cutoff - FLOOR_SLACK)
            pk = older.order_by("-pk").values_list("pk", flat=True).first()
            self._floors[cutoff] = pk or 0
        return self._floors[cutoff]

    def stored_since(self, cutoff: datetime) -> QuerySet[LogMessage]:
        """Messages stored at or after `cutoff`, as an id range."""
        return LogMessage.objects.filter(
            pk__gt=self.floor(cutoff), receipt_time__gte=cutoff
        )


def evaluate(monitor: Monitor, check: Check) -> Finding:
    """The monitor's Finding now."""
    if monitor.kind == MonitorKind.LOG:
        return _log(monitor, check)
    return HEALTH[monitor.condition](monitor, check)


def log_filters(query: dict) -> Q:
    """The saved Messages filter as a Q (through the page's own form, so a
    monitor matches exactly what the Messages page shows)."""
    params = {k: v for k, v in query.items() if k in QUERY_KEYS and v not in ("", None)}
    search = MessageSearch(params)
    if not search.valid:
        raise ValueError(f"invalid saved filter: {search.form.errors.as_text()}")
    return search.filters()


def log_window(monitor: Monitor, check: Check) -> QuerySet[LogMessage]:
    """The monitor's matching messages stored inside its window."""
    cutoff = check.now - timedelta(minutes=monitor.window_minutes)
    return check.stored_since(cutoff).filter(log_filters(monitor.query))


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
            f"{len(users)} user(s) with more than {monitor.threshold} message(s)"
            f" in {monitor.window_minutes} min: "
            + ", ".join(f"{u['user']} ({u['count']})" for u in users[:5])
            if users
            else f"No user above {monitor.threshold} message(s)"
        )
        return Finding(bool(users), summary, {"users": users})
    count = window.count()
    summary = (
        f"{count} matching message(s) stored in the last "
        f"{monitor.window_minutes} minute(s) (threshold {monitor.threshold})"
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
        True, f"{len(rows)} source(s) {what}: {names}{more}", {"sources": sources}
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
    fresh = set(
        check.stored_since(cutoff)
        .filter(source__in=candidates)
        .values_list("source_id", flat=True)
        .distinct()
    )
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


def _quota(monitor: Monitor, check: Check) -> Finding:
    """Sources whose key's quota is spent now or projected to be by midnight."""
    from collectors import ratelimit

    quota = getattr(settings, "KNOWBE4_DAILY_QUOTA", None)
    rows = []
    sources = scope_sources(monitor).exclude(state=SourceState.STOPPING)
    for source in sources.only("pk", "name", "api_key_encrypted"):
        try:
            fingerprint = crypto.key_fingerprint(source.get_api_key())
        except crypto.KeyUnreadable:
            continue
        blocked = ratelimit.quota_blocked_until(fingerprint)
        spent = blocked is not None and blocked > check.now
        used = ratelimit.requests_today(fingerprint)
        if spent or quota_overrun(used, quota, check.now):
            rows.append((source.pk, source.name))
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

"""Server-side aggregates over collected messages: the Overview's figures.

`LogMessage.objects` is a `LogMessageQuerySet`, so every figure is one
queryset method applied to an already filtered queryset (time range,
collector, source, category), and runs as one GROUP BY in the database: the
page never loads messages into Python to count them. This module imports no
model at import time, so `models.py` can use it as its manager.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.core.exceptions import EmptyResultSet
from django.db import connection, models
from django.db.models import CharField, Count, F, Func, Max, Min, Sum
from django.db.models.expressions import RawSQL
from django.db.models.functions import TruncDate
from django.utils.dateparse import parse_datetime

# The "recent rate" of a backfill's ETA: events stored in this last stretch.
RECENT_RATE_WINDOW = timedelta(minutes=10)
# The Collection page's activity: hourly buckets over the last 24 hours.
ACTIVITY_HOURS = 24


def hour_bucket(start: datetime):
    """Whole hours from `start` (a whole second) to `receipt_time`, computed
    by the database on whole seconds, so the hour a message lands in is
    exact: SQLite reads its stored UTC text with strftime('%s'), PostgreSQL
    takes the epoch of the timestamp."""
    epoch = int(start.timestamp())
    if connection.vendor == "sqlite":
        # (whole seconds first: SQLite's date functions round to milliseconds)
        sql = (
            "(CAST(strftime('%%s', substr(receipt_time, 1, 19)) AS INTEGER) - %s)"
            " / 3600"
        )
    else:
        sql = "FLOOR((FLOOR(EXTRACT(EPOCH FROM receipt_time)) - %s) / 3600)"
    # Constant SQL; the only value is a parameter.
    return RawSQL(sql, [epoch], output_field=models.IntegerField())  # noqa: S611


def utc_day():
    """The UTC day of `message_time`, computed by the database itself.

    SQLite stores UTC text, so its built-in DATE() is exact and runs in C;
    Django's TruncDate would call back into Python for every row (about ten
    times slower over the hundred thousand rows a month of messages holds).
    """
    if connection.vendor == "sqlite":
        return Func(F("message_time"), function="DATE", output_field=CharField())
    return TruncDate("message_time", tzinfo=UTC)


def as_date(value) -> date:
    """TruncDate yields a date (or an ISO string on SQLite's DATE())."""
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def _aware(value) -> datetime:
    """A time read through a raw cursor: SQLite hands back UTC text."""
    if isinstance(value, str):
        value = parse_datetime(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Activity:
    """A source's (or collector's) messages received in the last 24 hours,
    in hourly buckets, oldest first; `total` is their sum."""

    hourly: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.hourly)

    def __add__(self, other: Activity) -> Activity:
        return Activity(
            tuple(a + b for a, b in zip(self.hourly, other.hourly, strict=True))
        )


NO_ACTIVITY = Activity((0,) * ACTIVITY_HOURS)


def per_owner(
    activity: dict[int, Activity], owner_of: dict[int, int]
) -> dict[int, Activity]:
    """Sources' activities added up per owner (a collector), hour by hour."""
    totals: dict[int, Activity] = {}
    for pk, hourly in activity.items():
        owner = owner_of.get(pk)
        if owner is not None:
            totals[owner] = totals.get(owner, NO_ACTIVITY) + hourly
    return totals


class LogMessageQuerySet(models.QuerySet):
    """Aggregates of the Overview, the Collection page, its refresh endpoint
    and the source page, each one GROUP BY over the filtered rows."""

    def activity(self, now: datetime) -> dict[int, Activity]:
        """Messages received in each of the last 24 hours (by receipt time:
        what collection did), per source, in ONE grouped query: the Messages
        column and the sparkline of every page (`Activity.per_owner` adds
        them up per collector).

        The window ends at `now` truncated to the second, and bucket i covers
        [start + i h, start + (i+1) h), so the buckets add up to exactly the
        last 24 hours. The database numbers each row's hour (`hour_bucket`)
        and groups by source and hour: one expression per row, read from the
        covering (source, receipt_time) index, at most 24 rows per source
        back. Filter the queryset to the sources wanted first (by id, without
        a join: a join per row doubles the cost).
        """
        end = now.replace(microsecond=0)
        start = end - timedelta(hours=ACTIVITY_HOURS)
        grouped = (
            self.filter(
                receipt_time__gte=start, receipt_time__lt=end, source__isnull=False
            )
            .annotate(hour=hour_bucket(start))
            .order_by()
            .values_list("source_id", "hour")
            .annotate(n=Count("pk"))
        )
        try:
            sql, params = grouped.query.sql_with_params()
        except EmptyResultSet:
            return {}
        # Three integers a row, thousands of rows: the ORM's per-row
        # converters would cost more than the query itself.
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        hourly: dict[int, list[int]] = {}
        for source_id, hour, n in rows:
            counts = hourly.setdefault(source_id, [0] * ACTIVITY_HOURS)
            counts[min(max(int(hour), 0), ACTIVITY_HOURS - 1)] += n
        return {pk: Activity(tuple(c)) for pk, c in hourly.items()}

    def backfill_counts(self, now: datetime) -> dict[int, tuple[int, int]]:
        """Per source: (events stored, events stored in the recent-rate window),
        in one grouped query: what a backfill's progress and ETA need."""
        rows = (
            self.filter(source__isnull=False)
            .order_by()
            .values("source_id")
            .annotate(
                stored=models.Count("pk"),
                recent=models.Count(
                    "pk", filter=models.Q(receipt_time__gte=now - RECENT_RATE_WINDOW)
                ),
            )
        )
        return {row["source_id"]: (row["stored"], row["recent"]) for row in rows}

    def per_day_by_type(self) -> list[tuple[date, str, int]]:
        """(UTC day, event type, messages) for every day and type present."""
        rows = (
            self.annotate(day=utc_day())
            .values_list("day", "event_type")
            .annotate(n=Count("pk"))
            .order_by()
        )
        return [(as_date(day), kind, n) for day, kind, n in rows]

    def risk_distribution(self) -> list[tuple[int | None, int]]:
        """(risk level, messages), lowest level first; None (no level) last."""
        rows = self.values_list("risk_level").annotate(n=Count("pk")).order_by()
        return sorted(rows, key=lambda r: (r[0] is None, r[0] or 0))

    def top_users_by_risk(self, limit: int = 10) -> list[dict]:
        """The users with the highest summed risk level, with their counts.

        Events without a user or a risk level add nothing; ties are broken by
        the number of events, then by address, so the list is stable.
        """
        return list(
            self.exclude(user_email="")
            .filter(risk_level__isnull=False)
            .values("user_email")
            .annotate(risk=Sum("risk_level"), events=Count("pk"))
            .order_by("-risk", "-events", "user_email")[:limit]
        )

    def new_event_types(self, since: datetime, scope: models.Q) -> list[dict]:
        """Event types seen in these rows and never before `since` in `scope`.

        `scope` is the same filter without its time bounds (the collector,
        source or category chosen), so "new" means new to what is shown. The
        types in range are grouped first (a handful of rows); the NOT EXISTS
        then runs once per type, not once per message, as one seek into
        `msg_type_time` that stops at the first older row.
        """
        grouped = (
            self.exclude(event_type="")
            .values("event_type")
            .annotate(first_seen=Min("message_time"), events=Count("pk"))
            .order_by()
        )
        older = self.model.objects.filter(
            scope,
            message_time__lt=since,
            event_type=RawSQL("grouped.event_type", []),
        ).values("pk")
        try:
            inner_sql, inner_params = grouped.query.sql_with_params()
            older_sql, older_params = older.query.sql_with_params()
        except EmptyResultSet:  # the scope matches nothing (an IN of no value)
            return []
        # Both parts are SQL compiled by Django; every value is a parameter.
        head = "SELECT grouped.event_type, grouped.first_seen, grouped.events"
        sql = f"{head} FROM ({inner_sql}) grouped WHERE NOT EXISTS ({older_sql})"  # noqa: S608
        sql += " ORDER BY grouped.first_seen, grouped.event_type"
        with connection.cursor() as cursor:
            cursor.execute(sql, [*inner_params, *older_params])
            rows = cursor.fetchall()
        return [
            {"event_type": kind, "first_seen": _aware(first), "events": n}
            for kind, first, n in rows
        ]

    def totals(self) -> dict:
        """Messages, distinct users and event types, and the newest time."""
        return self.aggregate(
            messages=Count("pk"),
            users=Count("user_email", distinct=True, filter=~models.Q(user_email="")),
            event_types=Count("event_type", distinct=True),
            newest=Max("message_time"),
        )

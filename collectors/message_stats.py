"""Server-side aggregates over collected messages: the Overview's figures.

`LogMessage.objects` is a `LogMessageQuerySet`, so every figure is one
queryset method applied to an already filtered queryset (time range,
collector, source, category), and runs as one GROUP BY in the database: the
page never loads messages into Python to count them. This module imports no
model at import time, so `models.py` can use it as its manager.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.core.exceptions import EmptyResultSet
from django.db import connection, models
from django.db.models import CharField, Count, F, Func, Max, Min, Sum
from django.db.models.expressions import RawSQL
from django.db.models.functions import TruncDate
from django.utils.dateparse import parse_datetime

from collectors.knowbe4.records import TEST_RECIPIENTS

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

        The window ends at `now` rounded up to a whole second (the buckets
        are counted in whole seconds; rounding down left out what arrived in
        the last fraction of a second, which the page's total already
        counted), and bucket i covers [start + i h, start + (i+1) h), so the
        buckets add up to exactly the last 24 hours. The database numbers
        each row's hour (`hour_bucket`) and groups by source and hour: one
        expression per row, read from the covering (source, receipt_time)
        index, at most 24 rows per source back. Filter the queryset to the
        sources wanted first (by id, without a join: a join per row doubles
        the cost).
        """
        end = now.replace(microsecond=0)
        if now.microsecond:
            end += timedelta(seconds=1)
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

    # ---- KnowBe4 KMSAT Reporting: aggregates over record versions -------------
    #
    # Reporting messages are a change history: one message per version of a
    # record, identified by (source, data type, record id = event_id). Each
    # aggregate below reads the LATEST version of each record within the
    # queryset (already cut to the chosen range and scope): the version with
    # the highest id, as versions are stored in the order they were seen (a
    # record's message time, its own time such as a test's start, may stay
    # the same across versions). The database picks those ids (GROUP BY the
    # identity, MAX(id)) in a subquery, so each aggregate is ONE query; the
    # records' JSON is then read in Python, since the fields counted (a
    # recipient's clicked_at, an enrollment's status) live in `raw`.

    def latest_versions(
        self, *data_types: str, having: models.Q | None = None
    ) -> list[tuple[str, str, dict]]:
        """(data type, user email, record) of the newest version in these rows
        of each record of `data_types`, oldest record first. `having` narrows
        the newest versions (never the versions compared to find them): a
        cheap text pre-filter; callers still check the parsed JSON."""
        newest = self.filter(pk__in=self._newest_ids(data_types, Max))
        return _records(newest.filter(having) if having is not None else newest)

    def _newest_ids(self, data_types, pick) -> models.QuerySet:
        return (
            self.filter(data_type__in=data_types)
            .order_by()
            .values("source_id", "data_type", "event_id")
            .annotate(pick=pick("pk"))
            .values("pick")
        )

    def phishing_tests(self) -> list[dict]:
        """The latest version of each phishing security test, email and
        callback alike, oldest start first: its phish-prone percentage and
        KnowBe4's own per-test counts."""
        tests = []
        for kind, _, r in self.latest_versions(*TEST_RECIPIENTS):
            tests.append(
                {
                    "data_type": kind,
                    "pst_id": r.get("pst_id"),
                    "name": str(r.get("name") or r.get("pst_id")),
                    "started": records_time(r.get("started_at")),
                    "status": str(r.get("status") or ""),
                    "ppp": _number(r.get("phish_prone_percentage")),
                    "delivered": _count(r.get("delivered_count")),
                    "clicked": _count(r.get("clicked_count")),
                    "data_entered": _count(r.get("data_entered_count")),
                    "reported": _count(r.get("reported_count")),
                }
            )
        far = datetime.max.replace(tzinfo=UTC)
        tests.sort(
            key=lambda t: (t["started"] or far, t["data_type"], str(t["pst_id"]))
        )
        return tests

    def repeat_clickers(self, minimum: int = 2) -> list[dict]:
        """Users whose latest recipient versions (email and callback tests)
        show a click in `minimum` or more distinct tests, most tests first."""
        tests: dict[str, set] = {}
        for kind, email, r in self.latest_versions(*RECIPIENT_TYPES, having=CLICKED):
            if email and r.get("clicked_at"):
                tests.setdefault(email.lower(), set()).add((kind, r.get("pst_id")))
        rows = [
            {"user_email": email, "tests": len(ids)}
            for email, ids in tests.items()
            if len(ids) >= minimum
        ]
        return sorted(rows, key=lambda r: (-r["tests"], r["user_email"]))

    def clickers_untrained(self) -> list[dict]:
        """Users who clicked (latest recipient versions, email and callback
        tests) and whose latest training enrollment versions include one not
        completed (Not Started, In Progress or Past Due), with those
        enrollments counted."""
        clicked: set[str] = set()
        open_: dict[str, dict] = {}
        for kind, email, r in self.latest_versions(
            *RECIPIENT_TYPES,
            "training_enrollment",
            having=CLICKED | models.Q(data_type="training_enrollment"),
        ):
            email = email.lower()
            if not email:
                continue
            if kind in RECIPIENT_TYPES:
                if r.get("clicked_at"):
                    clicked.add(email)
            elif r.get("status") not in COMPLETED_STATUSES:
                row = open_.setdefault(email, {"incomplete": 0, "past_due": 0})
                row["past_due" if r.get("status") == "Past Due" else "incomplete"] += 1
        rows = [{"user_email": e, **open_[e]} for e in clicked & set(open_)]
        rows.sort(key=lambda r: (-r["past_due"], -r["incomplete"], r["user_email"]))
        return rows

    def risk_drift(self) -> list[dict]:
        """Per user: current_risk_score of the OLDEST version in these rows
        and of the LATEST (MIN and MAX id per record, one query), for the
        users whose score rose, largest rise first."""
        ends = self.filter(
            models.Q(pk__in=self._newest_ids(["user"], Min))
            | models.Q(pk__in=self._newest_ids(["user"], Max))
        )
        scores: dict[tuple, list] = {}
        for (_, email, r), (pk, key) in _records_keyed(ends):
            scores.setdefault(key, []).append((pk, email, r.get("current_risk_score")))
        rows = []
        for versions in scores.values():
            versions.sort(key=lambda v: v[0])
            first, last = _number(versions[0][2]), _number(versions[-1][2])
            if first is not None and last is not None and last > first:
                rows.append(
                    {
                        "user_email": versions[-1][1],
                        "from": first,
                        "to": last,
                        "rise": round(last - first, 1),
                    }
                )
        return sorted(rows, key=lambda r: (-r["rise"], r["user_email"]))

    def training_by_campaign(self) -> list[dict]:
        """Per training campaign (an enrollment's campaign_name): enrollments,
        completed and past due, from the latest version of each enrollment."""
        rows: dict[str, dict] = {}
        for _, _, r in self.latest_versions("training_enrollment"):
            name = str(r.get("campaign_name") or "(no campaign)")
            row = rows.setdefault(
                name, {"campaign": name, "enrolled": 0, "completed": 0, "past_due": 0}
            )
            row["enrolled"] += 1
            if r.get("status") in COMPLETED_STATUSES:
                row["completed"] += 1
            elif r.get("status") == "Past Due":
                row["past_due"] += 1
        return [rows[name] for name in sorted(rows)]


# Email and callback security tests, and their recipients.
RECIPIENT_TYPES = tuple(TEST_RECIPIENTS.values())
# A recipient version with a click: canonical JSON writes `"clicked_at":null`
# without one (a pre-filter of the rows read; the JSON is checked anyway).
CLICKED_TEXT = '"clicked_at":"'
CLICKED = models.Q(raw__contains=CLICKED_TEXT)
# An enrollment counts as complete in these statuses (KnowBe4's wording).
COMPLETED_STATUSES = frozenset({"Passed", "Completed"})


def _records(qs) -> list[tuple[str, str, dict]]:
    return [rec for rec, _ in _records_keyed(qs)]


def _records_keyed(qs) -> list[tuple[tuple[str, str, dict], tuple[int, tuple]]]:
    """Rows as ((data type, email, parsed JSON), (id, record identity)); a
    version whose JSON is not an object is skipped (it counts as nothing)."""
    out = []
    fields = ("pk", "source_id", "data_type", "event_id", "user_email", "raw")
    for pk, source_id, kind, event_id, email, raw in qs.order_by().values_list(*fields):
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(((kind, email, record), (pk, (source_id, kind, event_id))))
    out.sort(key=lambda item: item[1][0])
    return out


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def _count(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def records_time(value) -> datetime | None:
    """A record's ISO time (records.parse_time, imported late: no model here)."""
    from collectors.knowbe4.records import parse_time

    return parse_time(value)

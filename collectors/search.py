"""Message search: the filter form, the query it builds, keyset pages and the
per-day counts behind the chart.

The messages page, its CSV/JSON-lines export and the chart all read one
`MessageSearch`, so what a user sees is exactly what they export. Queries stay
index-friendly on a million rows: a category pattern with its only `*` at the
end becomes a range over `msg_category_time`, and pages are keyset pages over
(`message_time`, `id`) so no page ever counts the whole table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django import forms
from django.db import connection
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from collectors.choices import HealthEventName, Severity
from collectors.models import HealthEvent, HostedCollector, LogMessage, Source

PAGE_SIZE = 50
# The chart spans the filter's time range, or this many days when none is set,
# so drawing it never groups the whole table.
DEFAULT_CHART_DAYS = 30
MAX_CHART_DAYS = 366
QUICK_RANGES = {
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}


def category_q(pattern: str) -> Q:
    """Translate a Sumo-style `_sourceCategory` pattern into a filter.

    No `*`: an exact match. A single trailing `*` (`Security/*`): a prefix,
    written as a half-open range on SQLite (binary collation, so the range is
    exact and walks the category index) and as LIKE 'prefix%' elsewhere (a
    locale collation does not order prefixes contiguously). A `*` anywhere
    else: an anchored regular expression, which cannot use an index.
    """
    if "*" not in pattern:
        return Q(source_category=pattern)
    head = pattern[:-1]
    if pattern.endswith("*") and "*" not in head:
        if not head:
            return Q()
        if connection.vendor == "sqlite":
            return Q(source_category__gte=head, source_category__lt=_next_prefix(head))
        return Q(source_category__startswith=head)
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return Q(source_category__regex=f"^{regex}$")


def _next_prefix(prefix: str) -> str:
    """The smallest string greater than every string starting with `prefix`."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class MessageFilterForm(forms.Form):
    """The filters of the messages page (all optional, all GET parameters)."""

    category = forms.CharField(
        label="Source category",
        required=False,
        max_length=1024,
        help_text="Use * as a wildcard, e.g. Security/*",
    )
    source = forms.ModelChoiceField(
        queryset=Source.objects.select_related("collector"),
        required=False,
        empty_label="Any source",
    )
    collector = forms.ModelChoiceField(
        queryset=HostedCollector.objects.all(),
        required=False,
        empty_label="Any collector",
    )
    range = forms.ChoiceField(
        label="Time range",
        required=False,
        choices=[
            ("", "Any time"),
            ("24h", "Last 24 hours"),
            ("7d", "Last 7 days"),
            ("30d", "Last 30 days"),
        ],
    )
    since = forms.DateTimeField(
        label="From (UTC)",
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    until = forms.DateTimeField(
        label="To (UTC)",
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    event_type = forms.CharField(label="Event type", required=False, max_length=255)
    risk_level = forms.IntegerField(
        label="Risk level", required=False, min_value=-10, max_value=10
    )
    user_email = forms.CharField(label="User email", required=False, max_length=254)
    q = forms.CharField(label="Text", required=False, max_length=200)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["source"].label_from_instance = lambda s: (
            f"{s.collector.name} / {s.name}"
        )

    def clean(self) -> dict:
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and since > until:
            self.add_error("until", "The end of the range is before its start.")
        return data


@dataclass
class Cursor:
    """A keyset position: the (message_time, id) of a row at a page's edge."""

    time: datetime
    pk: int

    def encode(self) -> str:
        return f"{self.time.isoformat()}_{self.pk}"

    @classmethod
    def decode(cls, value: str | None) -> Cursor | None:
        """Parse a cursor from the URL; a malformed one means 'first page'."""
        if not value:
            return None
        stamp, _, pk = value.rpartition("_")
        try:
            moment = datetime.fromisoformat(stamp)
            number = int(pk)
        except ValueError:
            return None
        if timezone.is_naive(moment):
            moment = moment.replace(tzinfo=UTC)
        return cls(moment, number)


@dataclass
class Page:
    """One keyset page: rows newest first and cursors to its neighbours."""

    rows: list[LogMessage]
    older: Cursor | None
    newer: Cursor | None


class MessageSearch:
    """Validated filters turned into querysets for the page, export and chart."""

    def __init__(self, params, now: datetime | None = None) -> None:
        self.form = MessageFilterForm(params)
        self.now = now or timezone.now()
        self.valid = self.form.is_valid()
        self.data = self.form.cleaned_data if self.valid else {}

    def time_bounds(self) -> tuple[datetime | None, datetime | None]:
        """(since, until) from the quick range or the explicit fields."""
        since, until = self.data.get("since"), self.data.get("until")
        quick = self.data.get("range")
        if quick in QUICK_RANGES:
            since = self.now - QUICK_RANGES[quick]
        return since, until

    def filters(self) -> Q:
        """Every filter as one Q (empty when the form is invalid: show nothing)."""
        if not self.valid:
            return Q(pk__in=[])
        d = self.data
        q = Q()
        if d.get("category"):
            q &= category_q(d["category"])
        if d.get("source"):
            q &= Q(source=d["source"])
        if d.get("collector"):
            q &= Q(source__collector=d["collector"])
        since, until = self.time_bounds()
        if since:
            q &= Q(message_time__gte=since)
        if until:
            q &= Q(message_time__lte=until)
        if d.get("event_type"):
            q &= Q(event_type=d["event_type"])
        if d.get("risk_level") is not None:
            q &= Q(risk_level=d["risk_level"])
        if d.get("user_email"):
            q &= Q(user_email__iexact=d["user_email"])
        if d.get("q"):
            q &= Q(raw__icontains=d["q"])
        return q

    def queryset(self) -> QuerySet[LogMessage]:
        """Matching messages, newest first (the export reads this as is)."""
        return LogMessage.objects.filter(self.filters()).order_by(
            "-message_time", "-id"
        )

    def page(
        self, after: Cursor | None, before: Cursor | None, size: int = PAGE_SIZE
    ) -> Page:
        """A keyset page: older than `after`, or newer than `before`.

        One query of size+1 rows tells whether another page exists, so no page
        ever counts the matching rows.
        """
        qs = self.queryset()
        if before is not None:
            newer = Q(message_time__gt=before.time) | Q(
                message_time=before.time, pk__gt=before.pk
            )
            rows = list(qs.filter(newer).order_by("message_time", "id")[: size + 1])
            more_newer = len(rows) > size
            rows = rows[:size][::-1]
            return Page(
                rows,
                older=_cursor(rows[-1]) if rows else None,
                newer=_cursor(rows[0]) if rows and more_newer else None,
            )
        if after is not None:
            qs = qs.filter(
                Q(message_time__lt=after.time)
                | Q(message_time=after.time, pk__lt=after.pk)
            )
        rows = list(qs[: size + 1])
        more_older = len(rows) > size
        rows = rows[:size]
        return Page(
            rows,
            older=_cursor(rows[-1]) if rows and more_older else None,
            newer=_cursor(rows[0]) if rows and after is not None else None,
        )

    def chart_window(self) -> tuple[date, date]:
        """The days the chart covers: the filter's range, clamped to a year."""
        since, until = self.time_bounds()
        last = (until or self.now).astimezone(UTC).date()
        first = (
            since.astimezone(UTC).date()
            if since
            else last - timedelta(days=DEFAULT_CHART_DAYS - 1)
        )
        first = max(first, last - timedelta(days=MAX_CHART_DAYS - 1))
        return min(first, last), last

    def per_day(self) -> list[tuple[date, int]]:
        """Messages per UTC day over the chart window, zero-filled, one query."""
        first, last = self.chart_window()
        start = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
        end = datetime.combine(
            last + timedelta(days=1), datetime.min.time(), tzinfo=UTC
        )
        rows = (
            LogMessage.objects.filter(self.filters())
            .filter(message_time__gte=start, message_time__lt=end)
            .annotate(day=TruncDate("message_time", tzinfo=UTC))
            .values("day")
            .annotate(n=Count("id"))
            .order_by()
        )
        counts = {_as_date(r["day"]): r["n"] for r in rows}
        days = (last - first).days + 1
        return [
            (first + timedelta(days=i), counts.get(first + timedelta(days=i), 0))
            for i in range(days)
        ]


def _cursor(row: LogMessage) -> Cursor:
    return Cursor(row.message_time, row.pk)


def _as_date(value) -> date:
    """TruncDate yields a date (or an ISO string on some SQLite builds)."""
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


class HealthEventFilterForm(forms.Form):
    """Filters of the Health Events page (GET parameters, all optional)."""

    SORTS = {
        "last_seen": "last_seen",
        "first_seen": "first_seen",
        "severity": "severity",
        "event_name": "event_name",
        "count": "count",
        "resolved_at": "resolved_at",
    }

    severity = forms.ChoiceField(
        required=False, choices=[("", "Any severity"), *Severity.choices]
    )
    event_name = forms.ChoiceField(
        label="Event name",
        required=False,
        choices=[("", "Any event"), *HealthEventName.choices],
    )
    collector = forms.ModelChoiceField(
        queryset=HostedCollector.objects.all(),
        required=False,
        empty_label="Any collector",
    )
    source = forms.ModelChoiceField(
        queryset=Source.objects.select_related("collector"),
        required=False,
        empty_label="Any source",
    )
    status = forms.ChoiceField(
        required=False,
        choices=[("", "Open and resolved"), ("open", "Open"), ("resolved", "Resolved")],
    )
    since = forms.DateTimeField(
        label="Last seen from (UTC)",
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    until = forms.DateTimeField(
        label="to (UTC)",
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    sort = forms.CharField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["source"].label_from_instance = lambda s: (
            f"{s.collector.name} / {s.name}"
        )

    def order_by(self) -> list[str]:
        """The requested sort (`-` for descending) if allowed, else newest first."""
        sort = (self.cleaned_data.get("sort") or "") if self.is_valid() else ""
        name = sort.lstrip("-")
        if name not in self.SORTS:
            return ["-last_seen", "-id"]
        prefix = "-" if sort.startswith("-") else ""
        return [f"{prefix}{self.SORTS[name]}", f"{prefix}id"]

    def filter(self, qs: QuerySet[HealthEvent]) -> QuerySet[HealthEvent]:
        """Apply the valid filters; an invalid form shows nothing, not everything."""
        if not self.is_valid():
            return qs.none()
        d = self.cleaned_data
        if d["severity"]:
            qs = qs.filter(severity=d["severity"])
        if d["event_name"]:
            qs = qs.filter(event_name=d["event_name"])
        if d["collector"]:
            qs = qs.for_collector(d["collector"])
        if d["source"]:
            qs = qs.filter(source=d["source"])
        if d["status"] == "open":
            qs = qs.open()
        elif d["status"] == "resolved":
            qs = qs.filter(resolved_at__isnull=False)
        if d["since"]:
            qs = qs.filter(last_seen__gte=d["since"])
        if d["until"]:
            qs = qs.filter(last_seen__lte=d["until"])
        return qs.order_by(*self.order_by())

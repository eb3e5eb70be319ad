"""Message search: the filter form, the query it builds, keyset pages and the
per-day counts behind the chart.

The messages page, its CSV/JSON-lines export and the chart all read one
`MessageSearch`, so what a user sees is exactly what they export. Queries stay
index-friendly on a million rows: a category pattern becomes the list of
matching categories (an IN over `msg_category_time`), and pages are keyset pages over
(`message_time`, `id`) so no page ever counts the whole table.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django import forms
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Count, Q, QuerySet
from django.forms.utils import flatatt
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from collectors.choices import HealthEventName, Severity
from collectors.knowbe4 import records
from collectors.message_stats import as_date, utc_day
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


# Above this many distinct categories the database matches patterns itself.
MAX_EXPANDED_CATEGORIES = 200


def category_q(pattern: str, known: list[str] | None = None) -> Q:
    """Translate a Sumo-style `_sourceCategory` pattern into a filter.

    As in Sumo, matching ignores case and `*` stands for any run of characters
    (`Security/*`, `*/KnowBe4`). A deployment has few distinct categories, so
    they are listed first by a loose index scan (`known_categories`) and the
    pattern is matched against that list here: the filter becomes
    `category IN (...)`, an equality on the first column of
    `msg_category_time`, whose second column then serves a time range or the
    newest-first order, whatever the pattern. With very many categories the
    database matches instead (case-insensitive LIKE or regex, no index).
    A caller matching many patterns at once passes `known` (listed once).
    """
    if pattern.strip("*") == "":
        return Q()
    known = known_categories() if known is None else known
    if len(known) <= MAX_EXPANDED_CATEGORIES:
        matcher = category_matcher(pattern)
        return Q(source_category__in=[c for c in known if matcher.fullmatch(c)])
    head = pattern[:-1]
    if "*" not in pattern:
        return Q(source_category__iexact=pattern)
    if pattern.endswith("*") and "*" not in head:
        return Q(source_category__istartswith=head)
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return Q(source_category__iregex=f"^{regex}$")


def category_matcher(pattern: str) -> re.Pattern:
    """A case-insensitive regular expression for a `*` pattern."""
    return re.compile(
        ".*".join(re.escape(part) for part in pattern.split("*")),
        re.IGNORECASE | re.DOTALL,
    )


def known_categories() -> list[str]:
    """The distinct categories of the stored messages, in one query.

    A recursive CTE hops from one category to the next through the index
    (one seek per distinct value), so it costs the number of categories, not
    the number of messages. Stops after MAX_EXPANDED_CATEGORIES + 1.
    """
    table = LogMessage._meta.db_table
    sql = f"""
        WITH RECURSIVE cats(c) AS (
            SELECT (SELECT MIN(source_category) FROM {table})
            UNION ALL
            SELECT (SELECT MIN(source_category) FROM {table}
                    WHERE source_category > cats.c)
            FROM cats WHERE cats.c IS NOT NULL
        )
        SELECT c FROM cats WHERE c IS NOT NULL LIMIT %s
    """  # noqa: S608 - the table name is the model's own; values are parameters
    with connection.cursor() as cur:
        cur.execute(sql, [MAX_EXPANDED_CATEGORIES + 1])
        return [row[0] for row in cur.fetchall()]


# Times a filter accepts: one year inside what `datetime` can hold, so that
# moving the bound by a day or a time-zone offset can never overflow.
MIN_YEAR, MAX_YEAR = 2, 9998
# Ids from a URL: ASCII decimal that fits a signed 64-bit column.
MAX_ID = 2**63 - 1
_ID = re.compile(r"[0-9]{1,19}")


def parse_id(text: str) -> int | None:
    """An id from a URL, or None for anything else.

    `str.isdigit()` accepts "²" and "١" (which `int()` refuses or reads as
    another number) and Python's int has no upper bound while the database's
    does: only ASCII digits within 63 bits pass.
    """
    if not _ID.fullmatch(text):
        return None
    value = int(text)
    return value if value <= MAX_ID else None


class ModelIdsField(forms.ModelMultipleChoiceField):
    """A ModelMultipleChoiceField that checks its ids before any query.

    Django looks the chosen ids up with `pk__in`, where (unlike `pk=`) an id
    past 63 bits overflows the database's integer: a 500. Each id must pass
    `parse_id` first, else the field's own "not a valid value" message.
    """

    def _check_values(self, value):
        if self.to_field_name is None:
            for pk in value:
                if parse_id(str(pk)) is None:
                    raise ValidationError(
                        self.error_messages["invalid_pk_value"],
                        code="invalid_pk_value",
                        params={"pk": pk},
                    )
        return super()._check_values(value)


def in_range(moment: datetime) -> datetime | None:
    """`moment` in UTC if its year is within MIN_YEAR..MAX_YEAR, else None."""
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+23:59 is before year 1 in UTC.
        return None
    return utc if MIN_YEAR <= utc.year <= MAX_YEAR else None


class TimeFilterField(forms.DateTimeField):
    """An optional UTC time filter that refuses years the database, the
    chart's day arithmetic or a time-zone conversion cannot hold."""

    widget = forms.DateTimeInput(attrs={"type": "datetime-local"})

    def to_python(self, value):
        moment = super().to_python(value)
        if moment is None:
            return None
        utc = in_range(moment)
        if utc is None:
            raise ValidationError(
                f"Enter a time between the years {MIN_YEAR} and {MAX_YEAR}.",
                code="out_of_range",
            )
        return utc


def time_field(label: str) -> forms.DateTimeField:
    """An optional UTC time filter with the browser's date-time picker."""
    return TimeFilterField(label=label, required=False)


class FastSelect(forms.Select):
    """A <select> rendered in one pass.

    Django's stock widget renders a template per option, which costs about a
    second for the thousands of sources a large installation has; this one
    builds the same (escaped) markup with one join.
    """

    def render(self, name, value, attrs=None, renderer=None) -> str:
        final = self.build_attrs(self.attrs, attrs)
        final["id"] = final.get("id") or f"id_{name}"
        chosen = "" if value is None else str(value)
        options = "".join(
            '<option value="{}"{}>{}</option>'.format(
                html.escape(str(key)),
                " selected" if str(key) == chosen else "",
                html.escape(str(label)),
            )
            for key, label in self.choices
        )
        return format_html(
            '<select name="{}"{}>{}</select>',
            name,
            flatatt(final),
            mark_safe(options),  # noqa: S308 - every key and label escaped above
        )


def _source_choices() -> list[tuple[str, str]]:
    """Every source as "collector / source", from one narrow query."""
    rows = Source.objects.order_by("collector__name", "name").values_list(
        "pk", "collector__name", "name"
    )
    return [("", "Any source")] + [(str(pk), f"{c} / {n}") for pk, c, n in rows]


def _collector_choices() -> list[tuple[str, str]]:
    rows = HostedCollector.objects.order_by("name").values_list("pk", "name")
    return [("", "Any collector")] + [(str(pk), name) for pk, name in rows]


def resource_field(kind: str) -> forms.TypedChoiceField:
    """A source or collector dropdown whose cleaned value is an id (or None).

    Its choices are filled once per form by `ResourceChoicesMixin` (a callable
    would be queried again for validation and for rendering).
    """
    return forms.TypedChoiceField(
        label=kind.capitalize(),
        required=False,
        coerce=int,
        empty_value=None,
        widget=FastSelect,
    )


class ResourceChoicesMixin:
    """Fills the `source` and `collector` dropdowns (one query each) and
    names the user's time zone in the time filters' labels."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["source"].choices = _source_choices()
        self.fields["collector"].choices = _collector_choices()
        # Times typed in a filter are read in the user's zone: say which.
        zone = timezone.get_current_timezone_name()
        for f in self.fields.values():
            if isinstance(f, forms.DateTimeField) and f.label.endswith("(UTC)"):
                f.label = f.label.replace("(UTC)", f"({zone})")


class MessageFilterForm(ResourceChoicesMixin, forms.Form):
    """The filters of the messages page (all optional, all GET parameters)."""

    category = forms.CharField(
        label="Source category",
        required=False,
        max_length=1024,
        help_text="Use * as a wildcard, e.g. Security/*",
    )
    source = resource_field("source")
    collector = resource_field("collector")
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
    since = time_field("From (UTC)")
    until = time_field("To (UTC)")
    data_type = forms.ChoiceField(
        label="Data type",
        required=False,
        choices=[("", "Any data type"), *records.MESSAGE_TYPES.items()],
    )
    event_type = forms.CharField(label="Event type", required=False, max_length=255)
    risk_level = forms.IntegerField(
        label="Risk level", required=False, min_value=-10, max_value=10
    )
    user_email = forms.CharField(label="User email", required=False, max_length=254)
    q = forms.CharField(label="Text", required=False, max_length=200)

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
        number = parse_id(pk)
        try:
            moment = datetime.fromisoformat(stamp)
        except ValueError:
            return None
        if timezone.is_naive(moment):
            moment = moment.replace(tzinfo=UTC)
        moment = in_range(moment)
        if number is None or moment is None:
            return None
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
        self._filters: Q | None = None
        self.categories: list[str] | None = None

    @classmethod
    def saved(cls, data: dict, categories: list[str] | None = None) -> MessageSearch:
        """A search from filters validated earlier by this form and stored
        (a log monitor's), without the form's dropdown queries: the monitor
        check builds a hundred of these a minute. `categories` is the
        known_categories() list, read once for all of them."""
        search = cls.__new__(cls)
        search.form, search.now, search.valid = None, timezone.now(), True
        search.data, search._filters, search.categories = dict(data), None, categories
        return search

    def time_bounds(self) -> tuple[datetime | None, datetime | None]:
        """(since, until) from the quick range or the explicit fields."""
        since, until = self.data.get("since"), self.data.get("until")
        quick = self.data.get("range")
        if quick in QUICK_RANGES:
            since = self.now - QUICK_RANGES[quick]
        return since, until

    def filters(self) -> Q:
        """Every filter as one Q (empty when the form is invalid: show nothing).

        Built once per search: the page, the chart and the export share it.
        """
        if self._filters is None:
            self._filters = self._build_filters()
        return self._filters

    def _build_filters(self) -> Q:
        if not self.valid:
            return Q(pk__in=[])
        d = self.data
        q = Q()
        if d.get("category"):
            q &= category_q(d["category"], self.categories)
        if d.get("source"):
            q &= Q(source_id=d["source"])
        if d.get("collector"):
            q &= Q(source__collector_id=d["collector"])
        since, until = self.time_bounds()
        if since:
            q &= Q(message_time__gte=since)
        if until:
            q &= Q(message_time__lte=until)
        if d.get("data_type"):
            q &= Q(data_type=d["data_type"])
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
            ids = _ids(qs.filter(newer).order_by("message_time", "id"), size + 1)
            more_newer = len(ids) > size
            rows = _rows(ids[:size])[::-1]
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
        ids = _ids(qs, size + 1)
        more_older = len(ids) > size
        rows = _rows(ids[:size])
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
            .annotate(day=utc_day())
            .values("day")
            .annotate(n=Count("id"))
            .order_by()
        )
        counts = {as_date(r["day"]): r["n"] for r in rows}
        days = (last - first).days + 1
        return [
            (first + timedelta(days=i), counts.get(first + timedelta(days=i), 0))
            for i in range(days)
        ]


def _ids(qs: QuerySet[LogMessage], limit: int) -> list[int]:
    """The first ids of a page: (category, time, id) are all in an index, so
    this reads no table row; the rows are fetched for the shown ids only."""
    return list(qs.values_list("pk", flat=True)[:limit])


def _rows(ids: list[int]) -> list[LogMessage]:
    """Messages by id, in the order of `ids`."""
    found = LogMessage.objects.in_bulk(ids)
    return [found[pk] for pk in ids if pk in found]


def _cursor(row: LogMessage) -> Cursor:
    return Cursor(row.message_time, row.pk)


def _deleted_resources() -> list[tuple]:
    """(type, id, name, collector id, collector name) of every deleted source
    or collector that health events name, from one query."""
    return list(
        HealthEvent.objects.filter(
            Q(resource_type="Source", source__isnull=True)
            | Q(resource_type="Collector", collector__isnull=True)
        )
        .values_list(
            "resource_type",
            "resource_id",
            "resource_name",
            "collector_ref",
            "collector_name",
        )
        .order_by()
        .distinct()
    )


class HealthEventFilterForm(ResourceChoicesMixin, forms.Form):
    """Filters of the Health Events page (GET parameters, all optional).

    The source and collector dropdowns also offer deleted ones that still
    have events ("(deleted)"): history outlives its resource, and the filters
    match the stored resource ids, not the live links.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        live_collectors = {key for key, _ in self.fields["collector"].choices}
        sources, collectors = {}, {}
        for kind, pk, name, c_pk, c_name in _deleted_resources():
            if kind == "Source":
                sources[str(pk)] = f"{c_name} / {name} (deleted)"
            if c_pk is not None and str(c_pk) not in live_collectors:
                collectors.setdefault(str(c_pk), f"{c_name} (deleted)")
        self.fields["source"].choices += sorted(sources.items(), key=lambda c: c[1])
        self.fields["collector"].choices += sorted(
            collectors.items(), key=lambda c: c[1]
        )
        from collectors import health

        types = sorted(health.resource_models())
        self.fields["resource_type"].choices = [("", "Any resource")] + [
            (t, t) for t in types
        ]

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
    resource_type = forms.ChoiceField(label="Resource type", required=False)
    collector = resource_field("collector")
    source = resource_field("source")
    status = forms.ChoiceField(
        required=False,
        choices=[("", "Open and resolved"), ("open", "Open"), ("resolved", "Resolved")],
    )
    since = time_field("Last seen from (UTC)")
    until = time_field("to (UTC)")
    sort = forms.CharField(required=False, widget=forms.HiddenInput)

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
        if d["resource_type"]:
            qs = qs.filter(resource_type=d["resource_type"])
        if d["collector"]:
            qs = qs.for_collector(d["collector"])
        if d["source"]:
            qs = qs.for_resource("Source", d["source"])
        if d["status"] == "open":
            qs = qs.open()
        elif d["status"] == "resolved":
            qs = qs.filter(resolved_at__isnull=False)
        if d["since"]:
            qs = qs.filter(last_seen__gte=d["since"])
        if d["until"]:
            qs = qs.filter(last_seen__lte=d["until"])
        return qs.order_by(*self.order_by())

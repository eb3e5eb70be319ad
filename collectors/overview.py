"""The Overview dashboard: what the collected KnowBe4 data says, at a glance.

`OverviewFilter` validates the page's filters (a time range and a collector,
source or category scope) into a filtered `LogMessage` queryset; each panel is
then one aggregate of `message_stats.LogMessageQuerySet` over it, so the page
runs a fixed number of GROUP BY queries whatever the data. Every figure
carries the Messages page query that lists the messages behind it: the two
pages share parameter names (`range`, `since`, `until`, `collector`,
`source`, `category`) and their meaning.

`PANELS` is the list of panels in page order. The KnowBe4 KMSAT Reporting
panels (phishing, people, risk drift, training) read the latest version of
each record in the range (see message_stats); each returns None, and is not
drawn, when the range and scope hold none of its data types.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import urlencode

from django import forms
from django.db.models import Q, QuerySet
from django.urls import reverse
from django.utils import timezone

from collectors import status
from collectors.choices import SourceState
from collectors.knowbe4 import records
from collectors.message_stats import CLICKED_TEXT, RECIPIENT_TYPES
from collectors.models import HealthEvent, LogMessage, Source
from collectors.search import (
    QUICK_RANGES,
    ResourceChoicesMixin,
    category_matcher,
    category_q,
    resource_field,
    time_field,
)

DEFAULT_RANGE = "30d"
EVENTS = "events"  # the data type of KnowBe4 user events (the seed's source)
REPORTING_TYPES = [t for t in records.MESSAGE_TYPES if t != EVENTS]
MAX_DAYS = 366
TOP_USERS = 10
# Event types drawn as their own colour in the stacked chart; the rest are
# summed as "Other" so the legend stays readable.
STACKED_TYPES = 7
MAX_NEW_TYPES = 20
UNHEALTHY_SHOWN = 10


class OverviewFilterForm(ResourceChoicesMixin, forms.Form):
    """The Overview's filters: GET parameters named as on the Messages page."""

    range = forms.ChoiceField(
        label="Time range",
        required=False,
        choices=[
            ("24h", "Last 24 hours"),
            ("7d", "Last 7 days"),
            ("30d", "Last 30 days"),
            ("", "From / To below"),
        ],
    )
    since = time_field("From")
    until = time_field("To")
    collector = resource_field("collector")
    source = resource_field("source")
    category = forms.CharField(
        label="Source category",
        required=False,
        max_length=1024,
        help_text="Use * as a wildcard, e.g. Security/*",
    )

    def __init__(self, params, *args, **kwargs) -> None:
        params = params.copy()
        if not any(params.get(k) for k in ("range", "since", "until")):
            params["range"] = DEFAULT_RANGE
        super().__init__(params, *args, **kwargs)
        zone = timezone.get_current_timezone_name()
        self.fields["since"].label = f"From ({zone})"
        self.fields["until"].label = f"To ({zone})"

    def clean(self) -> dict:
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if not data.get("range") and not since:
            self.add_error("since", "Choose a time range, or a start time.")
        if since and until and since > until:
            self.add_error("until", "The end of the range is before its start.")
        if since and (until or timezone.now()) - since > timedelta(days=MAX_DAYS):
            self.add_error("since", f"The Overview covers at most {MAX_DAYS} days.")
        return data


@dataclass
class OverviewFilter:
    """Validated filters: the time window, the scope and the messages in both."""

    form: OverviewFilterForm
    now: datetime
    since: datetime | None = None
    until: datetime | None = None
    scope: Q = field(default_factory=Q)
    _reporting: frozenset | None = None

    @classmethod
    def from_params(cls, params, now: datetime | None = None) -> OverviewFilter:
        """Parse GET parameters; an invalid form selects no message at all."""
        form = OverviewFilterForm(params)
        result = cls(form=form, now=now or timezone.now())
        if not form.is_valid():
            result.scope = Q(pk__in=[])
            return result
        d = form.cleaned_data
        if d["range"] in QUICK_RANGES:
            result.since, result.until = result.now - QUICK_RANGES[d["range"]], None
        else:
            result.since, result.until = d["since"], d["until"]
        if d["category"]:
            result.scope &= category_q(d["category"])
        if d["source"]:
            result.scope &= Q(source_id=d["source"])
        if d["collector"]:
            result.scope &= Q(source__collector_id=d["collector"])
        return result

    @property
    def valid(self) -> bool:
        return self.form.is_valid()

    @property
    def end(self) -> datetime:
        return self.until or self.now

    def messages(self) -> QuerySet[LogMessage]:
        """The messages in scope and in the time window, unordered."""
        qs = LogMessage.objects.filter(self.scope)
        if self.since:
            qs = qs.filter(message_time__gte=self.since)
        if self.until:
            qs = qs.filter(message_time__lte=self.until)
        return qs.order_by()

    def events(self) -> QuerySet[LogMessage]:
        """The user events in scope and window: the user-event panels count
        these only, never the Reporting record versions stored beside them."""
        return self.messages().filter(data_type=EVENTS)

    def events_url(self, **extra) -> str:
        """The Messages page listing the user events behind a figure."""
        return self.messages_url(data_type=EVENTS, **extra)

    def reporting_types(self) -> frozenset[str]:
        """The Reporting data types with a version in range and scope: ONE
        query for the page (seeks in `msg_overview`, led by the data type), so
        the Reporting panels are drawn (and their aggregates run) only where
        their data exists."""
        if self._reporting is None:
            self._reporting = frozenset(
                self.messages()
                .filter(data_type__in=REPORTING_TYPES)
                .values_list("data_type", flat=True)
                .distinct()
            )
        return self._reporting

    def days(self) -> list[date]:
        """The UTC days the window touches, oldest first."""
        if not self.valid or self.since is None:
            return []
        first = self.since.astimezone(UTC).date()
        last = self.end.astimezone(UTC).date()
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]

    def messages_url(self, **extra) -> str:
        """The Messages page listing the messages behind a figure."""
        d = self.form.cleaned_data if self.valid else {}
        params: dict = {}
        if d.get("range") in QUICK_RANGES and "since" not in extra:
            params["range"] = d["range"]
        elif "since" not in extra:
            params["since"] = local_input(self.since)
            if self.until:
                params["until"] = local_input(self.until)
        for name in ("collector", "source", "category"):
            if d.get(name):
                params[name] = d[name]
        params.update(extra)
        clean = {k: v for k, v in params.items() if v not in (None, "")}
        return f"{reverse('messages')}?{urlencode(clean)}"

    def day_url(self, day: date, **extra) -> str:
        """Messages of one UTC day (inside the window) and any extra filter."""
        start = datetime.combine(day, time.min, tzinfo=UTC)
        end = start + timedelta(days=1) - timedelta(seconds=1)
        if self.since:
            start = max(start, self.since)
        end = min(end, self.end)
        return self.messages_url(
            since=local_input(start), until=local_input(end), **extra
        )


def local_input(moment: datetime | None) -> str:
    """A time as the Messages page's From/To fields read it: in the user's
    time zone, to the second, so a link selects exactly the counted rows."""
    if moment is None:
        return ""
    return timezone.localtime(moment).strftime("%Y-%m-%dT%H:%M:%S")


# ---- panels ---------------------------------------------------------------


def totals(view: OverviewFilter) -> dict:
    """Headline figures of the window."""
    return view.events().totals()


def events_per_day(view: OverviewFilter) -> dict:
    """Messages per UTC day stacked by event type (the busiest types by name,
    the rest as "Other"), zero-filled over the window."""
    rows = view.events().per_day_by_type()
    by_type: dict[str, int] = {}
    for _, kind, n in rows:
        by_type[kind] = by_type.get(kind, 0) + n
    ranked = sorted(by_type, key=lambda k: (-by_type[k], k))
    named = [kind for kind in ranked[:STACKED_TYPES] if kind]
    series = [*named, *(["Other"] if len(ranked) > len(named) else [])]
    cells: dict[tuple[date, str], int] = {}
    for day, kind, n in rows:
        label = kind if kind in named else "Other"
        cells[(day, label)] = cells.get((day, label), 0) + n
    days = view.days()
    return {
        "series": [
            {
                "name": name or "(no type)",
                "key": name,
                "total": sum(cells.get((d, name), 0) for d in days),
                "url": view.events_url(event_type=name) if name in named else "",
            }
            for name in series
        ],
        "days": [
            {
                "day": d,
                "counts": [cells.get((d, name), 0) for name in series],
                "url": view.day_url(d, data_type=EVENTS),
            }
            for d in days
        ],
    }


def risk_distribution(view: OverviewFilter) -> list[dict]:
    """Messages per risk level, each with the link to those messages."""
    return [
        {
            "level": level,
            "count": n,
            "url": view.events_url(risk_level=level) if level is not None else "",
        }
        for level, n in view.events().risk_distribution()
    ]


def top_users(view: OverviewFilter) -> list[dict]:
    """The ten users with the highest summed risk, linked to their messages."""
    rows = view.events().top_users_by_risk(TOP_USERS)
    for row in rows:
        row["url"] = view.events_url(user_email=row["user_email"])
    return rows


def new_event_types(view: OverviewFilter) -> dict:
    """Event types first seen in the window (within the chosen scope)."""
    if not view.valid or view.since is None:
        return {"rows": [], "more": 0}
    scope = view.scope & Q(data_type=EVENTS)
    rows = view.events().new_event_types(view.since, scope)
    for row in rows:
        row["url"] = view.events_url(event_type=row["event_type"])
    return {"rows": rows[:MAX_NEW_TYPES], "more": max(0, len(rows) - MAX_NEW_TYPES)}


def sources_health(view: OverviewFilter) -> dict:
    """Every source in scope by health look, and the unhealthy ones by name.

    Two queries whatever the number of sources: the sources' states and the
    open health event counts grouped by source.
    """
    d = view.form.cleaned_data if view.valid else {}
    sources = Source.objects.select_related("collector").only(
        "id", "name", "state", "collector__name"
    )
    if d.get("source"):
        sources = sources.filter(pk=d["source"])
    if d.get("collector"):
        sources = sources.filter(collector_id=d["collector"])
    if d.get("category"):
        sources = sources.only("id", "name", "state", "category", "collector__name")
    matcher = category_matcher(d["category"]) if d.get("category") else None
    counts = HealthEvent.objects.open().severity_counts(per="source_id")
    looks = {look.key: 0 for look in _LOOKS}
    unhealthy = []
    for source in sources.order_by("collector__name", "name", "pk"):
        if matcher and not matcher.fullmatch(source.category):
            continue
        errors, warnings = counts.get(source.pk, (0, 0))
        look = status.health_look(errors, warnings, neutral=source.is_neutral)
        looks[look.key] += 1
        if look in (status.ERROR, status.WARNING):
            unhealthy.append(
                {"source": source, "look": look, "errors": errors, "warnings": warnings}
            )
    unhealthy.sort(key=lambda r: (r["look"] != status.ERROR, -r["errors"]))
    return {
        "looks": [{"look": look, "count": looks[look.key]} for look in _LOOKS],
        "total": sum(looks.values()),
        "unhealthy": unhealthy[:UNHEALTHY_SHOWN],
        "more_unhealthy": max(0, len(unhealthy) - UNHEALTHY_SHOWN),
        "stopping": SourceState.STOPPING,
    }


REPORTING_ROWS = 15


def _record_q(key: str, value: object) -> str:
    """The Messages page's text search for records whose canonical JSON
    (compact, keys sorted) holds `"key":value` followed by another key: the
    comma stops `"pst_id":12` from matching 123."""
    return f"{json.dumps(key)}:{json.dumps(value, ensure_ascii=False)},"


def phishing(view: OverviewFilter) -> dict | None:
    """Each security test's phish-prone percentage (the chart over time is
    the same rows by start), its clicked / data entered / reported counts,
    and the report rate: reported over delivered, across the tests. Callback
    tests count beside email tests, each row linking to its own data type."""
    kinds = view.reporting_types() & set(records.TEST_RECIPIENTS)
    if not kinds:
        return None
    tests = view.messages().phishing_tests()
    for t in tests:
        t["rate"] = _percent(t["reported"], t["delivered"])
        t["callback"] = t["data_type"] == "callback_test"
        t["url"] = view.messages_url(
            data_type=t["data_type"], q=_record_q("pst_id", t["pst_id"])
        )
        t["recipients_url"] = view.messages_url(
            data_type=records.TEST_RECIPIENTS[t["data_type"]],
            q=_record_q("pst_id", t["pst_id"]),
        )
    delivered = sum(t["delivered"] for t in tests)
    reported = sum(t["reported"] for t in tests)
    if len(kinds) == 1:
        (kind,) = kinds
        url = view.messages_url(data_type=kind)
    else:  # both kinds: the key only a test's records hold
        url = view.messages_url(q=json.dumps("phish_prone_percentage") + ":")
    return {
        "tests": tests,
        "delivered": delivered,
        "reported": reported,
        "report_rate": _percent(reported, delivered),
        "url": url,
    }


def people(view: OverviewFilter) -> dict | None:
    """Repeat clickers, and clickers with training not completed (clicks in
    email and callback tests alike)."""
    if not view.reporting_types() & set(RECIPIENT_TYPES):
        return None
    repeat = view.messages().repeat_clickers()
    untrained = view.messages().clickers_untrained()
    for row in repeat:
        # Both recipient types: the versions of this user's with a click.
        row["url"] = view.messages_url(user_email=row["user_email"], q=CLICKED_TEXT)
    for row in untrained:
        row["url"] = view.messages_url(
            data_type="training_enrollment", user_email=row["user_email"]
        )
    return {
        "repeat": repeat[:REPORTING_ROWS],
        "repeat_total": len(repeat),
        "untrained": untrained[:REPORTING_ROWS],
        "untrained_total": len(untrained),
    }


def risk_drift(view: OverviewFilter) -> dict | None:
    """The largest rises in users' risk scores between their first and
    latest versions in the range."""
    if "user" not in view.reporting_types():
        return None
    rows = view.messages().risk_drift()
    for row in rows:
        row["url"] = view.messages_url(data_type="user", user_email=row["user_email"])
    return {"rows": rows[:REPORTING_ROWS], "total": len(rows)}


def training(view: OverviewFilter) -> list[dict] | None:
    """Completion and past due per training campaign."""
    if "training_enrollment" not in view.reporting_types():
        return None
    rows = view.messages().training_by_campaign()
    for row in rows:
        row["completion"] = _percent(row["completed"], row["enrolled"])
        row["url"] = view.messages_url(
            data_type="training_enrollment",
            q=_record_q("campaign_name", row["campaign"]),
        )
    return rows


def _percent(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None


_LOOKS = (status.ERROR, status.WARNING, status.HEALTHY, status.NEUTRAL)

# Page order. Each panel reads the filter and returns its template context.
PANELS: list[tuple[str, Callable[[OverviewFilter], object]]] = [
    ("totals", totals),
    ("events_per_day", events_per_day),
    ("risk", risk_distribution),
    ("top_users", top_users),
    ("new_types", new_event_types),
    ("sources", sources_health),
    ("phishing", phishing),
    ("people", people),
    ("risk_drift", risk_drift),
    ("training", training),
]


def build(view: OverviewFilter) -> dict:
    """Every panel's data, in page order (empty data when the form is bad)."""
    return {name: panel(view) for name, panel in PANELS}

"""The Collection page's refresh endpoint: resources' states and looks.

The page polls this every few seconds while it is visible and updates its
state labels and status icons in place. It names the rows it shows
(`?collectors=1,2&sources=7`), so the answer covers one page, not the whole
installation; without parameters every resource is returned. Three queries
whatever the numbers: sources, collectors, and the open health events grouped
by resource and severity (open events are few: at most one per source and
event name).
"""

from __future__ import annotations

from collections import Counter

from django.db.models import Count, Q
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from collectors import status
from collectors.choices import Severity, SourceState
from collectors.models import HealthEvent, HostedCollector, Source
from collectors.permissions import VIEW, require
from collectors.search import parse_id

MAX_IDS = 2000


def _ids(value: str) -> list[int] | None:
    """Comma-separated ids from the URL (junk ignored); None when absent."""
    if not value:
        return None
    parsed = (parse_id(part) for part in value.split(",")[:MAX_IDS])
    return [pk for pk in parsed if pk is not None]


def _open_counts(events) -> tuple[Counter, Counter, Counter, Counter]:
    """Open (errors, warnings) per source and per collector, in one query.

    A collector counts its own events and those of its sources, as its panel
    lists them.
    """
    src_err, src_warn, col_err, col_warn = Counter(), Counter(), Counter(), Counter()
    rows = (
        events.values("source_id", "source__collector_id", "collector_id", "severity")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in rows:
        error = row["severity"] == Severity.ERROR
        if row["source_id"]:
            (src_err if error else src_warn)[row["source_id"]] += row["n"]
        owner = row["collector_id"] or row["source__collector_id"]
        if owner:
            (col_err if error else col_warn)[owner] += row["n"]
    return src_err, src_warn, col_err, col_warn


def _look(errors: int, warnings: int, *, neutral: bool, last_success) -> dict:
    """The JSON twin of the `status_icon` template tag."""
    st = status.health(errors, warnings, neutral=neutral, last_success=last_success)
    return {
        "status": st.look.key,
        "label": st.look.label,
        "colour": st.look.colour,
        "icon": status.icon_url(st.look),
        "errors": errors,
        "warnings": warnings,
        "tooltip": st.tooltip,
        "last_success": last_success.isoformat() if last_success else None,
        "last_success_text": st.last_success_text,
    }


def _scope(request):
    """(sources, collectors, open events) limited to the ids the page names."""
    collector_ids = _ids(request.GET.get("collectors", ""))
    source_ids = _ids(request.GET.get("sources", ""))
    sources = Source.objects.all()
    collectors = HostedCollector.objects.all()
    events = HealthEvent.objects.open()
    if collector_ids is not None or source_ids is not None:
        collector_ids, source_ids = collector_ids or [], source_ids or []
        sources = sources.filter(
            Q(collector_id__in=collector_ids) | Q(pk__in=source_ids)
        )
        collectors = collectors.filter(pk__in=collector_ids)
        events = events.filter(
            Q(collector_id__in=collector_ids)
            | Q(source__collector_id__in=collector_ids)
            | Q(source_id__in=source_ids)
        )
    return sources, collectors, events


@require(VIEW)
@require_GET
def collection_status(request):
    """States and looks of the named (or all) sources and collectors, as JSON."""
    sources_qs, collectors_qs, events = _scope(request)
    src_err, src_warn, col_err, col_warn = _open_counts(events)
    latest: dict[int, object] = {}
    sources = []
    for pk, collector_id, state, last in sources_qs.values_list(
        "pk", "collector_id", "state", "last_success_at"
    ).order_by():
        if last and (latest.get(collector_id) is None or last > latest[collector_id]):
            latest[collector_id] = last
        neutral = state in (SourceState.PENDING, SourceState.STOPPING)
        sources.append(
            {
                "id": pk,
                "state": state,
                "state_label": SourceState(state).label,
                **_look(src_err[pk], src_warn[pk], neutral=neutral, last_success=last),
            }
        )
    collectors = [
        {
            "id": pk,
            **_look(
                col_err[pk], col_warn[pk], neutral=False, last_success=latest.get(pk)
            ),
        }
        for pk in collectors_qs.values_list("pk", flat=True).order_by()
    ]
    return JsonResponse({"sources": sources, "collectors": collectors})

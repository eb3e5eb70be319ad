"""The Collection page's refresh endpoint: every resource's state and look.

The page polls this every few seconds while it is visible and updates its
state labels and status icons in place. Three queries whatever the number of
collectors, sources and health events: sources, collectors, and the open
health events grouped by resource and severity (open events are few: at most
one per source and event name).
"""

from __future__ import annotations

from collections import Counter

from django.db.models import Count
from django.http import JsonResponse
from django.templatetags.static import static
from django.views.decorators.http import require_GET

from collectors import status
from collectors.choices import Severity, SourceState
from collectors.models import HealthEvent, HostedCollector, Source


def _open_counts() -> tuple[Counter, Counter, Counter, Counter]:
    """Open (errors, warnings) per source and per collector, in one query.

    A collector counts its own events and those of its sources, as its panel
    lists them.
    """
    src_err, src_warn, col_err, col_warn = Counter(), Counter(), Counter(), Counter()
    rows = (
        HealthEvent.objects.open()
        .values("source_id", "source__collector_id", "collector_id", "severity")
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
    """The JSON twin of the `health_status` template tag."""
    look = status.health_look(errors, warnings, neutral=neutral)
    return {
        "status": look.key,
        "label": look.label,
        "colour": look.colour,
        "icon": static(look.icon),
        "errors": errors,
        "warnings": warnings,
        "tooltip": status.health_tooltip(errors, warnings),
        "last_success": last_success.isoformat() if last_success else None,
        "last_success_text": status.last_success_text(last_success),
    }


@require_GET
def collection_status(request):
    """States and looks of every source and collector, as JSON."""
    src_err, src_warn, col_err, col_warn = _open_counts()
    latest: dict[int, object] = {}
    sources = []
    for pk, collector_id, state, last in Source.objects.values_list(
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
        for pk in HostedCollector.objects.values_list("pk", flat=True).order_by()
    ]
    return JsonResponse({"sources": sources, "collectors": collectors})

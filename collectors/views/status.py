"""The Collection page's refresh endpoint: the live cells of the rows shown.

The Collection page and the source page poll this every few seconds while
they are visible. They name the rows they show (`?collectors=1,2&sources=7`),
so the answer covers one page, not the whole installation; without parameters
every resource is returned. For each row it returns the rendered cells
(`collectors.cells`, the very functions the pages are drawn with), so the page
swaps markup in place and never rebuilds it. `since` (the `now` of the
previous answer) asks for the states each source passed through meanwhile,
and `gone` names the rows that no longer exist, so the page removes them.
`detail` (the source page's own id) adds that source's page facts
(`views.health.LIVE_FACTS`: checkpoint, freshness, Daily quota...), which
change while the page is open.

A constant number of queries whatever the numbers: collectors and sources with
their health annotations, their activity, backfill counts and transitions
(and the few of the `detail` source's facts).
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Q
from django.http import JsonResponse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET

from collectors import cells
from collectors.choices import SourceState
from collectors.models import Source
from collectors.permissions import VIEW, require
from collectors.search import parse_id
from collectors.views.collection import (
    ROW_COLUMNS,
    collectors_with_health,
    sources_with_health,
)
from collectors.views.health import live_facts

MAX_IDS = 2000
# States passed longer ago than this are history, not news (a tab that was
# hidden for an hour does not replay the hour).
MAX_TRAIL_AGE = timedelta(minutes=2)


def _ids(value: str) -> list[int] | None:
    """Comma-separated ids from the URL (junk ignored); None when absent."""
    if not value:
        return None
    parsed = (parse_id(part) for part in value.split(",")[:MAX_IDS])
    return [pk for pk in parsed if pk is not None]


def _since(value: str, now):
    """The `since` parameter: an ISO time, clamped to MAX_TRAIL_AGE.

    Returns (time or None, error message or None)."""
    if not value:
        return None, None
    try:
        when = parse_datetime(value.replace(" ", "+"))
    except ValueError:
        when = None
    if when is None or timezone.is_naive(when):
        return None, "since: expected an ISO 8601 time with a UTC offset."
    return max(when, now - MAX_TRAIL_AGE), None


def _scope(collector_ids, source_ids):
    """(sources, collectors) limited to the ids the page names."""
    sources = sources_with_health().only(*ROW_COLUMNS["source"]).order_by()
    collectors = collectors_with_health().only(*ROW_COLUMNS["collector"]).order_by()
    if collector_ids is not None or source_ids is not None:
        collector_ids, source_ids = collector_ids or [], source_ids or []
        sources = sources.filter(
            Q(collector_id__in=collector_ids) | Q(pk__in=source_ids)
        )
        collectors = collectors.filter(pk__in=collector_ids)
    return list(sources), list(collectors)


@require(VIEW)
@require_GET
def collection_status(request):
    """The live cells of the named (or all) sources and collectors, as JSON."""
    now = timezone.now()
    since, error = _since(request.GET.get("since", ""), now)
    if error:
        return JsonResponse({"error": error}, status=400)
    detail = request.GET.get("detail", "")
    detail_id = parse_id(detail) if detail else None
    if detail and detail_id is None:
        return JsonResponse({"error": "detail: expected a source id."}, status=400)
    collector_ids = _ids(request.GET.get("collectors", ""))
    source_ids = _ids(request.GET.get("sources", ""))
    sources, collectors = _scope(collector_ids, source_ids)
    data = cells.RowData.load(now, sources, [c.pk for c in collectors], since)
    found_sources = {s.pk for s in sources}
    found_collectors = {c.pk for c in collectors}
    facts = _facts(detail_id, found_sources, now)
    return JsonResponse(
        {
            "now": now.isoformat(),
            "sources": [
                {
                    "id": s.pk,
                    "state": s.state,
                    "state_label": SourceState(s.state).label,
                    "cells": {**cells.source_cells(s, data), **facts.get(s.pk, {})},
                }
                for s in sources
            ],
            "collectors": [
                {"id": c.pk, "cells": cells.collector_cells(c, data)}
                for c in collectors
            ],
            "gone": {
                "sources": [pk for pk in source_ids or [] if pk not in found_sources],
                "collectors": [
                    pk for pk in collector_ids or [] if pk not in found_collectors
                ],
            },
        }
    )


def _facts(detail_id: int | None, found: set[int], now) -> dict[int, dict[str, str]]:
    """`detail=ID` (the source page): that source's page facts too
    (`views.health.live_facts`), when it is among the rows."""
    if detail_id is None or detail_id not in found:
        return {}
    source = Source.objects.select_related("collector").get(pk=detail_id)
    return {detail_id: live_facts(source, now)}

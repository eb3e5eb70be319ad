"""Health views: the Health Events panel fragments, the Health Events page and
its detail view, and the source page with its Restart action."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import pluralize
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from collectors import cells, crypto, governor, health, quarantine, retry
from collectors.models import HealthEvent, HostedCollector, Source
from collectors.permissions import MANAGE, VIEW, require
from collectors.search import HealthEventFilterForm
from collectors.tasks import dispatch_soon
from collectors.views.collection import sources_with_health

EVENTS_PER_PAGE = 50


def _back_to(request, value: str | None) -> str:
    """A page of this site to return to after an action, or "" (anything
    else: another host, a scheme, junk)."""
    value = (value or "").strip()
    if not value.startswith("/") or len(value) > 2000:
        return ""
    safe = url_has_allowed_host_and_scheme(
        value, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    return value if safe else ""


# Quarantined events listed on the source page (the oldest first).
QUARANTINE_SHOWN = 50
# Errors before warnings ("error" < "warning"), then the most recent first.
PANEL_ORDER = ("severity", "-last_seen", "-id")


@require(VIEW)
@require_GET
def source_health(request, pk: int):
    """The Health Events panel of one source (a server-rendered fragment)."""
    source = get_object_or_404(Source.objects.select_related("collector"), pk=pk)
    events = (
        HealthEvent.objects.open()
        .filter(source=source)
        .select_related("source")
        .order_by(*PANEL_ORDER)
    )
    return render(
        request,
        "collectors/_health_panel.html",
        {
            "resource": source,
            "kind": "Source",
            "events": events,
            "history_query": f"source={source.pk}",
            "back_to": _back_to(request, request.GET.get("next")),
        },
    )


@require(VIEW)
@require_GET
def collector_health(request, pk: int):
    """The Health Events panel of a collector: its own and its sources' events."""
    collector = get_object_or_404(HostedCollector, pk=pk)
    events = (
        HealthEvent.objects.open()
        .for_collector(collector)
        .select_related("source")
        .order_by(*PANEL_ORDER)
    )
    return render(
        request,
        "collectors/_health_panel.html",
        {
            "resource": collector,
            "kind": "Collector",
            "events": events,
            "history_query": f"collector={collector.pk}",
            "back_to": _back_to(request, request.GET.get("next")),
        },
    )


@require(VIEW)
@require_GET
def health_events(request):
    """Every health event, open and resolved: filters, sorting, pages.

    A constant number of queries whatever the page shows: the filter
    dropdowns, one COUNT and one page with its resources joined.
    """
    form = HealthEventFilterForm(request.GET)
    ids = form.filter(HealthEvent.objects.all()).values_list("pk", flat=True)
    page = Paginator(ids, EVENTS_PER_PAGE).get_page(request.GET.get("page"))
    page.object_list = _with_resources(list(page.object_list))
    params = request.GET.copy()
    params.pop("page", None)
    sort_params = params.copy()
    sort_params.pop("sort", None)
    return render(
        request,
        "collectors/health_events.html",
        {
            "nav": "health-events",
            "form": form,
            "page": page,
            "query": params.urlencode(),
            "sort_query": sort_params.urlencode(),
            "sort": request.GET.get("sort", "-last_seen"),
        },
    )


def _with_resources(ids: list[int]) -> list[HealthEvent]:
    """The page's events with their resources, in the page's order.

    Paging over bare ids walks only the index (a deep OFFSET over 100,000
    events would otherwise join every skipped row); the joins run for the
    fifty shown.
    """
    found = HealthEvent.objects.select_related(
        "source__collector", "collector"
    ).in_bulk(ids)
    return health.attach_resources([found[pk] for pk in ids if pk in found])


@require(VIEW)
@require_GET
def health_event_detail(request, pk: int):
    """One health event in full, with a link to its resource while it exists
    (the stored name once it is deleted)."""
    event = get_object_or_404(
        HealthEvent.objects.select_related("source__collector", "collector"), pk=pk
    )
    health.attach_resources([event])
    return render(
        request,
        "collectors/health_event_detail.html",
        {"nav": "health-events", "event": event},
    )


def _quota(source: Source) -> dict:
    """The Daily quota block's figures: the governor's plan of the source's
    key (budget, used, left, reset, projection: each figure stated once), and
    when a spent quota lets requests go again; `key_unreadable` instead when
    the stored key cannot be decrypted (a plan of no key would show 0 used).

    The key is decrypted here, server-side, only to compute its fingerprint;
    neither the key nor the fingerprint reaches the page.
    """
    from collectors import ratelimit

    try:
        fingerprint = crypto.key_fingerprint(source.get_api_key())
    except crypto.KeyUnreadable:
        return {"key_unreadable": True}
    return {
        "quota_blocked_until": ratelimit.quota_blocked_until(fingerprint, source.kind),
        **governor.figures(source),
    }


def _freshness(source: Source, now) -> dict:
    """How old the newest stored event is, and how often the window is re-read."""
    from django.utils.timesince import timesince

    newest = (
        source.messages.order_by("-message_time")
        .values_list("message_time", flat=True)
        .first()
    )
    minutes = int(governor.rescan_interval(source).total_seconds() // 60)
    every = f"{minutes // 60} h" if minutes % 60 == 0 else f"{minutes} min"
    return {
        "newest_event": newest,
        "newest_age": timesince(newest, now) if newest else "",
        "rescan_interval_text": every,
    }


# The source page's facts that change while it is open (a run stores events,
# moves the checkpoint, spends the quota, fails): each is a template the page
# includes and the refresh endpoint renders again (`live_facts`,
# `views.status`), keyed by the page's data-live name.
LIVE_FACTS = (
    "state_since",
    "last_success",
    "checkpoint",
    "rescan",
    "freshness",
    "retry_streak",
    "messages_total",
    "quota",
)


def facts_context(source: Source, now) -> dict:
    """What the facts' templates read: the source and its figures."""
    return {
        "source": source,
        "gives_up_at": (
            retry.window_end(source.error_streak_started)
            if source.error_streak_started
            else None
        ),
        "messages_total": source.messages.count(),
        **_quota(source),
        **_freshness(source, now),
    }


def live_facts(source: Source, now) -> dict[str, str]:
    """The source page's facts rendered as the page renders them."""
    context = facts_context(source, now)
    return {
        name: render_to_string(f"collectors/source_facts/{name}.html", context)
        for name in LIVE_FACTS
    }


@require(VIEW)
@require_GET
def source_detail(request, pk: int):
    """What a source is doing: state and timeline, checkpoint, retries, volume."""
    source = get_object_or_404(sources_with_health().select_related("collector"), pk=pk)
    now = timezone.now()
    data = cells.RowData.load(now, [source], [])
    return render(
        request,
        "collectors/source_detail.html",
        {
            "nav": "collection",
            "source": source,
            "transitions": source.transitions.all(),
            "open_events": HealthEvent.objects.open()
            .filter(source=source)
            .select_related("source"),
            "cells": cells.safe(cells.source_cells(source, data)),
            "now": now,
            "is_reporting": source.kind == "reporting",
            "dropped_fields": sorted(source.dropped_fields.items()),
            "quarantined": source.quarantined.pending()[:QUARANTINE_SHOWN],
            "quarantined_total": source.quarantined.pending().count(),
            "can_restart": source.can_restart,
            **facts_context(source, now),
        },
    )


@require(MANAGE)
@require_POST
def source_restart(request, pk: int):
    """Restart: the source goes back to Pending, keeping its checkpoint, and
    authenticates again at the next dispatch."""
    source = get_object_or_404(Source, pk=pk)
    if source.restart():
        dispatch_soon()
        messages.success(request, f"Source “{source.name}” restarted.")
    else:
        messages.warning(
            request,
            f"Source “{source.name}” is {source.get_state_display()}: "
            "nothing to restart.",
        )
    # From the Health Events panel: back to the page it was opened on.
    return redirect(
        _back_to(request, request.POST.get("next")) or source.get_absolute_url()
    )


@require(MANAGE)
@require_POST
def source_reprocess(request, pk: int):
    """Reprocess: try the source's quarantined events again (after an upgrade
    that fixes what made them unstorable); say what came of it."""
    source = get_object_or_404(Source.objects.select_related("collector"), pk=pk)
    stored, left = quarantine.reprocess(source)
    if stored:
        messages.success(request, f"{stored} event{pluralize(stored)} stored.")
    if left:
        messages.warning(
            request,
            f"{left} event{pluralize(left)} still cannot be stored; "
            "they stay in quarantine.",
        )
    elif not stored:
        messages.info(request, "No event is left in quarantine.")
    return redirect(source.get_absolute_url() + "#quarantine")

"""Health views: the Health Events panel fragments and the source page."""

from __future__ import annotations

from django.shortcuts import get_object_or_404, render

from collectors.models import HealthEvent, HostedCollector, Source


def source_health(request, pk: int):
    """The Health Events panel of one source (a server-rendered fragment)."""
    source = get_object_or_404(Source.objects.select_related("collector"), pk=pk)
    events = HealthEvent.objects.open().filter(source=source)
    return render(
        request,
        "collectors/_health_panel.html",
        {"resource": source, "kind": "Source", "events": events},
    )


def collector_health(request, pk: int):
    """The Health Events panel of a collector: its own and its sources' events."""
    collector = get_object_or_404(HostedCollector, pk=pk)
    events = (
        HealthEvent.objects.open().for_collector(collector).select_related("source")
    )
    return render(
        request,
        "collectors/_health_panel.html",
        {"resource": collector, "kind": "Collector", "events": events},
    )


def source_detail(request, pk: int):
    """What a source is doing: state, timeline of transitions, checkpoint."""
    source = get_object_or_404(Source.objects.select_related("collector"), pk=pk)
    return render(
        request,
        "collectors/source_detail.html",
        {"source": source, "transitions": source.transitions.all()},
    )

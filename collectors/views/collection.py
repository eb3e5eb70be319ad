"""The Collection page and the hosted-collector add/edit/delete screens."""

from __future__ import annotations

import html

from django.contrib import messages
from django.core.paginator import Paginator
from django.db import IntegrityError, transaction
from django.db.models import (
    Count,
    DateTimeField,
    Exists,
    F,
    Func,
    IntegerField,
    OuterRef,
    Prefetch,
    Q,
    Subquery,
)
from django.db.models.functions import Coalesce
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_http_methods, require_safe

from collectors import cells
from collectors.choices import Severity, SourceState
from collectors.forms import CollectorForm
from collectors.models import HealthEvent, HostedCollector, Source
from collectors.permissions import MANAGE, VIEW, require
from collectors.tasks import dispatch_soon

COLLECTORS_PER_PAGE = 100
# The columns a Collection row (and its health icon) reads: loading only these
# keeps building hundreds of rows cheap.
ROW_COLUMNS = {
    "collector": ["id", "name", "category", "deleting_since"],
    "source": [
        "id",
        "collector_id",
        "name",
        "category",
        "state",
        "state_changed",
        "error_type",
        "last_success_at",
        "created",
        "initial_lookback_days",
        "kind",
        "last_complete_day",
        "next_attempt_at",
        "lease_owner",
        "lease_expires",
    ],
}


def _posted(request):
    """The POST data on a POST (even an empty one), None on a GET."""
    return request.POST if request.method == "POST" else None


def _count(queryset) -> Coalesce:
    """A correlated COUNT(*) subquery: one scalar per row, no join to multiply."""
    counted = (
        queryset.order_by()
        .annotate(n=Func(F("pk"), function="COUNT", output_field=IntegerField()))
        .values("n")[:1]
    )
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


def _open(severity: str, **filters):
    return HealthEvent.objects.open().filter(severity=severity, **filters)


def sources_with_health():
    """Sources annotated with their open error and warning counts."""
    errors, warnings = HealthEvent.objects.open().severity_counts(
        correlate={"source": OuterRef("pk")}
    )
    return Source.objects.annotate(open_errors=errors, open_warnings=warnings)


def collectors_with_health():
    """Collectors annotated with open counts of their own and their sources',
    their number of sources and their sources' latest successful collection."""
    mine = OuterRef("pk")
    errors, warnings = HealthEvent.objects.open().severity_counts(
        correlate={"collector_ref": mine}
    )
    latest_success = (
        Source.objects.filter(collector=mine)
        .order_by()
        .annotate(
            m=Func(F("last_success_at"), function="MAX", output_field=DateTimeField())
        )
        .values("m")[:1]
    )
    return HostedCollector.objects.annotate(
        source_count=_count(Source.objects.filter(collector=mine)),
        last_success_at=Subquery(latest_success, output_field=DateTimeField()),
        # Its own events and its sources' (a deleted source's are resolved).
        open_errors=errors,
        open_warnings=warnings,
    )


SHOW_CHOICES = {
    "all": "All",
    "collecting": "Collecting",
    "errors": "Errors",
    "warnings": "Warnings",
    "stopping": "Stopping",
}
ERRORS = Q(state=SourceState.ERROR) | Q(open_errors__gt=0)
SOURCE_SHOWN = {
    "collecting": Q(state=SourceState.COLLECTING),
    "errors": ERRORS,
    "warnings": Q(open_warnings__gt=0),
    "stopping": Q(state=SourceState.STOPPING),
}


def summary() -> dict[str, int]:
    """The strip above the table: sources collecting, in error, with
    warnings, stopping, over the whole installation, in one query. "In error"
    is what the Health icon draws red: the Error state or an open error."""
    return sources_with_health().aggregate(
        collecting=Count("pk", filter=SOURCE_SHOWN["collecting"]),
        errors=Count("pk", filter=ERRORS),
        warnings=Count("pk", filter=SOURCE_SHOWN["warnings"]),
        stopping=Count("pk", filter=SOURCE_SHOWN["stopping"]),
    )


def name_filter(q: str, prefix: str = "") -> Q:
    """Name or category matching the search box, as Sumo's: a trailing `*`
    matches names that start with the text, otherwise the text anywhere."""
    if q.endswith("*"):
        text, lookup = q.rstrip("*"), "istartswith"
    else:
        text, lookup = q, "icontains"
    if not text:
        return Q()
    return Q(**{f"{prefix}name__{lookup}": text}) | Q(
        **{f"{prefix}category__{lookup}": text}
    )


def _matching(q: str, show: str):
    """(collector ids, sources) querysets for the search box and Show filter.

    A source is listed when it matches both (its collector's name or category
    counts for the search); a collector when it matches itself, or holds a
    listed source. Under Errors/Warnings a collector with such an event of
    its own is listed too.
    """
    collectors = HostedCollector.objects.order_by("name", "pk")
    sources = sources_with_health().only(*ROW_COLUMNS["source"])
    sources = sources.order_by("name", "pk")
    if q:
        sources = sources.filter(name_filter(q) | name_filter(q, "collector__"))
    if show in SOURCE_SHOWN:
        sources = sources.filter(SOURCE_SHOWN[show])
    if q or show in SOURCE_SHOWN:
        has_source = Exists(sources.filter(collector=OuterRef("pk")))
        own = Q(pk__in=[])
        if show in ("errors", "warnings"):
            severity = Severity.ERROR if show == "errors" else Severity.WARNING
            own = Q(Exists(_open(severity, collector=OuterRef("pk"))))
        if show in SOURCE_SHOWN:
            listed = Q(has_source) | (own & name_filter(q) if q else own)
        else:
            listed = Q(has_source) | name_filter(q)
        collectors = collectors.filter(listed)
    return collectors.values_list("pk", flat=True), sources


def _page_rows(
    ids: list[int], sources, can_manage: bool, now
) -> tuple[list[HostedCollector], cells.RowData]:
    """The collectors of one page, annotated, with their sources prefetched,
    and what their live cells need.

    Paging on ids first means the health counts are computed for the 100
    collectors shown, not for every collector the database sorts.
    """
    if not ids:
        return [], cells.RowData(now)
    rows = (
        collectors_with_health()
        .only(*ROW_COLUMNS["collector"])
        .filter(pk__in=ids)
        .prefetch_related(
            Prefetch("sources", queryset=sources, to_attr="shown_sources")
        )
    )
    by_id = {collector.pk: collector for collector in rows}
    ordered = [by_id[pk] for pk in ids if pk in by_id]
    shown = [source for c in ordered for source in c.shown_sources]
    data = cells.RowData.load(now, shown, [c.pk for c in ordered])
    _link_rows(ordered, can_manage, data)
    return ordered, data


def _url_maker(name: str):
    """A function pk -> URL for `name`, from a single reverse().

    The Collection page draws up to 100 collectors and hundreds of sources,
    each with several links; reversing once per kind keeps the page fast.
    """
    marker = "987654321"
    head, tail = reverse(name, args=[int(marker)]).split(marker, 1)
    return lambda pk: f"{head}{pk}{tail}"


def _link_rows(collectors, can_manage: bool, data: cells.RowData) -> None:
    """Attach each collector's links, live cells and the drawn rows of its
    sources (their Edit and Delete links only for a user who may use them)."""
    make = {
        name: _url_maker(name)
        for name in (
            "source-detail",
            "source-edit",
            "source-delete",
            "source-types",
            "collector-edit",
            "collector-delete",
        )
    }
    for collector in collectors:
        collector.add_source_url = make["source-types"](collector.pk)
        collector.edit_url = make["collector-edit"](collector.pk)
        collector.delete_url = make["collector-delete"](collector.pk)
        collector.cells = cells.safe(cells.collector_cells(collector, data))
        collector.source_rows = mark_safe(  # noqa: S308 - every value is escaped
            "".join(
                _source_row(source, make, can_manage, data)
                for source in collector.shown_sources
            )
        )


def _source_row(source: Source, make: dict, can_manage: bool, data) -> str:
    """One source's <tr> of the Collection table, values escaped.

    A page holds up to several hundred sources and Django's template engine
    spends ~0.2 ms on each such row, which alone would break the page's time
    budget; this f-string does the same in a few microseconds. The live cells
    come from `collectors.cells`, as the refresh endpoint's do.
    """
    e = html.escape
    actions = ""
    if can_manage and source.state != SourceState.STOPPING:
        actions = (
            f'<a href="{e(make["source-edit"](source.pk))}">Edit</a>'
            f'<a href="{e(make["source-delete"](source.pk))}" class="danger-link">'
            "Delete</a>"
        )
    live = cells.source_cells(source, data)
    return (
        f'<tr class="child source-row" data-source-id="{source.pk}" '
        f'data-collector="{source.collector_id}">'
        f'<td class="name-cell"><a href="{e(make["source-detail"](source.pk))}">'
        f"{e(source.name)}</a></td>"
        f'<td class="health-col" data-live="health">{live["health"]}</td>'
        '<td class="col-type"><span class="type-badge">'
        f"{e(source.get_kind_display())}</span></td>"
        f'<td class="status-cell" data-live="status">{live["status"]}</td>'
        f'<td class="col-category">{e(source.category)}</td>'
        '<td class="num col-sources"></td>'
        f'<td class="num col-messages" data-live="messages">{live["messages"]}</td>'
        f'<td class="col-activity" data-live="activity">{live["activity"]}</td>'
        f'<td class="actions">{actions}</td></tr>\n'
    )


def _show(request) -> tuple[str, str | None]:
    """The Show filter's value, and a message when the URL gave a bad one."""
    show = request.GET.get("show", "all") or "all"
    if show in SHOW_CHOICES:
        return show, None
    return "all", "Unknown Show filter: showing all collectors and sources."


@require(VIEW)
@require_safe
def collection(request):
    """Manage Data > Collection: collectors with their sources nested beneath.

    Runs a constant number of queries: the summary strip, a count, one page
    of collector ids, those collectors with health annotations, one prefetch
    of their sources (also annotated), the ids of all their sources, their
    activity and the backfill counts of the sources that are behind.
    """
    # NUL can match nothing and PostgreSQL refuses it in a query: drop it.
    q = request.GET.get("q", "").replace("\x00", "").strip()[:200]
    show, show_error = _show(request)
    ids, sources = _matching(q, show)
    page = Paginator(ids, COLLECTORS_PER_PAGE).get_page(request.GET.get("page"))
    can_manage = request.user.has_perm(MANAGE)
    now = timezone.now()
    page.object_list, _ = _page_rows(list(page.object_list), sources, can_manage, now)
    params = {k: v for k, v in (("q", q), ("show", show)) if v and v != "all"}
    return render(
        request,
        "collectors/collection.html",
        {
            "page": page,
            "q": q,
            "show": show,
            "show_error": show_error,
            "show_choices": SHOW_CHOICES,
            "summary": summary(),
            "query": urlencode(params),
            "search_query": urlencode({"q": q} if q else {}),
            "now": now,
            "nav": "collection",
        },
    )


def _save_collector(request, form: CollectorForm, verb: str):
    """Save a valid collector form; a lost race on the name is a field error."""
    try:
        with transaction.atomic():
            collector = form.save()
    except IntegrityError:
        form.add_error("name", "A hosted collector with this name already exists.")
        return None
    messages.success(request, f"Hosted collector “{collector.name}” {verb}.")
    return redirect("collection")


@require(MANAGE)
@require_http_methods(["GET", "POST"])
def collector_add(request):
    """Add Collector: a hosted collector to which sources are added."""
    form = CollectorForm(_posted(request))
    if form.is_valid() and (response := _save_collector(request, form, "added")):
        return response
    return render(
        request, "collectors/collector_form.html", {"form": form, "nav": "collection"}
    )


@require(MANAGE)
@require_http_methods(["GET", "POST"])
def collector_edit(request, pk: int):
    """Edit a hosted collector's name, description and category."""
    collector = get_object_or_404(HostedCollector, pk=pk)
    if refused := refuse_if_deleting(request, collector):
        return refused
    form = CollectorForm(_posted(request), instance=collector)
    if form.is_valid() and (response := _save_collector(request, form, "saved")):
        return response
    return render(
        request,
        "collectors/collector_form.html",
        {"form": form, "collector": collector, "nav": "collection"},
    )


@require(MANAGE)
@require_http_methods(["GET", "POST"])
def collector_delete(request, pk: int):
    """Delete a collector after saying how many sources go with it.

    The POST moves its sources to Stopping, as a source delete does; the
    engine finishes each and the collector row goes once they are gone.
    Collected messages stay, since they keep a copy of their metadata.
    """
    collector = get_object_or_404(HostedCollector, pk=pk)
    if request.method == "POST":
        name = collector.name
        if collector.request_delete():
            dispatch_soon()
            messages.success(
                request,
                f"Hosted collector “{name}” is stopping its sources and will be "
                "deleted once they are gone. Messages already collected are kept.",
            )
        else:
            messages.success(request, f"Hosted collector “{name}” deleted.")
        return redirect("collection")
    return render(
        request,
        "collectors/collector_confirm_delete.html",
        {
            "collector": collector,
            "source_count": collector.sources.count(),
            "nav": "collection",
        },
    )


def refuse_if_deleting(request, collector: HostedCollector):
    """A redirect with a message when the collector is being deleted, else None:
    it takes no new source and no edit."""
    if not collector.is_deleting:
        return None
    messages.error(request, f"Hosted collector “{collector.name}” is being deleted.")
    return redirect("collection")

"""Adding, editing and deleting KnowBe4 API sources."""

from __future__ import annotations

from django.contrib import messages
from django.db import IntegrityError, transaction
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import (
    require_http_methods,
    require_POST,
    require_safe,
)

from collectors import connection, crypto, governor
from collectors.choices import SourceState
from collectors.forms import (
    ConnectionTestForm,
    QuotaFiguresForm,
    ReportingConnectionTestForm,
    ReportingSourceForm,
    SourceForm,
)
from collectors.models import HealthEvent, HostedCollector, Source
from collectors.permissions import MANAGE, require
from collectors.tasks import dispatch_soon
from collectors.views.collection import refuse_if_deleting


def _posted(request):
    """The POST data on a POST (even an empty one), None on a GET."""
    return request.POST if request.method == "POST" else None


@require(MANAGE)
@require_safe
def source_types(request, pk: int):
    """Add Source: the tiles of source types (KnowBe4, KnowBe4 KMSAT
    Reporting) for a collector."""
    collector = get_object_or_404(HostedCollector, pk=pk)
    if refused := refuse_if_deleting(request, collector):
        return refused
    return render(
        request,
        "collectors/source_types.html",
        {"collector": collector, "nav": "collection"},
    )


def _save_source(form: SourceForm) -> Source | None:
    """Save a valid form in one transaction (an edit also bumps the config
    version, and a new key or Base URL sends the source back to Pending to
    authenticate again); a lost race on the name becomes a field error."""
    try:
        with transaction.atomic():
            source = form.save()
            if not form.adding:
                source.reconfigured(reauthenticate=form.changes_credentials)
            dispatch_soon()
        return source
    except IntegrityError:
        form.add_error("name", "This collector already has a source with this name.")
        return None


def _report_dropped(request, form: SourceForm) -> None:
    """Say which fields will be dropped because the schema lacks them."""
    if form.missing_keys and not form.cleaned_data.get("auto_add_fields"):
        messages.warning(
            request,
            "These fields are not in the Fields table schema and will be dropped "
            f"from collected messages: {', '.join(form.missing_keys)}.",
        )


def _render_form(request, form: SourceForm, source: Source | None = None):
    """The form; editing a source with open health events shows them on top,
    so the fix is made looking at the error it fixes."""
    open_events = (
        list(
            HealthEvent.objects.open()
            .filter(source=source)
            .order_by("severity", "-last_seen", "-id")
        )
        if source is not None
        else []
    )
    return render(
        request,
        "collectors/source_form.html",
        {
            "form": form,
            "collector": form.collector,
            "source": source,
            "open_events": open_events,
            "nav": "collection",
            **governor.figures(source or form.instance),
        },
    )


@require(MANAGE)
@sensitive_post_parameters("api_key")
@require_http_methods(["GET", "POST"])
def source_add(request, pk: int):
    """The KnowBe4 API source form; Save creates the source in Pending."""
    return _add(request, pk, SourceForm)


@require(MANAGE)
@sensitive_post_parameters("api_key")
@require_http_methods(["GET", "POST"])
def source_add_reporting(request, pk: int):
    """The KnowBe4 KMSAT Reporting source form; Save creates it in Pending."""
    return _add(request, pk, ReportingSourceForm)


def _add(request, pk: int, form_class: type[SourceForm]):
    """Either Add form for a collector (the views check the permission)."""
    collector = get_object_or_404(HostedCollector, pk=pk)
    if refused := refuse_if_deleting(request, collector):
        return refused
    form = form_class(_posted(request), collector=collector)
    if form.is_valid() and (source := _save_source(form)):
        messages.success(
            request,
            f"Source “{source.name}” added to {collector.name}. It is Pending and "
            "will start collecting shortly.",
        )
        _report_dropped(request, form)
        return redirect("collection")
    return _render_form(request, form)


@require(MANAGE)
@sensitive_post_parameters("api_key")
@require_http_methods(["GET", "POST"])
def source_edit(request, pk: int):
    """Edit a source; the change applies to data collected from now on."""
    source = get_object_or_404(Source.objects.select_related("collector"), pk=pk)
    if source.state == SourceState.STOPPING:
        messages.error(request, f"Source “{source.name}” is being deleted.")
        return redirect("collection")
    form_class = ReportingSourceForm if source.kind == "reporting" else SourceForm
    form = form_class(_posted(request), instance=source, collector=source.collector)
    if form.is_valid() and (saved := _save_source(form)):
        messages.success(
            request,
            f"Source “{saved.name}” saved. Changes apply to data collected from "
            "now on.",
        )
        _report_dropped(request, form)
        return redirect("collection")
    return _render_form(request, form, source)


@require(MANAGE)
@require_http_methods(["GET", "POST"])
def source_delete(request, pk: int):
    """Delete asks first; the POST moves the source to Stopping.

    The engine finishes the removal; messages already collected are kept.
    """
    source = get_object_or_404(Source.objects.select_related("collector"), pk=pk)
    if request.method == "POST":
        if source.request_stop():
            dispatch_soon()
            messages.success(
                request,
                f"Source “{source.name}” is stopping and will be deleted. Messages "
                "already collected are kept.",
            )
        else:
            messages.info(request, f"Source “{source.name}” is already stopping.")
        return redirect("collection")
    return render(
        request,
        "collectors/source_confirm_delete.html",
        {"source": source, "nav": "collection"},
    )


@require(MANAGE)
@sensitive_post_parameters("api_key")
@require_POST
def source_test_connection(request):
    """Test connection of the KnowBe4 (User Event) form: one request with the
    form's Base URL and key, answered with a result fragment (the form's
    script shows it in place; without script, a small page with a way back)."""
    return _test_connection(request, ConnectionTestForm, connection.check)


@require(MANAGE)
@sensitive_post_parameters("api_key")
@require_POST
def source_test_connection_reporting(request):
    """Test connection of the KMSAT Reporting form: the same, with its Region
    and Reporting key against the Reporting API."""
    return _test_connection(
        request, ReportingConnectionTestForm, connection.check_reporting
    )


def _test_connection(request, form_class, check):
    """Either Test connection (the views check the permission): the form's
    first error, the per-user try limit, or `check`'s outcome, in words."""
    form = form_class(request.POST)
    if not form.is_valid():
        errors = [e for field_errors in form.errors.values() for e in field_errors]
        outcome = connection.Outcome("invalid", errors[0])
    elif not connection.allow_try(request.user):
        outcome = connection.too_many_tries()
    else:
        try:
            outcome = check(*form.target())
        except crypto.KeyUnreadable:
            outcome = connection.Outcome(
                "invalid",
                "The stored API key cannot be decrypted: enter the API key again.",
            )
    fragment = request.headers.get("X-Requested-With") == "fetch"
    return render(
        request,
        "collectors/_connection_result.html"
        if fragment
        else "collectors/connection_result.html",
        {"outcome": outcome, "nav": "collection"},
    )


def _figures_source(request) -> Source | None:
    """The source the live figures are for: the stored one being edited (its
    key and its siblings'), or a new unsaved one of the form's kind; None
    when `source` names none."""
    pk = request.GET.get("source", "")
    if not pk:
        kind = "reporting" if request.GET.get("kind") == "reporting" else "events"
        return Source(kind=kind)
    if not pk.isdigit():
        return None
    return Source.objects.filter(pk=int(pk)).first()


@require(MANAGE)
@require_safe
def source_quota_figures(request):
    """The Advanced section's quota figures for the values being typed (the
    form's script swaps this fragment in while the user edits): budget, used,
    left, reset, projected per day. Nothing is saved; a value that breaks its
    rule gets the form's own message instead of figures."""
    source = _figures_source(request)
    if source is None:
        errors = ["The source of this form no longer exists."]
    else:
        form = QuotaFiguresForm(request.GET, reporting=source.kind == "reporting")
        errors = [] if form.is_valid() else form.messages()
    if errors:
        return render(
            request, "collectors/_quota_plan.html", {"quota_errors": errors}, status=400
        )
    return render(
        request,
        "collectors/_quota_plan.html",
        governor.figures(form.applied_to(source)),
    )

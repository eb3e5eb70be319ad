"""The Outputs pages: list, add, edit, enable/disable, delete, health panel."""

from __future__ import annotations

from django.contrib import messages
from django.db import IntegrityError, transaction
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from collectors.models import HealthEvent
from collectors.permissions import MANAGE, VIEW, require
from collectors.views.health import PANEL_ORDER
from outputs.forms import OutputForm
from outputs.models import Output
from outputs.tasks import dispatch_soon


def _posted(request):
    """The POST data on a POST (even an empty one), None on a GET."""
    return request.POST if request.method == "POST" else None


@require(VIEW)
@require_GET
def output_list(request):
    """Every output with its backlog, checkpoint, replays and last error."""
    outputs = Output.objects.order_by("name", "pk").with_backlogs()
    return render(
        request,
        "outputs/output_list.html",
        {"outputs": outputs, "now": timezone.now(), "nav": "outputs"},
    )


def _save(form: OutputForm) -> Output | None:
    """Save in one transaction (an edit also bumps the configuration version,
    which lifts a ThirdPartyConfig error); a lost race on the name becomes a
    field error."""
    try:
        with transaction.atomic():
            output = form.save()
            if not form.adding:
                output.reconfigured()
            dispatch_soon()
        return output
    except IntegrityError:
        form.add_error("name", "An output with this name already exists.")
        return None


def _render_form(request, form: OutputForm, output: Output | None = None):
    return render(
        request,
        "outputs/output_form.html",
        {"form": form, "output": output, "nav": "outputs"},
    )


@require(MANAGE)
@sensitive_post_parameters("url", "token")
@require_http_methods(["GET", "POST"])
def output_add(request):
    form = OutputForm(_posted(request))
    if form.is_valid() and (output := _save(form)):
        messages.success(request, f"Output “{output.name}” added.")
        return redirect("outputs")
    return _render_form(request, form)


@require(MANAGE)
@sensitive_post_parameters("url", "token")
@require_http_methods(["GET", "POST"])
def output_edit(request, pk: int):
    output = get_object_or_404(Output, pk=pk)
    form = OutputForm(_posted(request), instance=output)
    if form.is_valid() and (saved := _save(form)):
        messages.success(
            request,
            f"Output “{saved.name}” saved. Delivery continues from its checkpoint.",
        )
        return redirect("outputs")
    return _render_form(request, form, output)


@require(MANAGE)
@require_POST
def output_enable(request, pk: int):
    output = get_object_or_404(Output, pk=pk)
    output.set_enabled(True)
    dispatch_soon()
    messages.success(request, f"Output “{output.name}” enabled.")
    return redirect("outputs")


@require(MANAGE)
@require_POST
def output_disable(request, pk: int):
    output = get_object_or_404(Output, pk=pk)
    output.set_enabled(False)
    messages.success(
        request,
        f"Output “{output.name}” disabled. Its checkpoint is kept; enabling it "
        "again resumes from there.",
    )
    return redirect("outputs")


@require(MANAGE)
@require_http_methods(["GET", "POST"])
def output_delete(request, pk: int):
    """Delete asks first. The output's health events stay in the history."""
    output = get_object_or_404(Output, pk=pk)
    if request.method == "POST":
        name = output.name
        output.delete()
        messages.success(request, f"Output “{name}” deleted.")
        return redirect("outputs")
    return render(
        request,
        "outputs/output_confirm_delete.html",
        {"output": output, "nav": "outputs"},
    )


@require(VIEW)
@require_GET
def output_health(request, pk: int):
    """The Health Events panel of one output (the collectors' fragment)."""
    output = get_object_or_404(Output, pk=pk)
    events = (
        HealthEvent.objects.open()
        .for_resource(Output.HEALTH_RESOURCE_TYPE, output.pk)
        .order_by(*PANEL_ORDER)
    )
    return render(
        request,
        "collectors/_health_panel.html",
        {
            "resource": output,
            "kind": Output.HEALTH_RESOURCE_TYPE,
            "events": events,
            "history_query": f"resource_type={Output.HEALTH_RESOURCE_TYPE}",
        },
    )

"""Manage Data > Logs > Fields: the Fields table schema."""

from __future__ import annotations

from django.contrib import messages
from django.db.models import F, Func, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce, Lower
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST, require_safe

from collectors.choices import MAX_SCHEMA_FIELDS
from collectors.forms import FieldDefinitionForm
from collectors.models import FieldDefinition, SourceField
from collectors.permissions import MANAGE_FIELDS, require


def definitions_with_usage():
    """The schema, each row annotated with its number of sources, in one query."""
    using = (
        SourceField.objects.alias(lkey=Lower("key"))
        .filter(lkey=Lower(OuterRef("name")))
        .order_by()
        .annotate(n=Func(F("pk"), function="COUNT", output_field=IntegerField()))
        .values("n")[:1]
    )
    return FieldDefinition.objects.annotate(
        source_count=Coalesce(Subquery(using, output_field=IntegerField()), 0)
    ).order_by(Lower("name"))


def _render(request, form: FieldDefinitionForm, status: int = 200):
    definitions = list(definitions_with_usage())
    return render(
        request,
        "collectors/fields.html",
        {
            "form": form,
            "definitions": definitions,
            "capacity": MAX_SCHEMA_FIELDS,
            "full": len(definitions) >= MAX_SCHEMA_FIELDS,
            "nav": "fields",
        },
        status=status,
    )


@require(MANAGE_FIELDS)
@require_safe
def fields(request):
    """The schema with status, name, sources using each field, and capacity."""
    return _render(request, FieldDefinitionForm())


@require(MANAGE_FIELDS)
@require_POST
def field_add(request):
    """Add a field to the schema, with the same naming rules as source fields."""
    form = FieldDefinitionForm(request.POST)
    if not form.is_valid():
        return _render(request, form)
    definition = form.save()
    messages.success(request, f"Field “{definition.name}” added to the schema.")
    return redirect("fields")


@require(MANAGE_FIELDS)
@require_POST
def field_enable(request, pk: int):
    """Enable a field: sources' values for it are kept on new messages again."""
    definition = get_object_or_404(FieldDefinition, pk=pk)
    FieldDefinition.objects.filter(pk=pk).update(enabled=True)
    messages.success(request, f"Field “{definition.name}” enabled.")
    return redirect("fields")


@require(MANAGE_FIELDS)
@require_POST
def field_disable(request, pk: int):
    """Disable a field: values for it are dropped from new messages."""
    definition = get_object_or_404(FieldDefinition, pk=pk)
    FieldDefinition.objects.filter(pk=pk).update(enabled=False)
    messages.success(
        request,
        f"Field “{definition.name}” disabled. Sources' values for it are dropped "
        "until it is enabled again.",
    )
    return redirect("fields")


@require(MANAGE_FIELDS)
@require_POST
def field_delete(request, pk: int):
    """Delete a field, refused while any source still uses it."""
    definition = get_object_or_404(FieldDefinition, pk=pk)
    used_by = definition.sources_using()
    if used_by:
        messages.error(
            request,
            f"Field “{definition.name}” is used by {used_by} source"
            f"{'' if used_by == 1 else 's'}; remove it from "
            f"{'that source' if used_by == 1 else 'those sources'} before deleting it.",
        )
    else:
        definition.delete()
        messages.success(request, f"Field “{definition.name}” deleted.")
    return redirect("fields")

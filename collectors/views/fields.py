"""Manage Data > Logs > Fields: the Fields table schema."""

from __future__ import annotations

from collections import defaultdict

from django.contrib import messages
from django.db.models import F, Func, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce, Lower
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
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


SOURCES_LISTED_PER_FIELD = 5


def attach_users(definitions: list[FieldDefinition]) -> None:
    """Give each definition `users`: the first sources (by collector, name)
    that set a field of its name, for links, in ONE query for the page.

    Keys match case-insensitively, as `sources_using` counts them; the count
    (`source_count`) says how many more there are.
    """
    wanted = {d.name.lower() for d in definitions if d.source_count}
    by_key: dict[str, list] = defaultdict(list)
    if wanted:
        rows = (
            SourceField.objects.alias(lkey=Lower("key"))
            .filter(lkey__in=wanted)
            .annotate(low=Lower("key"))
            .order_by("source__collector__name", "source__name", "source_id")
            .values_list("low", "source_id", "source__name", "source__collector__name")
        )
        for low, source_id, name, collector in rows:
            if len(by_key[low]) < SOURCES_LISTED_PER_FIELD:
                by_key[low].append(
                    {
                        "url": reverse("source-detail", args=[source_id]),
                        "name": name,
                        "collector": collector,
                    }
                )
    for definition in definitions:
        definition.users = by_key.get(definition.name.lower(), [])
        definition.more_users = definition.source_count - len(definition.users)


def _render(request, form: FieldDefinitionForm, status: int = 200):
    definitions = list(definitions_with_usage())
    attach_users(definitions)
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

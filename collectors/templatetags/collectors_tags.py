"""Template helpers that draw a resource's health with the one status mapping."""

from __future__ import annotations

from django import template

from collectors import status

register = template.Library()


@register.simple_tag
def health_status(obj) -> dict:
    """The look, tooltip and panel URL of a source or collector.

    Reads the `open_errors` / `open_warnings` annotations that list views add
    (so drawing a row costs no query), falling back to a query otherwise.
    """
    errors = getattr(obj, "open_errors", None)
    warnings = getattr(obj, "open_warnings", None)
    if errors is None or warnings is None:
        errors, warnings = obj.open_health_counts()
    look = status.health_look(
        errors, warnings, neutral=getattr(obj, "is_neutral", False)
    )
    return {
        "look": look,
        "errors": errors,
        "warnings": warnings,
        "tooltip": status.health_tooltip(errors, warnings),
        "panel_url": obj.get_health_url(),
    }

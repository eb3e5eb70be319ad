"""The Overview dashboard (see collectors/overview.py for what it shows)."""

from __future__ import annotations

from django.shortcuts import render
from django.views.decorators.http import require_safe

from collectors import overview as dashboard
from collectors.models import LogMessage
from collectors.navigation import remember_messages_exist
from collectors.permissions import VIEW, require


@require(VIEW)
@require_safe
def overview(request):
    """Filters, then every panel of `overview.PANELS` over the filtered data."""
    view = dashboard.OverviewFilter.from_params(request.GET)
    any_messages = LogMessage.objects.exists()
    remember_messages_exist(request, any_messages)
    panels = dashboard.build(view) if any_messages and view.valid else {}
    return render(
        request,
        "collectors/overview.html",
        {
            "nav": "overview",
            "form": view.form,
            "view": view,
            "any_messages": any_messages,
            "panels": panels,
            "messages_url": view.events_url() if view.valid else "",
        },
    )

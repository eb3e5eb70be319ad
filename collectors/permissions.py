"""Roles: the permission every view checks, and the page for a refusal.

The app's permissions are named after Sumo Logic's capabilities and belong to
`HostedCollector`'s Meta; migration 0004_roles makes the three roles
(groups) out of them:

- Viewer: VIEW (Collection, sources, Health Events, Messages).
- Analyst: VIEW + DOWNLOAD (message exports).
- Collector manager: all four.

Every view is wrapped in `require(<permission>)`. Templates hide the buttons a
user cannot use, but the check that counts is the one here, in the view.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

VIEW = "collectors.view_collectors"
DOWNLOAD = "collectors.download_search_results"
MANAGE = "collectors.manage_collectors"
MANAGE_FIELDS = "collectors.manage_fields"

# What each permission lets a user do, for the refusal page.
ABILITIES = {
    VIEW: "view collectors, sources, health events and messages",
    DOWNLOAD: "download search results (message exports)",
    MANAGE: "add, edit, restart and delete collectors and sources",
    MANAGE_FIELDS: "change the Fields schema",
    "alerts.view_monitors": "view monitors, connections and notifications",
    "alerts.manage_monitors": "add, edit and delete monitors and connections",
}


def has_role(user) -> bool:
    """A user with no permission at all has no role yet (a new account)."""
    return user.is_superuser or bool(user.get_all_permissions())


def refused(request: HttpRequest, perm: str) -> HttpResponse:
    """403 with a page saying what is missing, or that there is no role yet."""
    user = request.user
    roles = list(user.groups.order_by("name").values_list("name", flat=True))
    return render(
        request,
        "collectors/forbidden.html",
        {
            "has_role": has_role(user),
            "roles": roles,
            "ability": ABILITIES.get(perm, perm),
        },
        status=403,
    )


def require(perm: str) -> Callable:
    """Decorator: run the view only for a signed-in user holding `perm`.

    Put it outermost (above the HTTP-method decorators), so a user without
    the permission is refused whatever the method and nothing runs for them.
    Anonymous visitors are sent to sign in (LoginRequiredMiddleware does so
    first; this keeps the view safe if it is ever served without it).
    """

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def guarded(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not request.user.has_perm(perm):
                return refused(request, perm)
            return view(request, *args, **kwargs)

        guarded.required_permission = perm
        return guarded

    return decorator

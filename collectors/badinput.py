"""Admin list filters out of range answer 400 with a message, not a 500.

Django admin turns an unknown lookup into a message, but a value that parses
and is then refused further down (`?created__gte=0001-01-01T00:00+23:59`,
before year 1 in UTC; `?at__year=99999999999999999999`; a NUL that
PostgreSQL refuses) raises OverflowError or DataError when the list is
counted. That happens in Django's and third-party admins alike (django-q2's,
django-axes'), so it is answered here, once, for the admin only: the app's own
pages validate their parameters in their forms.
"""

from __future__ import annotations

from django.contrib import admin
from django.db import DataError, transaction
from django.shortcuts import render

BAD_FILTER = (OverflowError, DataError)


class AdminFilterOverflowMiddleware:
    """Runs an admin GET that has query parameters in a savepoint, and answers
    400 when those parameters overflow: the savepoint keeps a failed statement
    from aborting an enclosing transaction on PostgreSQL."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        match = request.resolver_match
        if request.method != "GET" or not request.GET:
            return None
        if match is None or match.namespace != admin.site.name:
            return None
        try:
            with transaction.atomic():
                response = view_func(request, *view_args, **view_kwargs)
                if callable(getattr(response, "render", None)):
                    response = response.render()
        except BAD_FILTER:
            return render(
                request,
                "admin/bad_filter.html",
                {**admin.site.each_context(request), "title": "Filter out of range"},
                status=400,
            )
        return response

"""A web request that finds SQLite busy past its timeout answers 503.

SQLite allows one writer at a time; a request waits up to the busy timeout
(settings: OPTIONS "timeout") for the write lock and then fails with
OperationalError "database is locked". That is a temporary condition, not a
bug: the user gets a plain "The database is busy; try again" page with
Retry-After, never a 500. Two hooks catch it: the middleware for errors raised
by views, `server_error` (the handler500) for those raised by middleware
outside the view, such as the session save.
"""

from __future__ import annotations

import sys

from django.db import OperationalError
from django.http import HttpResponse
from django.views import defaults

RETRY_AFTER_SECONDS = 5
BUSY_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Busy</title></head>
<body><h1>The database is busy; try again</h1>
<p>Another task is writing to the database. Nothing was changed: wait a few
seconds and send your request again.</p></body></html>
"""


def is_busy(exc: BaseException | None) -> bool:
    """Whether `exc` is SQLite's "database is locked" (or "table is locked")."""
    if not isinstance(exc, OperationalError):
        return False
    text = str(exc).lower()
    return "database is locked" in text or "database table is locked" in text


def busy_response() -> HttpResponse:
    response = HttpResponse(BUSY_PAGE, status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    response["Cache-Control"] = "no-store"
    return response


class DatabaseBusyMiddleware:
    """Turn a view's "database is locked" into the 503 page."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        return busy_response() if is_busy(exception) else None


def server_error(request, template_name: str = defaults.ERROR_500_TEMPLATE_NAME):
    """handler500: the busy page when the uncaught error is a busy database
    (raised outside the view), else Django's 500 page."""
    if is_busy(sys.exc_info()[1]):
        return busy_response()
    return defaults.server_error(request, template_name)

"""Each user's time zone: UTC (the default) or the zone their browser reports.

Times are stored in UTC and stay so; only drawing changes. The middleware
activates the user's zone for the request, so every template's `|date` and
every form's From/To field (Django reads a naive input in the current zone)
use it. The choice is read once at sign-in and kept in the session, so
pages cost no extra query. The browser's zone arrives in a cookie that
static/js/layout.js sets from `Intl.DateTimeFormat().resolvedOptions()`;
a missing or unknown zone falls back to UTC rather than guessing.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.utils import timezone

SESSION_KEY = "kb4_tz_mode"
COOKIE = "kb4_tz"
UTC_MODE, BROWSER_MODE = "utc", "browser"
_ZONE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+){0,2}$")


@lru_cache(maxsize=512)
def zone_named(name: str) -> tzinfo | None:
    """The IANA zone of that name, or None for anything else (never raises:
    the cookie is user input)."""
    if not name or len(name) > 64 or not _ZONE_NAME.match(name):
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def stored_mode(user) -> str:
    """The user's saved choice (one query; UTC when never saved)."""
    from collectors.models import UserPreference

    pref = UserPreference.objects.filter(user=user).values_list("time_zone")
    return next(iter(pref), (UTC_MODE,))[0]


def mode_for(request) -> str:
    """The signed-in user's choice, from the session (loaded once)."""
    session = getattr(request, "session", None)
    if session is None:
        return UTC_MODE
    mode = session.get(SESSION_KEY)
    if mode not in (UTC_MODE, BROWSER_MODE):
        mode = stored_mode(request.user)
        session[SESSION_KEY] = mode
    return mode


def zone_for(request) -> tzinfo:
    """The zone to draw this request's times in."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return UTC
    if mode_for(request) != BROWSER_MODE:
        return UTC
    return zone_named(request.COOKIES.get(COOKIE, "")) or UTC


def remember(request, mode: str) -> None:
    """After the preferences page saved a choice: use it from now on."""
    request.session[SESSION_KEY] = mode


@receiver(user_logged_in, dispatch_uid="collectors.timezones.sign_in")
def _on_sign_in(sender, request, user, **kwargs) -> None:
    if request is not None and hasattr(request, "session"):
        request.session[SESSION_KEY] = stored_mode(user)


class TimeZoneMiddleware:
    """Activate the user's zone for the request (after authentication)."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        zone = zone_for(request)
        timezone.activate(zone)
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()


def zone_label(zone: tzinfo | None = None) -> str:
    """The name a page shows for a zone, e.g. "UTC" or "Europe/Paris"."""
    zone = zone or timezone.get_current_timezone()
    return "UTC" if zone is UTC else str(getattr(zone, "key", zone))


def human(moment: datetime | None, zone: tzinfo) -> str:
    """A time for people, in `zone`, with its UTC offset so it stays exact."""
    if moment is None:
        return ""
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %z")


def context(request) -> dict:
    """Context processor: the active zone, for labels and layout.js."""
    user = getattr(request, "user", None)
    signed_in = user is not None and user.is_authenticated
    return {
        "tz_mode": mode_for(request) if signed_in else UTC_MODE,
        "tz_active": zone_label(),
    }

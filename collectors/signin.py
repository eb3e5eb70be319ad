"""Sign-in throttling support for django-axes: which client address counts.

django-axes locks a (username, address) pair after too many failed sign-ins.
Behind a reverse proxy every request comes from the proxy's address, so the
operator may name the header their proxy sets (`SIGNIN_PROXY_IP_HEADER`, e.g.
`X-Forwarded-For`) and how many proxies append to it (`SIGNIN_PROXY_COUNT`).
The header is never read unless configured: a client could write any
address into it and so escape its lockout.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def _meta_key(header: str) -> str:
    return "HTTP_" + header.strip().upper().replace("-", "_")


def _valid(address: str) -> str | None:
    try:
        return str(ipaddress.ip_address(address.strip()))
    except ValueError:
        return None


def client_ip(request: HttpRequest) -> str | None:
    """The address a lockout is keyed on (AXES_CLIENT_IP_CALLABLE).

    With a proxy header configured, take the entry the nearest trusted proxy
    added: the SIGNIN_PROXY_COUNT-th from the right (entries further left
    are written by the client). A missing or malformed entry falls back to
    REMOTE_ADDR, so a bad header never unlocks anyone.
    """
    remote = request.META.get("REMOTE_ADDR")
    header = getattr(settings, "SIGNIN_PROXY_IP_HEADER", "")
    if not header:
        return remote
    entries = [e for e in request.META.get(_meta_key(header), "").split(",") if e]
    count = max(1, getattr(settings, "SIGNIN_PROXY_COUNT", 1))
    if len(entries) < count:
        return remote
    return _valid(entries[-count]) or remote


def locked_out(request: HttpRequest, response=None, credentials=None):
    """The page for a locked (username, address) pair (AXES_LOCKOUT_CALLABLE).

    429 with the limit and the lock's length in minutes, on the app's and
    the admin's sign-in alike; it says that even the right password is
    refused until then.
    """
    from axes.helpers import get_client_username
    from django.shortcuts import render

    return render(
        request,
        "registration/locked_out.html",
        {
            "username": get_client_username(request, credentials) or "",
            "failure_limit": settings.AXES_FAILURE_LIMIT,
            "minutes": int(settings.AXES_COOLOFF_TIME.total_seconds() // 60),
        },
        status=429,
    )

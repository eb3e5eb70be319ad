"""The main menu: Overview leads it once any message exists.

Whether messages exist is read once at sign-in and kept in the session, and
refreshed for free by the pages that look anyway (Overview, Messages), so
drawing the menu on every page costs no query.
"""

from __future__ import annotations

from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver

SESSION_KEY = "kb4_has_messages"


def remember_messages_exist(request, exist: bool) -> None:
    """Store what a page just learnt about whether any message exists."""
    session = getattr(request, "session", None)
    if session is not None and session.get(SESSION_KEY) != exist:
        session[SESSION_KEY] = exist


@receiver(user_logged_in, dispatch_uid="collectors.navigation.sign_in")
def _on_sign_in(sender, request, user, **kwargs) -> None:
    from collectors.models import LogMessage

    if request is not None:
        remember_messages_exist(request, LogMessage.objects.exists())


def overview_first(request) -> bool:
    """Whether the menu leads with Overview (and sign-in lands there)."""
    session = getattr(request, "session", None)
    return bool(session is not None and session.get(SESSION_KEY))


def menu(request) -> dict:
    """Context processor: what the menu in base.html needs, without a query."""
    return {"overview_first": overview_first(request)}

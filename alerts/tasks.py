"""django-q2 entry points of the alerts app (thin; ids only as arguments)."""

from __future__ import annotations

from alerts import checks, notify


def check_monitors() -> str:
    """The every-minute schedule: check every enabled monitor."""
    return f"{checks.check_monitors()} monitor change(s)"


def deliver(notification_id: int) -> str:
    """One delivery attempt of one notification (queued when it is created)."""
    return notify.deliver(int(notification_id))


def deliver_due() -> str:
    """The every-minute schedule: retry the notifications that are due."""
    return f"{notify.deliver_due()} notification attempt(s)"

"""The outputs dispatcher's django-q2 schedule, registered by `setup_schedules`
next to collection's and the alerts app's."""

from __future__ import annotations

from collectors import schedules
from outputs.tasks import DISPATCH_FUNC, DISPATCH_NAME


def register(using: str = "default") -> list[str]:
    """Create or update the every-minute dispatcher (idempotent); one line
    for the command's output."""
    return [schedules.ensure(DISPATCH_NAME, DISPATCH_FUNC, using=using)]

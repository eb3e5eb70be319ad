"""The outputs dispatcher's django-q2 schedule, registered by `setup_schedules`
next to collection's and the alerts app's."""

from __future__ import annotations

from django_q.models import Schedule

from outputs.tasks import DISPATCH_FUNC, DISPATCH_NAME


def register(using: str = "default") -> list[str]:
    """Create or update the every-minute dispatcher (idempotent); one line
    for the command's output."""
    _, created = Schedule.objects.using(using).update_or_create(
        name=DISPATCH_NAME,
        defaults={
            "func": DISPATCH_FUNC,
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
        },
    )
    return [f"{'Created' if created else 'Updated'} schedule '{DISPATCH_NAME}'."]

"""The alerts app's django-q2 schedules, registered by `setup_schedules`."""

from __future__ import annotations

from django_q.models import Schedule

SCHEDULES = {
    "knowbe4sumo: check monitors": "alerts.tasks.check_monitors",
    "knowbe4sumo: deliver due notifications": "alerts.tasks.deliver_due",
}


def register() -> list[str]:
    """Create or update both every-minute schedules (idempotent); return one
    line per schedule for the command's output."""
    lines = []
    for name, func in SCHEDULES.items():
        _, created = Schedule.objects.update_or_create(
            name=name,
            defaults={
                "func": func,
                "schedule_type": Schedule.MINUTES,
                "minutes": 1,
                "repeats": -1,
            },
        )
        lines.append(f"{'Created' if created else 'Updated'} schedule '{name}'.")
    return lines

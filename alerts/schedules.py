"""The alerts app's django-q2 schedules, registered by `setup_schedules`."""

from __future__ import annotations

from collectors import schedules

SCHEDULES = {
    "knowbe4sumo: check monitors": "alerts.tasks.check_monitors",
    "knowbe4sumo: deliver due notifications": "alerts.tasks.deliver_due",
}


def register(using: str = "default") -> list[str]:
    """Create or update both every-minute schedules (idempotent); return one
    line per schedule for the command's output."""
    return [
        schedules.ensure(name, func, using=using) for name, func in SCHEDULES.items()
    ]

"""Registering django-q2 schedules: one way for every app.

Each app (collection, alerts, outputs) names its schedules and calls `ensure`
for each from its own `register(using)`; `setup_schedules` prints the lines,
and `after_migrate` runs the same registration after `migrate`, so a
deployment that runs only `migrate` and `qcluster` still has every schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime


def ensure(
    name: str,
    func: str,
    *,
    using: str = "default",
    daily: bool = False,
    first_run: datetime | None = None,
) -> str:
    """Create or update one repeating schedule (every minute, or daily), by
    name, idempotently; `first_run` is used only when it is created. Returns
    the line `setup_schedules` prints."""
    from django_q.models import Schedule

    defaults: dict = {"func": func, "repeats": -1}
    if daily:
        defaults["schedule_type"] = Schedule.DAILY
    else:
        defaults.update(schedule_type=Schedule.MINUTES, minutes=1)
    create = {**defaults, **({"next_run": first_run} if first_run else {})}
    _, created = Schedule.objects.using(using).update_or_create(
        name=name, defaults=defaults, create_defaults=create
    )
    return f"{'Created' if created else 'Updated'} schedule '{name}'."


def after_migrate(register: Callable[[str], object]) -> Callable:
    """A `post_migrate` receiver that runs `register(using)` once django-q2's
    table exists (connect it with `weak=False`: nothing else holds it)."""

    def receiver(sender, using: str = "default", **kwargs) -> None:
        from django.db import connections

        if "django_q_schedule" not in connections[using].introspection.table_names():
            return  # django_q not migrated (yet): its own migrate run comes later
        register(using)

    return receiver

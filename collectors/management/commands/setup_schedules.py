"""Register the every-minute schedules: the source dispatcher here, and each
other app's (alerts: monitor check and notification retries; outputs: the
dispatcher) from its own `schedules` module. Idempotent: run it on every deploy."""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django_q.models import Schedule

from alerts import schedules as alert_schedules
from collectors.tasks import DISPATCH_FUNC, DISPATCH_NAME
from outputs import schedules as output_schedules


class Command(BaseCommand):
    help = (
        "Create or update the every-minute django-q2 schedules: the source "
        "dispatcher, the monitor check, the notification retries and the "
        "outputs dispatcher."
    )

    def handle(self, *args, **options) -> None:
        schedule, created = Schedule.objects.update_or_create(
            name=DISPATCH_NAME,
            defaults={
                "func": DISPATCH_FUNC,
                "schedule_type": Schedule.MINUTES,
                "minutes": 1,
                "repeats": -1,
            },
        )
        verb = "Created" if created else "Updated"
        lines = [f"{verb} schedule '{schedule.name}' (every minute)."]
        lines += alert_schedules.register()
        lines += output_schedules.register()
        if options["verbosity"] > 0:
            for line in lines:
                self.stdout.write(line)

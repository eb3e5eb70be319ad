"""Register the dispatcher schedule and the alerts app's monitor-check and
notification-retry schedules (idempotent: run it on every deploy)."""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django_q.models import Schedule

from alerts import schedules as alert_schedules
from collectors.tasks import DISPATCH_FUNC, DISPATCH_NAME


class Command(BaseCommand):
    help = (
        "Create or update the every-minute django-q2 schedules: the source "
        "dispatcher, the monitor check and the notification retries."
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
        if options["verbosity"] > 0:
            for line in lines:
                self.stdout.write(line)

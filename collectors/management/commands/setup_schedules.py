"""Register the dispatcher schedule (idempotent: run it on every deploy)."""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django_q.models import Schedule

from collectors.tasks import DISPATCH_FUNC, DISPATCH_NAME


class Command(BaseCommand):
    help = (
        "Create or update the every-minute django-q2 schedule that dispatches sources."
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
        if options["verbosity"] > 0:
            self.stdout.write(f"{verb} schedule '{schedule.name}' (every minute).")

"""Register the every-minute schedules: the collectors' own (the source
dispatcher; `migrate` does it too, see `collectors.tasks.ensure_schedules`),
and each other app's (alerts: monitor check and notification retries; outputs:
the dispatcher) from its own `schedules` module. Idempotent: run it on every
deploy."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from alerts import schedules as alert_schedules
from collectors.tasks import ensure_schedules
from outputs import schedules as output_schedules


class Command(BaseCommand):
    help = (
        "Create or update the django-q2 schedules: the source dispatcher, the "
        "monitor check, the notification retries and the outputs dispatcher."
    )

    def handle(self, *args, **options) -> None:
        lines = ensure_schedules()
        lines += alert_schedules.register()
        lines += output_schedules.register()
        if options["verbosity"] > 0:
            for line in lines:
                self.stdout.write(line)

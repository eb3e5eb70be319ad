"""Deliver synchronously, without a qcluster: for operators and crash tests.

manage.py deliver                      one run of every due output
manage.py deliver --output 3           one run of output 3 (if it is due)
manage.py deliver --until-idle         repeat until no output has work now
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from outputs import delivery
from outputs.models import Output
from outputs.tasks import due_outputs


class Command(BaseCommand):
    help = "Run output delivery in this process (no qcluster needed)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--output", type=int, help="Only this output id.")
        parser.add_argument(
            "--until-idle",
            action="store_true",
            help="Repeat until nothing is due now (drains a backlog).",
        )

    def handle(self, *args, output: int | None, until_idle: bool, **options) -> None:
        if output is not None and not Output.objects.filter(pk=output).exists():
            raise CommandError(f"There is no output {output}.")
        while True:
            ran = [self._run(pk) for pk in self._due(output)]
            # A run cut short by its budget, or one that delivered and may
            # have more, is worth another turn; a failing one waits.
            if not until_idle or not any(r.more or r.batches for r in ran):
                break

    def _due(self, only: int | None) -> list[int]:
        # A lease left by a killed `deliver` process is taken over at once.
        ids = set(due_outputs().values_list("pk", flat=True))
        ids |= set(delivery.dead_leases())
        return sorted(i for i in ids if only is None or i == only)

    def _run(self, pk: int) -> delivery.DeliveryResult:
        result = delivery.run(pk)
        self.stdout.write(str(result))
        return result

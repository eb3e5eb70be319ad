"""Collect synchronously, without a qcluster: for operators and crash tests.

manage.py collect                      one run of every due source
manage.py collect --source 7           one run of source 7 (if it is due)
manage.py collect --until-idle         repeat until no source is due now
manage.py collect --source 7 --until-idle
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from collectors import engine, lifecycle
from collectors.models import Source


class Command(BaseCommand):
    help = "Run collection for due sources in this process (no qcluster needed)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--source", type=int, help="Only this source id.")
        parser.add_argument(
            "--until-idle",
            action="store_true",
            help="Repeat until nothing is due now (backfills in one command).",
        )

    def handle(self, *args, source: int | None, until_idle: bool, **options) -> None:
        if source is not None and not Source.objects.filter(pk=source).exists():
            raise CommandError(f"There is no source {source}.")
        while True:
            ran = [self._run(pk) for pk in self._due(source)]
            # Only a run cut short by its budget leaves work that is due now.
            if not until_idle or not any(r.more for r in ran):
                break

    def _due(self, only: int | None) -> list[int]:
        # A lease left by a killed `collect` process is taken over at once.
        ids = set(lifecycle.due_sources().values_list("pk", flat=True))
        ids |= set(lifecycle.dead_leases())
        return sorted(i for i in ids if only is None or i == only)

    def _run(self, pk: int) -> engine.RunResult:
        # The run itself moves a Pending source to Started (engine.prepare).
        result = engine.run(pk)
        self.stdout.write(str(result))
        return result

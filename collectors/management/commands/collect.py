"""Collect synchronously, without a qcluster: for operators and crash tests.

manage.py collect                      one run of every due source
manage.py collect --source 7           one run of source 7 (if it is due)
manage.py collect --until-idle         repeat until no source is due now
manage.py collect --source 7 --until-idle
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from collectors import collection
from collectors.models import Source
from collectors.tasks import due_sources

# Outcomes after which running the same source again at once is pointless.
FINAL = {
    "caught_up",
    "not_due",
    "error_state",
    "config_error",
    "retries_exhausted",
    "retrying",
    "throttled",
    "quota_exceeded",
    "deleted",
    "gone",
    "lease_held",
    "failed",
    "lease_lost",
}


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
            if not until_idle or not any(r.outcome not in FINAL for r in ran):
                break

    def _due(self, only: int | None) -> list[int]:
        # A lease left by a killed `collect` process is taken over at once.
        ids = set(due_sources().values_list("pk", flat=True))
        ids |= set(collection.dead_leases())
        return sorted(i for i in ids if only is None or i == only)

    def _run(self, pk: int) -> collection.RunResult:
        src = Source.objects.filter(pk=pk).only("pk", "state").first()
        if src is not None:
            collection.mark_started(src, "Collection run started (collect command)")
        result = collection.run(pk)
        self.stdout.write(str(result))
        return result

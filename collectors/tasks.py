"""django-q2 task functions: the dispatcher and one collection run.

Thin: which sources are due, claiming them and their leases are
`collectors.lifecycle`; a run is `collectors.engine.run`.

Task arguments are source ids only: django-q2 stores them (and shows them in
admin), so nothing secret may ever be passed. The dispatcher is registered as
schedule by `ensure_schedules()`: on every `migrate` (a post_migrate handler)
and by `manage.py setup_schedules`, so a deployment that forgets the command
still dispatches.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task

from collectors import engine, lifecycle, schedules
from collectors.models import HostedCollector

logger = logging.getLogger(__name__)

DISPATCH_NAME = "knowbe4sumo: dispatch due sources"
DISPATCH_FUNC = "collectors.tasks.dispatch"
RETENTION_NAME = "knowbe4sumo: apply retention"
RETENTION_FUNC = "collectors.tasks.apply_retention"
# The daily retention run, at a quiet hour (UTC).
RETENTION_AT = (3, 17)
COLLECT_FUNC = "collectors.tasks.collect_source"


def dispatch() -> int:
    """The every-minute schedule: queue one collection task per due source,
    and remove the collectors being deleted whose sources are all gone.

    A source whose lease is held by a dead process of this host (a SIGKILLed
    or OOM-killed worker) is due at once: its lease is freed first. Leases of
    other hosts cannot be checked from here and expire as usual.
    """
    HostedCollector.finish_deletions()
    lifecycle.free_dead_leases()
    queued = 0
    for source in lifecycle.due_sources().only("pk", "state"):
        if lifecycle.claim(source):
            async_task(COLLECT_FUNC, source.pk, group="collect")
            queued += 1
    if queued:
        logger.info("dispatcher: %d collection task(s) queued", queued)
    return queued


def ensure_schedules(using: str = "default") -> list[str]:
    """Create or update this app's schedules (idempotent); one line each for
    `setup_schedules` to print.

    The dispatcher runs every minute, the retention task daily; `catch_up` is
    off cluster-wide, so a stopped cluster does not replay missed runs.
    """
    return [
        schedules.ensure(DISPATCH_NAME, DISPATCH_FUNC, using=using),
        schedules.ensure(
            RETENTION_NAME,
            RETENTION_FUNC,
            using=using,
            daily=True,
            first_run=_next_quiet_hour(),
        ),
    ]


def _next_quiet_hour():
    """The next RETENTION_AT (UTC): the first retention run, then daily."""
    now = timezone.now()
    hour, minute = RETENTION_AT
    at = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return at if at > now else at + timedelta(days=1)


def apply_retention() -> str:
    """The daily schedule: delete what the retention settings no longer keep
    (collectors/retention.py); returns the counts (stored by django-q2)."""
    from collectors import retention

    counts = retention.apply()
    summary = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    logger.info("retention: deleted %s", summary)
    return f"deleted {summary}"


def dispatch_soon() -> None:
    """Queue a dispatcher run as soon as the current transaction commits.

    Called when a user saves, restarts or deletes a source, so that it moves on
    within seconds rather than at the next tick of the every-minute schedule.
    The dispatcher's own conditional UPDATEs keep an extra run harmless.
    """
    if settings.COLLECTION_DISPATCH_ON_SAVE:
        transaction.on_commit(lambda: async_task(DISPATCH_FUNC, group="dispatch"))


def collect_source(source_id: int) -> str:
    """One collection run; returns a summary (stored by django-q2, no secrets)."""
    try:
        return str(engine.run(int(source_id)))
    except Exception:  # run() never raises; this is the last line of defence.
        logger.exception("source %s: collection run failed", source_id)
        return f"source {source_id}: failed"

"""django-q2 task functions for outputs: the dispatcher and one delivery run.

Task arguments are output ids only (django-q2 stores and shows them): never
a URL or token. The dispatcher is registered by `outputs.schedules`, which
`manage.py setup_schedules` calls.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.db.models import Max, Q, QuerySet
from django.utils import timezone
from django_q.tasks import async_task

from collectors.choices import ErrorType
from collectors.models import LogMessage
from outputs import delivery
from outputs.models import Output

logger = logging.getLogger(__name__)

DISPATCH_NAME = "knowbe4sumo: dispatch due outputs"
DISPATCH_FUNC = "outputs.tasks.dispatch"
DELIVER_FUNC = "outputs.tasks.deliver_output"
# A queued task not picked up within this time is queued again (lost task).
DISPATCH_GRACE = timedelta(minutes=5)


def due_outputs(now=None) -> QuerySet[Output]:
    """Enabled outputs with messages after their checkpoint, not waiting on an
    edit (ThirdPartyConfig), a retry time, a lease or a queued task."""
    now = now or timezone.now()
    newest = LogMessage.objects.aggregate(top=Max("pk"))["top"] or 0
    free = Q(lease_expires__isnull=True) | Q(lease_expires__lt=now)
    not_queued = Q(dispatched_at__isnull=True) | Q(
        dispatched_at__lt=now - DISPATCH_GRACE
    )
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    return (
        Output.objects.filter(free, not_queued, due, enabled=True)
        .exclude(error_type=ErrorType.THIRD_PARTY_CONFIG)
        .filter(checkpoint__lt=newest)
        .order_by("pk")
    )


def claim(output_id: int, now=None) -> bool:
    """Mark the output queued with one conditional UPDATE, so two
    dispatchers never queue it twice."""
    now = now or timezone.now()
    not_queued = Q(dispatched_at__isnull=True) | Q(
        dispatched_at__lt=now - DISPATCH_GRACE
    )
    return bool(
        Output.objects.filter(not_queued, pk=output_id).update(dispatched_at=now)
    )


def dispatch() -> int:
    """The every-minute schedule: queue one delivery task per due output.

    Leases left by dead workers of this host are freed first (as for
    sources), so a killed worker's output is queued again within a minute.
    """
    delivery.free_dead_leases()
    queued = 0
    for pk in due_outputs().values_list("pk", flat=True):
        if claim(pk):
            async_task(DELIVER_FUNC, pk, group="deliver")
            queued += 1
    if queued:
        logger.info("outputs: %d delivery task(s) queued", queued)
    return queued


def dispatch_soon() -> None:
    """Queue a dispatcher run once the current transaction commits (after an
    output is saved or enabled), rather than at the next minute."""
    transaction.on_commit(lambda: async_task(DISPATCH_FUNC, group="dispatch"))


def deliver_output(output_id: int) -> str:
    """One delivery run; a run cut short by its budget queues the next one at
    once, so a large backlog drains without waiting for the schedule."""
    try:
        result = delivery.run(int(output_id))
    except Exception:  # run() never raises; this is the last line of defence.
        logger.exception("output %s: delivery run failed", output_id)
        return f"output {output_id}: failed"
    if result.more and claim(result.output_id):
        async_task(DELIVER_FUNC, result.output_id, group="deliver")
    return str(result)

"""The every-minute monitor check: evaluate every enabled monitor and, for
each one whose condition changed, record the change and notify once."""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from alerts import conditions, notify
from alerts.models import Monitor, Trigger

logger = logging.getLogger(__name__)


def check_monitors(now: datetime | None = None) -> int:
    """Check every enabled monitor at `now`; return how many changed.

    A monitor whose check fails (a saved filter that no longer validates, a
    database hiccup) is logged and skipped; the others are still checked.
    """
    now = now or timezone.now()
    check = conditions.Check(now)
    changed = 0
    monitors = Monitor.objects.filter(enabled=True).order_by("pk")
    for monitor in monitors:
        try:
            finding = conditions.evaluate(monitor, check)
            if finding.active != monitor.triggered and change(monitor, finding, check):
                changed += 1
        except Exception:
            logger.exception("monitor %s: check failed", monitor.pk)
    monitors.update(last_checked_at=now)
    return changed


def change(monitor: Monitor, finding: conditions.Finding, check) -> bool:
    """Flip the monitor, record the Trigger and its notifications, together.

    The flip is a conditional UPDATE inside the same transaction: of two
    overlapping checks only one flips, so the change is notified once.
    """
    state = Trigger.TRIGGERED if finding.active else Trigger.RESOLVED
    messages = conditions.sample_messages(monitor, check, finding)
    with transaction.atomic():
        if not monitor.flip(finding.active, check.now):
            return False
        details = {**finding.details, "message_ids": [m["id"] for m in messages]}
        trigger = Trigger.objects.create(
            monitor=monitor,
            state=state,
            at=check.now,
            summary=finding.summary,
            details=details,
        )
        notify.notify(monitor, trigger, messages)
    logger.info("monitor %s %s: %s", monitor.pk, state, finding.summary)
    return True

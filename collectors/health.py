"""Recording and resolving health events (the seed's Health Event Index).

One open event per (source, event name): a repeat of the same problem bumps
the open event's count and last-seen time instead of adding a row, and a
successful run resolves every open event of the source. The database enforces
the "one open" rule with a partial unique constraint; `record` copes with the
race where two writers both find no open event.
"""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from collectors.choices import EVENT_NAME_FOR_ERROR_TYPE, Severity
from collectors.models import HealthEvent, Source

logger = logging.getLogger(__name__)

FIX_CONFIG = "Check the API key and the Base URL in the source settings, then save."
FIX_KEY_UNREADABLE = (
    "The stored API key cannot be decrypted (the encryption keys changed): "
    "enter the API key again in the source settings."
)
FIX_FIRST_PARTY = (
    "An internal error occurred; collection retries on its own. If it persists, "
    "check the database and the worker logs."
)


def record(
    source: Source,
    error_type: str,
    *,
    code: str,
    message: str,
    suggested_fix: str = "",
    severity: str = Severity.WARNING,
) -> HealthEvent:
    """Open a health event for `source`, or bump the open one of the same name.

    The latest message, code, fix and severity win, so the panel always shows
    the current situation (a Warning that became "retries exhausted" turns
    into an Error in place).
    """
    name = EVENT_NAME_FOR_ERROR_TYPE[error_type]
    now = timezone.now()
    values = {
        "error_type": error_type,
        "severity": severity,
        "error_code": code[:64],
        "message": message,
        "suggested_fix": suggested_fix,
        "last_seen": now,
    }
    for _ in range(3):
        open_events = HealthEvent.objects.filter(
            source=source, event_name=name, resolved_at__isnull=True
        )
        if open_events.update(count=F("count") + 1, **values):
            return open_events.get()
        try:
            with transaction.atomic():
                return HealthEvent.objects.create(
                    source=source, event_name=name, first_seen=now, **values
                )
        except IntegrityError:
            continue  # Someone opened it meanwhile: bump theirs.
    raise RuntimeError("could not record a health event")  # pragma: no cover


def resolve(source: Source | int) -> int:
    """Resolve every open health event of a source; return how many."""
    source_id = source if isinstance(source, int) else source.pk
    resolved = HealthEvent.objects.filter(
        source_id=source_id, resolved_at__isnull=True
    ).update(resolved_at=timezone.now())
    if resolved:
        logger.info("source %s: %d health event(s) resolved", source_id, resolved)
    return resolved

"""Retention: what the daily task deletes, so history does not grow forever.

- resolved health events whose `resolved_at` is older than
  HEALTH_RETENTION_DAYS (default 90); open events are never deleted;
- state transitions older than HEALTH_RETENTION_DAYS;
- expired sign-in sessions;
- quarantined events already reprocessed (stored since, nothing left to do);
- collected messages whose time is older than MESSAGE_RETENTION_DAYS, only
  when that is set (the default keeps them forever).

Deletes go in batches of ids, so a first run over years of history never
holds the database's write lock (SQLite: every writer) for long.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.sessions.models import Session
from django.db.models import QuerySet
from django.utils import timezone

from collectors.models import (
    HealthEvent,
    LogMessage,
    QuarantinedEvent,
    StateTransition,
)

BATCH = 2000


def delete_in_batches(queryset: QuerySet, batch: int = BATCH) -> int:
    """Delete the rows of `queryset` a batch of ids at a time; how many."""
    model = queryset.model
    total = 0
    while ids := list(queryset.order_by().values_list("pk", flat=True)[:batch]):
        deleted, _ = model._default_manager.filter(pk__in=ids).delete()
        total += min(deleted, len(ids)) if deleted else 0
    return total


def apply(now: datetime | None = None) -> dict[str, int]:
    """Delete what the retention settings no longer keep; counts by kind."""
    now = now or timezone.now()
    history_cutoff = now - timedelta(days=settings.HEALTH_RETENTION_DAYS)
    counts = {
        "health events": delete_in_batches(
            HealthEvent.objects.filter(resolved_at__lt=history_cutoff)
        ),
        "state transitions": delete_in_batches(
            StateTransition.objects.filter(at__lt=history_cutoff)
        ),
        "sessions": delete_in_batches(Session.objects.filter(expire_date__lt=now)),
    }
    counts["quarantined events"] = delete_in_batches(
        QuarantinedEvent.objects.filter(reprocessed_at__isnull=False)
    )
    if settings.MESSAGE_RETENTION_DAYS:
        cutoff = now - timedelta(days=settings.MESSAGE_RETENTION_DAYS)
        counts["messages"] = delete_in_batches(
            LogMessage.objects.filter(message_time__lt=cutoff)
        )
    return counts

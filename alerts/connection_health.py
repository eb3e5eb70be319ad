"""A connection that keeps failing gets a health event of its own.

The collectors app's `health.record` files it under resource type
"Connection", so it shows on the Health Events page with the same icon and
panel as a source's; the next successful delivery resolves it.
"""

from __future__ import annotations

from django.db.models import F
from django.template.defaultfilters import pluralize

from alerts.models import Attempt, Connection, Notification
from collectors import health
from collectors.choices import ErrorType, Severity

FAILURES_FOR_WARNING = 3
FIX = (
    "Check the connection's URL or addresses, that the destination is up and "
    "accepts the request, then use Send test notification."
)


def after_attempt(
    connection: Connection, record: Attempt, notification: Notification
) -> None:
    """Count consecutive failures; open (or bump) the event past the
    threshold, as an Error once a notification gave up; resolve on success."""
    if record.ok:
        Connection.objects.filter(pk=connection.pk).update(
            failures=0, last_success_at=record.at
        )
        connection.failures, connection.last_success_at = 0, record.at
        health.resolve(connection)
        return
    Connection.objects.filter(pk=connection.pk).update(failures=F("failures") + 1)
    connection.refresh_from_db(fields=["failures"])
    gave_up = notification.status == "failed" and not notification.is_test
    if connection.failures < FAILURES_FOR_WARNING and not gave_up:
        return
    message = (
        f"Notifications to {connection.get_kind_display()} connection "
        f"“{connection.name}” keep failing ({connection.failures} "
        f"attempt{pluralize(connection.failures)} in a row): {record.result}"
    )
    if gave_up:
        message += " A notification was given up after 24 hours of retries."
    health.record(
        connection,
        ErrorType.THIRD_PARTY_GENERIC,
        code=str(record.status_code or "delivery_failed"),
        message=message,
        suggested_fix=FIX,
        severity=Severity.ERROR if gave_up else Severity.WARNING,
    )

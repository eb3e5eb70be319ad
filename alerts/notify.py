"""Notifications: the body for each kind of connection, the webhook
signature, and delivery with retries.

A notification's `payload` is built once when the monitor changes; every
attempt renders the same body from it and sends the same idempotency key.
Webhook bodies are signed (see `sign` and the README): a receiver recomputes
HMAC-SHA256 over `"<timestamp>." + body` with the shared secret.

Delivery runs on the django-q2 cluster: `deliver` makes one attempt under a
per-notification lease; a failure schedules the next attempt with a
doubling backoff (1 minute up to 1 hour) until 24 hours after the
notification was created, when it is marked Failed. A connection whose
deliveries keep failing gets a health event of its own.
"""

from __future__ import annotations

import hmac
import json
import logging
import smtplib
from datetime import datetime, timedelta
from email.utils import make_msgid

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import transaction
from django.db.models import Q
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.utils import timezone

from alerts import egress
from alerts.models import (
    Attempt,
    Connection,
    ConnectionKind,
    Monitor,
    Notification,
    NotificationStatus,
    Trigger,
)
from collectors import crypto

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Knowbe4sumo-Signature"
TIMESTAMP_HEADER = "X-Knowbe4sumo-Timestamp"
KEY_HEADER = "Idempotency-Key"
RETRY_FOR = timedelta(hours=24)
FIRST_BACKOFF = timedelta(minutes=1)
MAX_BACKOFF = timedelta(hours=1)
LEASE = timedelta(minutes=2)
TIMEOUT = 10.0
# Consecutive failed attempts after which a connection gets a health event.
FAILURES_FOR_HEALTH = 3
# Notifications one sweep retries: with 10 s timeouts, well within the task
# timeout (Q_CLUSTER["timeout"]); the rest wait for the next minute's sweep.
DUE_BATCH = 20
UNREADABLE = "The stored URL or secret cannot be decrypted: enter it again."


def site_url(path: str) -> str:
    return settings.SITE_URL + path


def build_payload(
    monitor: Monitor, trigger: Trigger, messages: list[dict] | None = None
) -> dict:
    """The generic JSON document of a monitor change (the webhook body)."""
    messages = messages or []
    return {
        "monitor": {
            "id": monitor.pk,
            "name": monitor.name,
            "kind": monitor.kind,
            "url": site_url(monitor.get_absolute_url()),
        },
        "state": trigger.state,
        "condition": monitor.describe(),
        "summary": trigger.summary,
        "at": trigger.at.isoformat(),
        "links": _links(monitor, trigger),
        "details": trigger.details,
        "messages": messages[:10],
        "messages_truncated": len(messages) >= 10,
    }


def _links(monitor: Monitor, trigger: Trigger) -> dict:
    """Absolute links to the resources a change concerns."""
    links = {"monitor": site_url(monitor.get_absolute_url())}
    sources = trigger.details.get("sources") or []
    if sources:
        links["sources"] = [
            site_url(reverse("source-detail", args=[s["id"]])) for s in sources[:10]
        ]
    if monitor.kind == "log":
        from urllib.parse import urlencode

        links["messages"] = site_url(reverse("messages")) + (
            "?" + urlencode(monitor.query) if monitor.query else ""
        )
    return links


def test_payload(connection: Connection, now: datetime) -> dict:
    """The body of "Send test notification": the same shape, no monitor."""
    return {
        "monitor": {"id": None, "name": "Test notification", "kind": "test"},
        "state": "test",
        "condition": "Sent from the Connections page to check this connection.",
        "summary": f"Test notification to connection {connection.name}",
        "at": now.isoformat(),
        "links": {"connections": site_url(reverse("connections"))},
        "details": {},
        "messages": [],
        "messages_truncated": False,
    }


def title(payload: dict) -> str:
    state = {"triggered": "Triggered", "resolved": "Resolved"}.get(
        payload["state"], "Test"
    )
    return f"[knowbe4sumo] {state}: {payload['monitor']['name']}"


def body_bytes(payload: dict) -> bytes:
    """The webhook body: compact, keys sorted, so every attempt is the same."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=` + hex HMAC-SHA256 of `"<timestamp>." + body` under `secret`."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, "sha256")
    return "sha256=" + mac.hexdigest()


def slack_body(payload: dict) -> dict:
    """A Slack incoming-webhook message: `text` (the notification fallback)
    and Block Kit `blocks` (a header, the summary, a link)."""
    link = payload["links"].get("monitor") or payload["links"].get("connections")
    lines = [f"*{payload['summary']}*", payload["condition"]]
    for m in payload["messages"][:5]:
        lines.append(f"• {m['message_time']} {m['event_type']} {m['user_email']}")
    return {
        "text": f"{title(payload)}: {payload['summary']}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title(payload)}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}},
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": f"<{link}|Open in knowbe4sumo>"}
                ],
            },
        ],
    }


def teams_body(payload: dict) -> dict:
    """A Microsoft Teams message carrying an Adaptive Card (the shape Teams
    workflow webhooks accept: `type: message` with one card attachment)."""
    link = payload["links"].get("monitor") or payload["links"].get("connections")
    facts = [
        {"title": "State", "value": payload["state"]},
        {"title": "Condition", "value": payload["condition"]},
        {"title": "At", "value": payload["at"]},
    ]
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {
                            "type": "TextBlock",
                            "size": "Medium",
                            "weight": "Bolder",
                            "text": title(payload),
                            "wrap": True,
                        },
                        {"type": "TextBlock", "text": payload["summary"], "wrap": True},
                        {"type": "FactSet", "facts": facts},
                    ],
                    "actions": [
                        {"type": "Action.OpenUrl", "title": "Open", "url": link}
                    ],
                },
            }
        ],
    }


def email_text(payload: dict) -> str:
    lines = [payload["summary"], "", f"Condition: {payload['condition']}"]
    lines.append(f"At: {payload['at']}")
    for name, url in payload["links"].items():
        lines.append(f"{name.capitalize()}: {url}")
    if payload["messages"]:
        lines += ["", "Matching messages (latest stored first):"]
        for m in payload["messages"]:
            lines.append(
                f"- {m['message_time']} {m['source_name']} {m['event_type']} "
                f"{m['user_email']} risk {m['risk_level']}"
            )
        if payload["messages_truncated"]:
            lines.append("(only the first 10 are listed)")
    return "\n".join(lines) + "\n"


def notify(monitor: Monitor, trigger: Trigger, messages: list[dict]) -> list[int]:
    """Create one notification per connection of the monitor; queue them
    once the transaction commits. Returns their ids."""
    payload = build_payload(monitor, trigger, messages)
    ids = []
    for connection in monitor.connections.all():
        n = Notification.objects.create(
            trigger=trigger,
            connection=connection,
            monitor_name=monitor.name,
            connection_name=connection.name,
            kind=connection.kind,
            destination=connection.destination,
            payload=payload,
            next_attempt_at=trigger.at,
            created=trigger.at,
        )
        ids.append(n.pk)
    if ids:
        transaction.on_commit(lambda: _queue(ids))
    return ids


def _queue(ids: list[int]) -> None:
    from django_q.tasks import async_task

    for pk in ids:
        async_task("alerts.tasks.deliver", pk, group="notify")


def backoff(attempts: int) -> timedelta:
    """1, 2, 4, … minutes after the n-th failed attempt, at most an hour."""
    return min(FIRST_BACKOFF * 2 ** max(attempts - 1, 0), MAX_BACKOFF)


def claim(pk: int, now: datetime) -> bool:
    """Take a due notification's lease (one conditional UPDATE), so the
    immediate task and the every-minute sweep never send it twice at once."""
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    return bool(
        Notification.objects.filter(
            free, pk=pk, status=NotificationStatus.PENDING, next_attempt_at__lte=now
        ).update(lease_until=now + LEASE)
    )


def send(notification: Notification, connection: Connection) -> tuple[int | None, str]:
    """One attempt: (HTTP status or None, result text). Raises on failure to
    connect (egress errors, SMTP errors); the texts never hold a secret."""
    payload = notification.payload
    if connection.kind == ConnectionKind.EMAIL:
        mail = EmailMessage(
            subject=title(payload),
            body=email_text(payload),
            to=connection.recipient_list(),
            headers={
                "Message-ID": make_msgid(idstring=str(notification.key)),
                "X-Knowbe4sumo-Notification": str(notification.key),
            },
        )
        mail.send(fail_silently=False)
        return None, f"Mailed to {len(mail.to)} recipient{pluralize(len(mail.to))}"
    if connection.kind == ConnectionKind.SLACK:
        body = body_bytes(slack_body(payload))
    elif connection.kind == ConnectionKind.TEAMS:
        body = body_bytes(teams_body(payload))
    else:
        body = body_bytes(payload)
    headers = {"Content-Type": "application/json", KEY_HEADER: str(notification.key)}
    if connection.kind == ConnectionKind.WEBHOOK:
        stamp = int(timezone.now().timestamp())
        headers[TIMESTAMP_HEADER] = str(stamp)
        headers[SIGNATURE_HEADER] = sign(connection.get_secret(), stamp, body)
    response = egress.post(
        connection.get_url(), data=body, headers=headers, timeout=TIMEOUT
    )
    return response.status_code, f"HTTP {response.status_code}"


def attempt(notification: Notification, now: datetime) -> Attempt:
    """Make one attempt and record it (status, result, next attempt)."""
    connection = notification.connection
    code: int | None = None
    try:
        if connection is None:
            raise LookupError("The connection was deleted.")
        code, result = send(notification, connection)
        ok = code is None or 200 <= code < 300
    except (egress.EgressRefused, egress.EgressError, LookupError) as exc:
        ok, result = False, str(exc)
    except crypto.KeyUnreadable:
        ok, result = (
            False,
            "The stored URL or secret cannot be decrypted: enter it again.",
        )
    except (smtplib.SMTPException, OSError) as exc:
        ok, result = False, f"The mail server failed: {type(exc).__name__}"
    record = Attempt.objects.create(
        notification=notification, at=now, ok=ok, status_code=code, result=result[:500]
    )
    _settle(notification, connection, record, now)
    return record


def _settle(notification, connection, record: Attempt, now: datetime) -> None:
    """Move the notification on after an attempt, and the connection's health."""
    notification.attempts += 1
    notification.last_result = record.result
    notification.lease_until = None
    if record.ok:
        notification.status = NotificationStatus.SENT
        notification.sent_at = now
    elif (
        notification.is_test
        or connection is None  # deleted: nowhere left to send it
        or now - notification.created >= RETRY_FOR
    ):
        notification.status = NotificationStatus.FAILED
    else:
        notification.next_attempt_at = now + backoff(notification.attempts)
    notification.save(
        update_fields=[
            "attempts",
            "last_result",
            "lease_until",
            "status",
            "sent_at",
            "next_attempt_at",
        ]
    )
    if connection is not None:
        from alerts import connection_health

        connection_health.after_attempt(connection, record, notification)


def deliver(pk: int, now: datetime | None = None) -> str:
    """One attempt at a due notification, if its lease can be taken."""
    now = now or timezone.now()
    if not claim(pk, now):
        return f"notification {pk}: not due or taken"
    notification = Notification.objects.select_related("connection").get(pk=pk)
    record = attempt(notification, now)
    return f"notification {pk}: {record.result}"


def due(now: datetime) -> list[int]:
    """Pending notifications whose next attempt has come (oldest first)."""
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    rows = Notification.objects.filter(
        free, status=NotificationStatus.PENDING, next_attempt_at__lte=now
    ).order_by("next_attempt_at", "pk")
    return list(rows.values_list("pk", flat=True)[:DUE_BATCH])


def deliver_due(now: datetime | None = None) -> int:
    """The every-minute sweep: retry each due notification."""
    now = now or timezone.now()
    done = 0
    for pk in due(now):
        if claim(pk, now):
            notification = Notification.objects.select_related("connection").get(pk=pk)
            attempt(notification, now)
            done += 1
    return done


def send_test(connection: Connection, now: datetime | None = None) -> Notification:
    """ "Send test notification": one attempt now, logged like the others."""
    now = now or timezone.now()
    notification = Notification.objects.create(
        connection=connection,
        connection_name=connection.name,
        kind=connection.kind,
        destination=connection.destination,
        is_test=True,
        payload=test_payload(connection, now),
        next_attempt_at=now,
        created=now,
    )
    if claim(notification.pk, now):
        attempt(notification, now)
    notification.refresh_from_db()
    return notification

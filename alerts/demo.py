"""`make run`'s demo monitors: a monitor firing into the console email and a
webhook entry in the Notifications log as soon as the sandbox is collected.

Created once, by name (a user's edits or deletions are left alone on the
next start): an email connection (the console backend prints the mail in the
qcluster's output), a signed webhook connection to the sandbox's
`/_sandbox/webhook` receiver, a log monitor on any KnowBe4 message stored in
the last 10 minutes and a health monitor on a source entering Error.
"""

from __future__ import annotations

import secrets

from alerts.models import Connection, ConnectionKind, HealthCondition, Monitor

MAIL = "Demo mail (console)"
WEBHOOK = "Demo webhook (sandbox)"
LOG_MONITOR = "Demo: KnowBe4 events stored"
HEALTH_MONITOR = "Demo: a source enters Error"


def ensure_demo(sandbox_url: str) -> list[str]:
    """Create what is missing; return a line for the start-up banner."""
    mail, _ = Connection.objects.get_or_create(
        name=MAIL,
        defaults={"kind": ConnectionKind.EMAIL, "recipients": "admin@localhost"},
    )
    webhook = Connection.objects.filter(name=WEBHOOK).first()
    if webhook is None:
        webhook = Connection(name=WEBHOOK, kind=ConnectionKind.WEBHOOK)
        webhook.set_url(f"{sandbox_url}/_sandbox/webhook")
        webhook.set_secret(secrets.token_hex(32))
        webhook.save()
    log, created = Monitor.objects.get_or_create(
        name=LOG_MONITOR,
        defaults={
            "kind": "log",
            "query": {"category": "*KnowBe4*"},
            "threshold": 0,
            "window_minutes": 10,
        },
    )
    if created:
        log.connections.set([mail, webhook])
    health, created = Monitor.objects.get_or_create(
        name=HEALTH_MONITOR,
        defaults={"kind": "health", "condition": HealthCondition.SOURCE_ERROR},
    )
    if created:
        health.connections.set([mail, webhook])
    return [
        f"Monitors: '{LOG_MONITOR}' fires within a minute of the first stored",
        "  events: the mail appears below (console email) and the webhook in",
        "  Notifications.",
    ]

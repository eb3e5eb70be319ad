"""Shared cast for the alerts tests: stored messages, monitors, connections."""

from __future__ import annotations

import itertools
import json
from datetime import datetime

from alerts.models import Connection, ConnectionKind, Monitor, MonitorKind
from collectors.models import LogMessage, Source

WEBHOOK_SECRET = "whsec-0123456789abcdef-test"
_ids = itertools.count(1)


def store_messages(
    source: Source, n: int, *, at: datetime, user: str = "ann@example.org", **kw
) -> list[LogMessage]:
    """`n` messages of `source` as if collected (received) at `at`."""
    rows = []
    for _ in range(n):
        i = next(_ids)
        raw = {"id": i, "event_type": {"name": kw.get("event_type", "Phish")}}
        rows.append(
            LogMessage(
                source=source,
                event_id=str(i),
                raw=json.dumps(raw),
                message_time=kw.get("message_time", at),
                receipt_time=at,
                source_name=source.name,
                source_category=kw.get("category", source.category),
                collector_name=source.collector.name,
                event_type=kw.get("event_type", "Phish"),
                risk_level=kw.get("risk_level", 5),
                user_email=user,
            )
        )
    return LogMessage.objects.bulk_create(rows)


def make_connection(
    kind: str = ConnectionKind.EMAIL, name: str = "", url: str = "", **kw
) -> Connection:
    connection = Connection(name=name or f"{kind} connection", kind=kind, **kw)
    if kind == ConnectionKind.EMAIL:
        connection.recipients = connection.recipients or "soc@example.org"
    else:
        connection.set_url(url)
    if kind == ConnectionKind.WEBHOOK:
        connection.set_secret(WEBHOOK_SECRET)
    connection.save()
    return connection


def make_log_monitor(connections=(), **kw) -> Monitor:
    kw.setdefault("name", "Too many phishing clicks")
    kw.setdefault("threshold", 2)
    kw.setdefault("window_minutes", 10)
    monitor = Monitor.objects.create(kind=MonitorKind.LOG, **kw)
    monitor.connections.set(connections)
    return monitor


def make_health_monitor(condition: str, connections=(), **kw) -> Monitor:
    kw.setdefault("name", f"Health: {condition}")
    monitor = Monitor.objects.create(kind=MonitorKind.HEALTH, condition=condition, **kw)
    monitor.connections.set(connections)
    return monitor

"""Notification connections: email (locmem), signed webhooks against a local
receiver that verifies the signature, the Slack and Teams bodies, retries
after 500s with time moved, the 24-hour limit, and a failing connection's
health event."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from alerts import checks, notify
from alerts.models import ConnectionKind, Notification, NotificationStatus
from collectors.models import HealthEvent
from tests.alerts_support import (
    WEBHOOK_SECRET,
    make_connection,
    make_log_monitor,
    store_messages,
)
from tests.receiver_support import running_receiver

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _local_receivers(settings):
    """The receivers listen on 127.0.0.1 over http: allowed for these tests
    only (tests/test_egress.py covers the refusal)."""
    settings.EGRESS_ALLOW_PRIVATE = True
    settings.SITE_URL = "https://kb4.example.org"


@pytest.fixture
def receiver():
    with running_receiver() as rx:
        yield rx


def trigger_once(source, connection, n=3, **monitor):
    """A log monitor on `connection` that triggers at T0+1min."""
    monitor = make_log_monitor([connection], threshold=n - 1, **monitor)
    store_messages(source, n, at=T0)
    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        assert checks.check_monitors() == 1
    return monitor


def deliver_all(at: datetime) -> int:
    with time_machine.travel(at, tick=False):
        return notify.deliver_due()


def verify(secret: str, headers: dict, body: bytes) -> bool:
    """What the README tells a receiver to do."""
    stamp = headers["X-Knowbe4sumo-Timestamp"]
    mac = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256)
    expected = "sha256=" + mac.hexdigest()
    return hmac.compare_digest(expected, headers["X-Knowbe4sumo-Signature"])


def test_it_mails_a_trigger_with_the_matching_messages(source, mailoutbox):
    connection = make_connection(recipients="soc@example.org, it@example.org")
    trigger_once(source, connection, name="Clicks")
    assert deliver_all(T0 + timedelta(minutes=1)) == 1
    (mail,) = mailoutbox
    assert mail.to == ["soc@example.org", "it@example.org"]
    assert mail.subject == "[knowbe4sumo] Triggered: Clicks"
    assert "3 matching messages" in mail.body
    assert "https://kb4.example.org/monitors/" in mail.body
    assert mail.body.count("ann@example.org") == 3
    n = Notification.objects.get()
    assert n.status == NotificationStatus.SENT and n.attempts == 1
    assert str(n.key) in mail.extra_headers["Message-ID"]


def test_it_signs_webhooks_so_a_receiver_can_verify_them(source, receiver):
    connection = make_connection(ConnectionKind.WEBHOOK, url=receiver.url("/hook"))
    monitor = trigger_once(source, connection)
    deliver_all(T0 + timedelta(minutes=1))
    (got,) = receiver.requests
    assert verify(WEBHOOK_SECRET, got.headers, got.body)
    assert not verify("another-secret-entirely", got.headers, got.body)
    assert not verify(WEBHOOK_SECRET, got.headers, got.body + b" ")
    body = got.json()
    assert body["monitor"]["name"] == monitor.name and body["state"] == "triggered"
    assert body["links"]["monitor"] == f"https://kb4.example.org/monitors/{monitor.pk}/"
    assert len(body["messages"]) == 3 and body["messages_truncated"] is False
    assert got.headers["Idempotency-Key"] == str(Notification.objects.get().key)
    assert int(got.headers["X-Knowbe4sumo-Timestamp"]) == int(
        (T0 + timedelta(minutes=1)).timestamp()
    )


def test_it_sends_at_most_ten_messages_each_cut_short(source, receiver):
    connection = make_connection(ConnectionKind.WEBHOOK, url=receiver.url("/hook"))
    trigger_once(source, connection, n=25)
    deliver_all(T0 + timedelta(minutes=1))
    body = receiver.requests[0].json()
    assert len(body["messages"]) == 10 and body["messages_truncated"] is True
    assert body["details"]["count"] == 25


def test_it_posts_slack_incoming_webhook_blocks(source, receiver):
    connection = make_connection(ConnectionKind.SLACK, url=receiver.url("/slack"))
    trigger_once(source, connection, name="Clicks")
    deliver_all(T0 + timedelta(minutes=1))
    body = receiver.requests[0].json()
    assert body["text"].startswith("[knowbe4sumo] Triggered: Clicks")
    kinds = [block["type"] for block in body["blocks"]]
    assert kinds == ["header", "section", "context"]
    assert body["blocks"][0]["text"]["type"] == "plain_text"
    assert body["blocks"][1]["text"]["type"] == "mrkdwn"
    assert "X-Knowbe4sumo-Signature" not in receiver.requests[0].headers


def test_it_posts_a_teams_adaptive_card(source, receiver):
    connection = make_connection(ConnectionKind.TEAMS, url=receiver.url("/teams"))
    trigger_once(source, connection, name="Clicks")
    deliver_all(T0 + timedelta(minutes=1))
    body = receiver.requests[0].json()
    assert body["type"] == "message"
    (attachment,) = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["body"][0]["text"] == "[knowbe4sumo] Triggered: Clicks"
    assert card["actions"][0]["type"] == "Action.OpenUrl"


def test_it_retries_after_500s_with_the_same_key_and_body(source, receiver):
    connection = make_connection(ConnectionKind.WEBHOOK, url=receiver.url("/hook"))
    trigger_once(source, connection)
    receiver.statuses = [500, 500]
    start = T0 + timedelta(minutes=1)
    assert deliver_all(start) == 1  # 500
    assert deliver_all(start + timedelta(seconds=30)) == 0  # not due yet
    assert deliver_all(start + timedelta(minutes=1)) == 1  # 500, backoff 2 min
    assert deliver_all(start + timedelta(minutes=2)) == 0
    assert deliver_all(start + timedelta(minutes=3)) == 1  # 200
    n = Notification.objects.get()
    assert n.status == NotificationStatus.SENT and n.attempts == 3
    assert [a.status_code for a in n.attempt_log.all()] == [500, 500, 200]
    keys = {r.headers["Idempotency-Key"] for r in receiver.requests}
    bodies = {r.body for r in receiver.requests}
    assert keys == {str(n.key)} and len(bodies) == 1
    assert deliver_all(start + timedelta(hours=1)) == 0  # sent: never again


def test_it_gives_up_after_24_hours_and_opens_a_health_event(source, receiver):
    connection = make_connection(ConnectionKind.WEBHOOK, url=receiver.url("/hook"))
    trigger_once(source, connection)
    receiver.respond = lambda req: (503, {}, b"down")
    at = T0 + timedelta(minutes=1)
    attempts = 0
    while Notification.objects.get().status == NotificationStatus.PENDING:
        at = Notification.objects.get().next_attempt_at
        attempts += deliver_all(at)
        assert attempts < 60
    n = Notification.objects.get()
    assert n.status == NotificationStatus.FAILED
    assert at - n.created >= timedelta(hours=24)
    assert len(receiver.requests) == n.attempts == attempts
    event = HealthEvent.objects.get(resource_type="Connection")
    assert event.resource_id == connection.pk and event.severity == "error"
    assert "keep failing" in event.message and "HTTP 503" in event.message
    assert event.resolved_at is None


def test_it_resolves_the_connection_health_event_on_the_next_success(source, receiver):
    connection = make_connection(ConnectionKind.WEBHOOK, url=receiver.url("/hook"))
    trigger_once(source, connection)
    receiver.statuses = [500, 500, 500]
    at = T0 + timedelta(minutes=1)
    for _ in range(3):
        deliver_all(at)
        at = Notification.objects.get().next_attempt_at
    event = HealthEvent.objects.get(resource_type="Connection")
    assert event.severity == "warning" and event.resolved_at is None
    deliver_all(at)
    event.refresh_from_db()
    assert event.resolved_at is not None


def test_it_never_delivers_twice_while_an_attempt_holds_the_lease(source, receiver):
    connection = make_connection(ConnectionKind.WEBHOOK, url=receiver.url("/hook"))
    trigger_once(source, connection)
    n = Notification.objects.get()
    at = T0 + timedelta(minutes=1)
    assert notify.claim(n.pk, at)  # a worker is sending it
    assert notify.deliver(n.pk, now=at).endswith("not due or taken")
    assert deliver_all(at) == 0 and receiver.requests == []


def test_it_records_a_refused_destination_without_the_url(source, settings):
    settings.EGRESS_ALLOW_PRIVATE = False
    secret_url = "https://127.0.0.1/services/T0/B0/s3cr3t"
    connection = make_connection(ConnectionKind.SLACK, url=secret_url)
    trigger_once(source, connection)
    deliver_all(T0 + timedelta(minutes=1))
    n = Notification.objects.get()
    assert "loopback" in n.last_result and "s3cr3t" not in n.last_result
    assert "s3cr3t" not in n.destination
    assert n.status == NotificationStatus.PENDING  # retried later


def test_it_sends_a_test_notification_once(receiver, db):
    connection = make_connection(ConnectionKind.WEBHOOK, url=receiver.url("/hook"))
    n = notify.send_test(connection)
    assert n.status == NotificationStatus.SENT and n.is_test
    assert receiver.requests[0].json()["state"] == "test"
    receiver.statuses = [500]
    failed = notify.send_test(connection)
    assert failed.status == NotificationStatus.FAILED and failed.attempts == 1


def test_it_queues_each_notification_on_the_cluster_after_commit(
    source, django_capture_on_commit_callbacks, monkeypatch
):
    queued = []
    monkeypatch.setattr(
        "django_q.tasks.async_task", lambda func, *args, **kw: queued.append(args)
    )
    a, b = make_connection(name="a"), make_connection(name="b")
    make_log_monitor([a, b], threshold=0)
    store_messages(source, 1, at=T0)
    with (
        django_capture_on_commit_callbacks(execute=True),
        time_machine.travel(T0 + timedelta(minutes=1), tick=False),
    ):
        checks.check_monitors()
    ids = sorted(Notification.objects.values_list("pk", flat=True))
    assert sorted(args[0] for args in queued) == ids  # ids only, no secrets


def test_it_shows_a_failing_connection_with_the_health_icon_and_panel(
    source, receiver, admin_client
):
    from django.urls import reverse

    connection = make_connection(ConnectionKind.WEBHOOK, url=receiver.url("/hook"))
    trigger_once(source, connection)
    receiver.respond = lambda req: (500, {}, b"")
    at = T0 + timedelta(minutes=1)
    for _ in range(3):
        deliver_all(at)
        at = Notification.objects.get().next_attempt_at
    page = admin_client.get(reverse("connections")).content.decode()
    panel_url = reverse("connection-health", args=[connection.pk])
    assert f'data-health-url="{panel_url}"' in page
    assert 'data-status="warning"' in page and "0 errors, 1 warning" in page
    panel = admin_client.get(panel_url).content.decode()
    assert "keep failing" in panel and "HTTP 500" in panel
    receiver.respond = None
    deliver_all(at)
    page = admin_client.get(reverse("connections")).content.decode()
    assert 'data-status="healthy"' in page
    assert "Last successful delivery" in page


def test_it_gives_up_at_once_on_a_notification_whose_connection_was_deleted(
    source, mailoutbox
):
    connection = make_connection()
    trigger_once(source, connection)
    connection.delete()
    deliver_all(T0 + timedelta(minutes=1))
    n = Notification.objects.get()
    assert n.status == NotificationStatus.FAILED and n.attempts == 1
    assert n.last_result == "The connection was deleted." and mailoutbox == []

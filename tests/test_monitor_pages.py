"""The Monitors, Connections and Notifications pages: forms, prefill from
the Messages page and a health event, masking of secrets, bad input, and a
constant number of queries on the lists."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from django.db import connection as db
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from alerts import egress
from alerts.models import (
    Connection,
    ConnectionKind,
    HealthCondition,
    Monitor,
    MonitorKind,
    Notification,
)
from collectors.models import HealthEvent
from tests.alerts_support import make_connection, make_log_monitor

pytestmark = pytest.mark.django_db
SLACK_URL = "https://hooks.slack.example.com/services/T000/B000/Zz9SeCrEtToKeNwxyz"


@pytest.fixture
def public_dns(monkeypatch):
    """Every name resolves to a public address (no DNS in the test sandbox);
    IP literals stay themselves."""

    def resolve(host, port):
        try:
            address = str(ipaddress.ip_address(host))
        except ValueError:
            address = "93.184.215.14"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(egress, "_resolve", resolve)


def test_it_creates_a_log_monitor_from_the_form(admin_client, source):
    connection = make_connection()
    response = admin_client.post(
        reverse("monitor-add"),
        {
            "name": "Risky clicks",
            "kind": "log",
            "category": "Security/*",
            "log_source": source.pk,
            "risk_level": "9",
            "threshold": "5",
            "window_minutes": "15",
            "per_user": "on",
            "connections": [connection.pk],
            "enabled": "on",
            "scope": "all",
            "warning_minutes": "30",
            "stale_hours": "24",
        },
    )
    monitor = Monitor.objects.get()
    assert response.status_code == 302 and response["Location"] == (
        monitor.get_absolute_url()
    )
    assert monitor.kind == MonitorKind.LOG and monitor.per_user
    assert monitor.query == {
        "category": "Security/*",
        "source": source.pk,
        "risk_level": 9,
    }
    assert list(monitor.connections.all()) == [connection]
    page = admin_client.get(monitor.get_absolute_url()).content.decode()
    assert "any one user has more than 5" in page


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": "health", "condition": ""}, "condition"),
        ({"kind": "health", "condition": "stale", "scope": "collector"}, "collector"),
        ({"kind": "health", "condition": "stale", "scope": "sources"}, "sources"),
        ({"window_minutes": "0"}, "window_minutes"),
        ({"window_minutes": "999999"}, "window_minutes"),
        ({"risk_level": "11"}, "risk_level"),
        ({"threshold": "-1"}, "threshold"),
        ({"kind": "sideways"}, "kind"),
        ({"log_source": "999999"}, "log_source"),
    ],
)
def test_it_refuses_a_bad_monitor_with_a_message_and_saves_nothing(
    admin_client, change, field
):
    data = {
        "name": "M",
        "kind": "log",
        "threshold": "1",
        "window_minutes": "10",
        "scope": "all",
        "warning_minutes": "30",
        "stale_hours": "24",
        **change,
    }
    response = admin_client.post(reverse("monitor-add"), data)
    assert response.status_code == 200
    assert response.context["form"].errors.get(field), response.context["form"].errors
    assert Monitor.objects.count() == 0


def test_it_prefills_a_log_monitor_from_the_messages_page(admin_client, source):
    html = admin_client.get(
        reverse("messages"), {"category": "Security/*", "risk_level": "9"}
    ).content.decode()
    link = reverse("monitor-add") + "?kind=log&amp;category=Security%2F%2A"
    assert link in html
    form = admin_client.get(
        reverse("monitor-add"),
        {"kind": "log", "category": "Security/*", "risk_level": "9", "range": "7d"},
    ).context["form"]
    assert form.initial["kind"] == "log"
    assert form.initial["category"] == "Security/*"
    assert form.initial["risk_level"] == "9"


def test_it_prefills_a_health_monitor_from_a_health_event(admin_client, source):
    event = HealthEvent.objects.create(
        source=source,
        resource_type="Source",
        resource_id=source.pk,
        resource_name=source.name,
        event_name="ThirdPartyConfigError",
        error_type="ThirdPartyConfig",
        severity="error",
        message="401",
    )
    html = admin_client.get(
        reverse("health-event-detail", args=[event.pk])
    ).content.decode()
    assert (
        f"{reverse('monitor-add')}?kind=health&amp;condition=source_error"
        f"&amp;source={source.pk}"
    ) in html
    form = admin_client.get(
        reverse("monitor-add"),
        {"kind": "health", "condition": "source_error", "source": source.pk},
    ).context["form"]
    assert form.initial["condition"] == HealthCondition.SOURCE_ERROR
    assert form.initial["sources"] == [source.pk]
    assert f'value="{source.pk}" selected' in str(form["sources"])


def test_it_hides_the_create_monitor_links_from_a_viewer(role_client, source):
    html = role_client("Viewer").get(reverse("messages")).content.decode()
    assert reverse("monitor-add") not in html


def test_it_stores_a_connection_url_encrypted_and_shows_it_masked(
    admin_client, public_dns
):
    response = admin_client.post(
        reverse("connection-add"),
        {"name": "SOC Slack", "kind": "slack", "url": SLACK_URL},
    )
    assert response.status_code == 302
    connection = Connection.objects.get()
    assert "Zz9SeCrEt" not in connection.url_encrypted
    assert connection.get_url() == SLACK_URL
    assert connection.url_hint == "https://hooks.slack.example.com/…wxyz"
    for url in (
        reverse("connections"),
        reverse("connection-edit", args=[connection.pk]),
        reverse("admin:alerts_connection_change", args=[connection.pk]),
        reverse("admin:alerts_connection_changelist"),
    ):
        html = admin_client.get(url).content.decode()
        assert "Zz9SeCrEt" not in html and "T000" not in html, url


def test_it_keeps_the_stored_url_and_secret_when_left_blank(admin_client, public_dns):
    connection = make_connection(
        ConnectionKind.WEBHOOK, name="Hook", url="https://hooks.example.com/x/abcd"
    )
    response = admin_client.post(
        reverse("connection-edit", args=[connection.pk]),
        {"name": "Hook renamed", "kind": "webhook", "url": "", "secret": ""},
    )
    assert response.status_code == 302
    connection.refresh_from_db()
    assert connection.name == "Hook renamed"
    assert connection.get_url() == "https://hooks.example.com/x/abcd"
    assert connection.get_secret()


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"kind": "webhook", "url": "http://hooks.example.com/x"}, "url", "https"),
        ({"kind": "slack", "url": "https://127.0.0.1/x"}, "url", "loopback"),
        ({"kind": "teams", "url": "https://10.0.0.5/x"}, "url", "private"),
        ({"kind": "teams", "url": ""}, "url", "Enter the destination URL"),
        (
            {"kind": "webhook", "url": "https://hooks.example.com/x", "secret": "s"},
            "secret",
            "at least 16",
        ),
        (
            {"kind": "email", "recipients": "soc@example.org, nope"},
            "recipients",
            "nope",
        ),
        ({"kind": "email", "recipients": ""}, "recipients", "at least one"),
    ],
)
def test_it_refuses_a_bad_connection_with_a_message(
    admin_client, public_dns, data, field, message
):
    response = admin_client.post(reverse("connection-add"), {"name": "C", **data})
    assert response.status_code == 200
    errors = " ".join(response.context["form"].errors.get(field, []))
    assert message in errors, response.context["form"].errors
    assert Connection.objects.count() == 0


def test_it_refuses_a_name_resolving_to_a_private_address(admin_client, monkeypatch):
    def resolve(host, port):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.168.0.10", port))]

    monkeypatch.setattr(egress, "_resolve", resolve)
    response = admin_client.post(
        reverse("connection-add"),
        {"name": "C", "kind": "slack", "url": "https://intranet.example.com/x"},
    )
    assert "private address" in str(response.context["form"].errors["url"])


def test_it_sends_a_test_notification_from_the_connections_page(
    admin_client, mailoutbox
):
    connection = make_connection(recipients="soc@example.org")
    response = admin_client.post(reverse("connection-test", args=[connection.pk]))
    n = Notification.objects.get()
    assert response["Location"] == reverse("notification-detail", args=[n.pk])
    assert len(mailoutbox) == 1 and n.status == "sent"
    page = admin_client.get(response["Location"]).content.decode()
    assert "Mailed to 1 recipient" in page


def test_it_disables_and_deletes_a_monitor(admin_client):
    monitor = make_log_monitor()
    admin_client.post(reverse("monitor-toggle", args=[monitor.pk]))
    monitor.refresh_from_db()
    assert not monitor.enabled
    admin_client.post(reverse("monitor-delete", args=[monitor.pk]))
    assert not Monitor.objects.exists()


def test_it_lists_monitors_connections_and_notifications_in_constant_queries(
    admin_client,
):
    def grow(n: int) -> None:
        for _ in range(n):
            c = make_connection(name=f"c{Connection.objects.count()}")
            make_log_monitor([c], name=f"m{Monitor.objects.count()}")
            Notification.objects.create(
                connection=c,
                connection_name=c.name,
                kind=c.kind,
                payload={"state": "triggered", "summary": "s", "monitor": {}},
            )

    counts = {}
    for size in (1, 10):
        grow(size)
        for name in ("monitors", "connections", "notifications"):
            with CaptureQueriesContext(db) as captured:
                assert admin_client.get(reverse(name)).status_code == 200
            counts.setdefault(name, []).append(len(captured.captured_queries))
    for name, (small, large) in counts.items():
        assert small == large, (name, small, large)

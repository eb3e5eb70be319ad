"""A per-user time zone: UTC by default, or the browser's; applied on every
page, in the filters and in the human columns of CSV exports, while stored
times stay UTC."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from collectors.models import LogMessage, UserPreference
from collectors.timezones import COOKIE, zone_named

pytestmark = pytest.mark.django_db

WHEN = datetime(2026, 11, 27, 11, 0, tzinfo=UTC)  # 12:00 in Paris (CET)


@pytest.fixture
def message(source):
    return LogMessage.objects.create(
        source=source,
        event_id="evt-1",
        raw="{}",
        message_time=WHEN,
        receipt_time=WHEN,
        source_name=source.name,
        source_category="Security/KnowBe4",
        collector_name=source.collector.name,
    )


def browser_mode(client, user, zone: str = "Europe/Paris"):
    """Choose "My browser's time zone" on the preferences page, as a user does."""
    client.cookies[COOKIE] = zone
    resp = client.post(reverse("preferences"), {"time_zone": "browser"})
    assert resp.status_code == 302
    return client


def test_it_shows_utc_by_default(admin_client, message):
    body = admin_client.get(reverse("messages")).content.decode()
    assert "2026-11-27 11:00:00" in body and "_messagetime (UTC)" in body
    assert "From (UTC)" in body


def test_it_shows_the_browsers_zone_once_chosen(admin_client, admin_user, message):
    browser_mode(admin_client, admin_user)
    assert UserPreference.objects.get(user=admin_user).time_zone == "browser"
    body = admin_client.get(reverse("messages")).content.decode()
    assert "2026-11-27 12:00:00" in body
    assert "_messagetime (Europe/Paris)" in body and "From (Europe/Paris)" in body
    message.refresh_from_db()
    assert message.message_time == WHEN  # stored times stay UTC


def test_it_keeps_the_choice_across_sign_ins(client, admin_user, message):
    client.force_login(admin_user)
    browser_mode(client, admin_user)
    client.logout()
    client.force_login(admin_user)
    client.cookies[COOKIE] = "Asia/Tokyo"
    assert "2026-11-27 20:00:00" in client.get(reverse("messages")).content.decode()


def test_it_reads_filter_times_in_the_users_zone(admin_client, admin_user, message):
    browser_mode(admin_client, admin_user)
    url = reverse("messages")
    shown = admin_client.get(url, {"since": "2026-11-27T12:00"}).context["page"].rows
    assert [m.pk for m in shown] == [message.pk]
    later = admin_client.get(url, {"since": "2026-11-27T12:01"}).context["page"].rows
    assert later == []


def test_it_writes_the_human_csv_columns_in_the_users_zone(
    admin_client, admin_user, message
):
    browser_mode(admin_client, admin_user, "America/New_York")
    resp = admin_client.get(reverse("messages-export", args=["csv"]))
    text = b"".join(resp.streaming_content).decode("utf-8-sig")
    row = next(csv.DictReader(io.StringIO(text)))
    assert row["Message time"] == "2026-11-27 06:00:00 -0500"
    assert row["Receipt time"] == "2026-11-27 06:00:00 -0500"
    assert row["_messagetime"] == "2026-11-27T11:00:00+00:00"


def test_it_writes_utc_human_columns_by_default(admin_client, message):
    resp = admin_client.get(reverse("messages-export", args=["csv"]))
    text = b"".join(resp.streaming_content).decode("utf-8-sig")
    assert next(csv.DictReader(io.StringIO(text)))["Message time"] == (
        "2026-11-27 11:00:00 +0000"
    )


@pytest.mark.parametrize(
    "cookie", ["", "Mars/Olympus", "../../etc/passwd", "Europe/Paris\x00", "x" * 80]
)
def test_it_falls_back_to_utc_for_an_unknown_browser_zone(
    admin_client, admin_user, message, cookie
):
    browser_mode(admin_client, admin_user)
    admin_client.cookies[COOKIE] = cookie
    resp = admin_client.get(reverse("messages"))
    assert resp.status_code == 200
    assert "2026-11-27 11:00:00" in resp.content.decode()
    assert zone_named(cookie) is None


def test_it_says_which_zone_the_preferences_page_shows(admin_client):
    admin_client.cookies[COOKIE] = "Europe/Paris"
    body = admin_client.get(reverse("preferences")).content.decode()
    assert "(Europe/Paris)" in body and "data-active-zone>UTC<" in body
    bad = admin_client.post(reverse("preferences"), {"time_zone": "mars"})
    assert bad.status_code == 200 and "Select a valid choice" in bad.content.decode()
    assert not UserPreference.objects.exclude(time_zone="utc").exists()


def test_it_applies_the_zone_to_the_health_tooltip(admin_client, admin_user, source):
    source.last_success_at = WHEN
    source.save()
    browser_mode(admin_client, admin_user)
    body = admin_client.get(reverse("collection")).content.decode()
    assert "Last successful collection: 2026-11-27 12:00 CET" in body


def test_it_costs_no_query_per_page(admin_client, admin_user, message):
    """The choice lives in the session: local times cost no extra query."""
    url = reverse("messages")
    admin_client.get(url)
    with CaptureQueriesContext(connection) as utc:
        admin_client.get(url)
    browser_mode(admin_client, admin_user)
    admin_client.get(url)
    with CaptureQueriesContext(connection) as local:
        body = admin_client.get(url).content.decode()
    assert "2026-11-27 12:00:00" in body
    assert len(utc.captured_queries) > 0
    assert len(local.captured_queries) == len(utc.captured_queries)

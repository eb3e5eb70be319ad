"""The source page: state, timeline, checkpoint, retries, volume, actions."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
import time_machine
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from collectors import crypto, ledger, ratelimit
from collectors.choices import ErrorType, HealthEventName, Severity, SourceState
from collectors.models import HealthEvent, LogMessage
from tests.cast import API_KEY, make_source

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def add_messages(source, n: int, *, received: datetime, start: int = 0) -> None:
    LogMessage.objects.bulk_create(
        LogMessage(
            source=source,
            event_id=f"evt-{start + i}",
            raw="{}",
            message_time=received - timedelta(days=1),
            receipt_time=received,
            source_name=source.name,
            source_category=source.category,
            collector_name=source.collector.name,
        )
        for i in range(n)
    )


def get(client, source):
    resp = client.get(reverse("source-detail", args=[source.pk]))
    assert resp.status_code == 200
    return resp.content.decode()


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_it_shows_the_state_and_the_timeline(admin_client, source):
    source.transition(SourceState.STARTED, "Collection task created")
    source.transition(SourceState.INITIALIZED, "Task configured")
    html = get(admin_client, source)
    assert "Collection task created" in html and "Task configured" in html
    assert html.index("Collection task created") < html.index("Task configured")
    assert 'class="state state-initialized" data-state>Initialized' in html


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_it_shows_the_checkpoint(admin_client, source):
    source.last_complete_day = date(2026, 11, 24)
    source.cursor_day = date(2026, 11, 25)
    source.cursor_page = 7
    source.save()
    html = get(admin_client, source)
    assert "every day up to <strong>2026-11-24</strong> stored" in html
    assert "reading 2026-11-25 from page 7" in html


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
@pytest.mark.parametrize(
    ("state", "done", "text"),
    [
        (SourceState.ERROR, None, "not started: no closed day is stored yet"),
        (SourceState.COLLECTING, date(2026, 11, 26), "every closed day is stored"),
        (
            SourceState.COLLECTING,
            date(2026, 11, 25),
            "caught up to 2026-11-25; the days after it are read at the next attempt",
        ),
    ],
)
def test_it_says_why_there_is_no_backfill_bar(admin_client, source, state, done, text):
    """A source in Error before it stored a day used to read "none: every
    closed day is stored"."""
    source.state, source.last_complete_day = state, done
    source.save()

    html = get(admin_client, source)

    assert text in html
    if done is None:
        assert "every closed day is stored" not in html


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_it_shows_the_retry_streak_and_when_it_gives_up(admin_client, source):
    source.error_streak_started = NOW - timedelta(minutes=20)
    source.next_attempt_at = NOW + timedelta(minutes=2)
    source.last_success_at = NOW - timedelta(hours=3)
    source.save()
    html = get(admin_client, source)
    assert "failing since 2026-11-27 11:40:00 UTC" in html
    assert "gives up at <strong>2026-11-27 13:10:00 UTC</strong>" in html
    assert "2026-11-27 12:02:00 UTC" in html  # next attempt
    assert "2026-11-27 09:00:00 UTC" in html  # last success


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_it_counts_messages_in_total_and_in_the_last_day(admin_client, source):
    add_messages(source, 5, received=NOW - timedelta(hours=30))
    add_messages(source, 3, received=NOW - timedelta(hours=2), start=100)
    html = get(admin_client, source)
    assert '<strong class="messages-total" data-live="messages_total">8</strong>' in (
        html
    )
    assert '<span class="messages-24h" data-live="messages">3</span>' in html


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_it_shows_requests_used_today_without_the_key(admin_client, source):
    fingerprint = crypto.key_fingerprint(API_KEY)
    limiter = ratelimit.Limiter(fingerprint)
    for _ in range(3):
        limiter.acquire()
        limiter.release()
    assert ratelimit.requests_today(fingerprint) == 3
    html = get(admin_client, source)
    assert '<dd class="quota-used">3</dd>' in html
    assert API_KEY not in html and fingerprint not in html


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_it_states_the_keys_requests_once_in_the_quota_block(admin_client, source):
    """One count of the key's requests: the governor's Used today. A second
    "Requests today" row repeated it, and its "of N (daily quota)" took
    KNOWBE4_DAILY_QUOTA even when Licensed users set another budget."""
    ledger.take(ledger.EVENTS, crypto.key_fingerprint(API_KEY), None)
    source.licensed_users = 4
    source.save()
    with override_settings(KNOWBE4_DAILY_QUOTA=5000):
        html = get(admin_client, source)
    assert '<dd class="quota-used">1</dd>' in html
    assert "<strong>40</strong> requests" in html  # 10 x licensed users
    assert "Requests today" not in html and "5,000" not in html


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_it_says_when_a_spent_daily_quota_lets_requests_go_again(admin_client, source):
    fingerprint = crypto.key_fingerprint(API_KEY)
    ledger.take(ledger.EVENTS, fingerprint, None)
    ledger.block(ledger.EVENTS, fingerprint, datetime(2026, 11, 28, tzinfo=UTC))
    html = get(admin_client, source)
    assert (
        "<strong>Quota spent</strong>: requests resume at 2026-11-28 00:00 UTC" in html
    )


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_it_shows_a_reporting_source_no_row_of_the_events_stream(
    admin_client, collector
):
    """A Reporting source reads snapshots: the checkpoint ("no complete day
    yet"), re-scan, freshness ("today's events are not collected") and
    backfill ("0 of 7 days") rows were the events stream's, and false."""
    source = make_source(
        collector,
        "KMSAT",
        base_url_key="kmsat-us",
        kind="reporting",
        reporting={"data_types": ["phishing"]},
    )
    fingerprint = crypto.key_fingerprint(API_KEY)
    for _ in range(2):
        ledger.take(ledger.REPORTING, fingerprint, None)
    html = get(admin_client, source)
    assert "KnowBe4 KMSAT Reporting source in" in html
    assert '<dd class="quota-used">2</dd>' in html
    assert "(24 hours after the window's first request)" in html
    for events_only in (
        "Checkpoint",
        "Re-scan window",
        "Freshness",
        "Backfill",
        "Requests today",
    ):
        assert events_only not in html, events_only


@pytest.mark.django_db
def test_it_says_when_the_stored_key_is_unreadable(admin_client, source):
    source.api_key_encrypted = "not-a-fernet-token"
    source.save()
    assert "the stored key cannot be read" in get(admin_client, source)


@pytest.mark.django_db
def test_it_lists_dropped_fields_with_counts(admin_client, source):
    source.dropped_fields = {"team": 42, "owner": 7}
    source.save()
    html = get(admin_client, source)
    assert "<code>owner</code></td><td>7</td>" in html
    assert "<code>team</code></td><td>42</td>" in html


@pytest.mark.django_db
def test_it_offers_restart_only_in_error(admin_client, source):
    restart = reverse("source-restart", args=[source.pk])
    assert restart not in get(admin_client, source)
    source.transition(SourceState.ERROR, "401", error_type=ErrorType.THIRD_PARTY_CONFIG)
    html = get(admin_client, source)
    assert f'action="{restart}"' in html
    assert reverse("source-edit", args=[source.pk]) in html
    assert reverse("source-delete", args=[source.pk]) in html


@pytest.mark.django_db
def test_it_restarts_a_source_in_error(admin_client, source):
    source.transition(SourceState.ERROR, "401", error_type=ErrorType.THIRD_PARTY_CONFIG)
    source.error_streak_started = timezone.now()
    source.save()
    resp = admin_client.post(reverse("source-restart", args=[source.pk]))
    assert resp.status_code == 302
    source.refresh_from_db()
    assert source.state == SourceState.PENDING
    assert source.error_streak_started is None
    assert source.transitions.last().reason == "Restarted by a user"


@pytest.mark.django_db
def test_it_restarts_a_collecting_source_but_not_a_pending_one(admin_client, source):
    url = reverse("source-restart", args=[source.pk])
    resp = admin_client.post(url, follow=True)
    assert "is Pending: nothing to restart" in resp.content.decode()
    source.transition(SourceState.STARTED, "Collection task created")
    source.transition(SourceState.COLLECTING, "ok")
    version = source.config_version
    assert f'action="{url}"' in get(admin_client, source)

    resp = admin_client.post(url, follow=True)

    assert "restarted" in resp.content.decode()
    source.refresh_from_db()
    assert source.state == SourceState.PENDING  # It authenticates again.
    assert source.config_version == version + 1


@pytest.mark.django_db
def test_it_only_restarts_on_post(admin_client, source):
    source.transition(SourceState.ERROR, "x", error_type=ErrorType.THIRD_PARTY_CONFIG)
    resp = admin_client.get(reverse("source-restart", args=[source.pk]))
    assert resp.status_code == 405
    source.refresh_from_db()
    assert source.state == SourceState.ERROR


@pytest.mark.django_db
def test_it_lists_open_events_and_never_the_key(admin_client, source):
    HealthEvent.objects.create(
        source=source,
        event_name=HealthEventName.THIRD_PARTY_CONFIG,
        error_type=ErrorType.THIRD_PARTY_CONFIG,
        severity=Severity.ERROR,
        message="KnowBe4 rejected the API key",
    )
    html = get(admin_client, source)
    assert "ThirdPartyConfigError" in html
    assert API_KEY not in html
    assert f"…{source.api_key_hint}" in html


@pytest.mark.django_db
def test_it_404s_an_unknown_source(admin_client):
    resp = admin_client.get(reverse("source-detail", args=[404]))
    assert resp.status_code == 404

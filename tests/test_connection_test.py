"""Test connection on the Add/Edit Source form: one request with the typed
Base URL and key (or the stored key), through the shared limiter, answered in
words on the form; POST with CSRF only, a few tries a minute per user, and
never the key in the answer."""

from __future__ import annotations

import socket
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests
import responses
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from collectors import connection, crypto, ratelimit
from tests import engine_support as es
from tests.cast import make_source

clock, sb = es.clock, es.sb

URL = "https://api.events.knowbe4.com/events"
FETCH = {"HTTP_X_REQUESTED_WITH": "fetch"}
EMPTY = {"data": [], "meta": {"next_page": None}}


@pytest.fixture
def key() -> str:
    """A key of each test's own: with Redis (the second CI pass) the limiter's
    counters and a spent quota outlive the test."""
    return f"kb4-connection-test-{uuid.uuid4().hex}"


@pytest.fixture(autouse=True)
def _fresh_tries(db):
    """Each test starts with no try counted."""
    from collectors.models import ConnectionTest

    ConnectionTest.objects.all().delete()


def press(client, **data):
    response = client.post(reverse("source-test-connection"), data, **FETCH)
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.parametrize(
    "answer, kind, words",
    [
        ({"json": EMPTY}, "authenticated", "Authenticated"),
        ({"status": 401, "json": {"error": "nope"}}, "unauthorized", "Unauthorized"),
        ({"status": 403, "json": {}}, "unauthorized", "another region"),
        (
            {"body": requests.ConnectionError("refused")},
            "unreachable",
            "Could not connect to api.events.knowbe4.com",
        ),
        (
            {"status": 429, "body": "Limit Exceeded"},
            "quota",
            "daily limit of this API key is used up",
        ),
        ({"status": 503, "body": "down"}, "failed", "HTTP 503"),
    ],
)
@responses.activate
def test_it_says_what_knowbe4_answered(admin_client, clock, answer, kind, words, key):
    responses.get(URL, **answer)

    html = press(admin_client, base_url_key="us", api_key=key)

    assert f'data-outcome="{kind}"' in html and words in html
    assert key not in html and key[-4:] not in html
    (call,) = responses.calls
    assert call.request.headers["Authorization"] == f"Bearer {key}"
    assert "per_page=1" in call.request.url
    # It counted against the key's limits like any request.
    assert ratelimit.requests_today(crypto.key_fingerprint(key)) == 1


@responses.activate
def test_it_uses_the_stored_key_when_the_field_is_blank(admin_client, collector, key):
    source = make_source(collector, api_key=key)
    responses.get(URL, json=EMPTY)

    html = press(admin_client, base_url_key="us", source=source.pk)

    assert 'data-outcome="authenticated"' in html
    assert responses.calls[0].request.headers["Authorization"] == f"Bearer {key}"
    assert key not in html


@responses.activate
def test_it_never_sends_the_stored_key_to_another_base_url(
    admin_client, collector, key
):
    source = make_source(collector, api_key=key)

    html = press(admin_client, base_url_key="eu", source=source.pk)

    assert 'data-outcome="invalid"' in html and "Enter the API key again" in html
    assert not responses.calls


@pytest.mark.parametrize(
    "data, words",
    [
        ({"base_url_key": "us"}, "Enter the API key first"),
        ({"api_key": "kb4-typed-key-0123456789"}, "Choose a Base URL first"),
        (
            {"base_url_key": "nowhere", "api_key": "kb4-typed-key-0123456789"},
            "Select a valid choice",
        ),
        ({"base_url_key": "us", "api_key": "has space 123"}, "spaces"),
        ({"base_url_key": "us", "source": "999999"}, "Select a valid choice"),
    ],
)
@responses.activate
def test_it_refuses_incomplete_input_without_a_request(admin_client, data, words):
    html = press(admin_client, **data)
    assert 'data-outcome="invalid"' in html and words in html
    assert not responses.calls


@responses.activate
def test_it_waits_while_the_quota_is_known_to_be_spent(admin_client, key):
    """Real time here: the Redis limiter keeps the mark by its own clock."""
    until = datetime.now(UTC) + timedelta(hours=1)
    ratelimit.mark_quota_exhausted(crypto.key_fingerprint(key), until)
    html = press(admin_client, base_url_key="us", api_key=key)
    assert 'data-outcome="quota"' in html
    assert until.strftime("%Y-%m-%d %H:%M UTC") in html
    assert not responses.calls


@responses.activate
def test_it_allows_a_few_tries_a_minute_per_user(admin_client, user, clock, key):
    responses.get(URL, json=EMPTY)
    for _ in range(connection.TRIES_PER_MINUTE):
        assert "Authenticated" in press(admin_client, base_url_key="us", api_key=key)

    html = press(admin_client, base_url_key="us", api_key=key)

    assert 'data-outcome="too_many_tries"' in html
    assert len(responses.calls) == connection.TRIES_PER_MINUTE
    # Another user has tries of their own.
    user.user_permissions.add(
        Permission.objects.get(
            codename="manage_collectors", content_type__app_label="collectors"
        )
    )
    other = Client()
    other.force_login(user)
    assert "Authenticated" in press(other, base_url_key="us", api_key=key)
    # A minute later the first user may try again.
    clock.shift(61)
    assert "Authenticated" in press(admin_client, base_url_key="us", api_key=key)


def test_it_needs_a_post_with_csrf_and_the_manage_permission(admin_user, user, key):
    url = reverse("source-test-connection")
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(admin_user)
    assert strict.get(url).status_code == 405
    assert strict.post(url, {"base_url_key": "us", "api_key": key}).status_code == 403
    viewer = Client()
    viewer.force_login(user)
    assert viewer.post(url, {"base_url_key": "us", "api_key": key}).status_code == 403


def test_it_is_on_the_add_and_edit_forms(admin_client, collector):
    add = admin_client.get(reverse("source-add", args=[collector.pk])).content.decode()
    assert 'id="test-connection"' in add
    assert f'data-url="{reverse("source-test-connection")}"' in add
    source = make_source(collector)
    edit = admin_client.get(reverse("source-edit", args=[source.pk])).content.decode()
    assert f'name="source" value="{source.pk}"' in edit


@responses.activate
def test_it_answers_a_page_without_script(admin_client, key):
    responses.get(URL, json=EMPTY)
    response = admin_client.post(
        reverse("source-test-connection"), {"base_url_key": "us", "api_key": key}
    )
    html = response.content.decode()
    assert "<h1>Test connection</h1>" in html and "Authenticated" in html


def test_it_authenticates_against_the_sandbox(settings, sb, admin_client):
    key = es.use_sandbox(settings, sb)
    html = press(admin_client, base_url_key=key, api_key=sb.api_key)
    assert 'data-outcome="authenticated"' in html
    html = press(admin_client, base_url_key=key, api_key="kb4-not-a-sandbox-key-12345")
    assert 'data-outcome="unauthorized"' in html
    sb.inject("limit_exceeded")
    html = press(admin_client, base_url_key=key, api_key=sb.api_key)
    assert 'data-outcome="quota"' in html
    assert [r.status for r in es.api_requests(sb)] == [200, 401, 429]


def test_it_says_when_the_host_cannot_be_reached(settings, admin_client):
    with socket.socket() as probe:  # A port nobody listens on any more.
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.KNOWBE4_EXTRA_BASE_URLS = [f"Closed|http://127.0.0.1:{port}"]
    html = press(admin_client, base_url_key="x-closed", api_key="kb4-any-key-0123456")
    assert 'data-outcome="unreachable"' in html
    assert "Could not reach the host" in html and f"127.0.0.1:{port}" in html

"""Test connection on the KMSAT Reporting form: one `GET /v1/account` with
the typed Region and Reporting key (or the stored key), through the Reporting
client and the key's shared limiter, answered in words; the same try limit,
permission and key hygiene as on the KnowBe4 form."""

from __future__ import annotations

import socket
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests
import responses
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from collectors import connection, crypto, ledger, ratelimit
from tests.cast import make_source
from tests.sandbox_support import REPORTING_KEY, SANDBOX_KEY, running_sandbox

URL = "https://us.api.knowbe4.com/v1/account"
FETCH = {"HTTP_X_REQUESTED_WITH": "fetch"}
ACCOUNT = {"name": "Sandbox Corp", "number_of_seats": 10}


@pytest.fixture
def key() -> str:
    """A key of each test's own (with Redis the limiter's marks outlive it)."""
    return f"kmsat-connection-test-{uuid.uuid4().hex}"


@pytest.fixture(autouse=True)
def _fresh_tries(db):
    from collectors.models import ConnectionTest

    ConnectionTest.objects.all().delete()


def press(client, **data) -> str:
    url = reverse("source-test-connection-reporting")
    response = client.post(url, data, **FETCH)
    assert response.status_code == 200
    return response.content.decode()


def reporting_source(collector, key: str, region: str = "kmsat-us"):
    return make_source(
        collector,
        "KMSAT",
        api_key=key,
        base_url_key=region,
        kind="reporting",
        reporting={"data_types": ["phishing"]},
    )


@pytest.mark.parametrize(
    "answer, kind, words",
    [
        ({"json": ACCOUNT}, "authenticated", "us.api.knowbe4.com accepted"),
        ({"status": 401, "json": {}}, "unauthorized", "refused the Reporting API key"),
        ({"status": 403, "json": {}}, "unauthorized", "User Event API key"),
        ({"status": 404, "json": {}}, "failed", "check the Region"),
        (
            {"body": requests.ConnectionError("refused")},
            "unreachable",
            "Could not connect to us.api.knowbe4.com",
        ),
        (
            {
                "status": 429,
                "json": {"message": "Daily Limit Exceeded"},
                "headers": {"Retry-After": "7200"},
            },
            "quota",
            "daily limit of this API key is used up",
        ),
        (
            {"status": 429, "json": {}, "headers": {"Retry-After": "1"}},
            "throttled",
            "slow down",
        ),
        ({"status": 503, "body": "down"}, "failed", "HTTP 503"),
        ({"body": "<html>maintenance</html>"}, "failed", "HTML page"),
    ],
)
@responses.activate
def test_it_says_what_the_reporting_api_answered(
    admin_client, answer, kind, words, key
):
    responses.get(URL, **answer)

    html = press(admin_client, base_url_key="kmsat-us", api_key=key)

    assert f'data-outcome="{kind}"' in html and words in html
    assert key not in html and key[-4:] not in html
    (call,) = responses.calls
    assert call.request.headers["Authorization"] == f"Bearer {key}"
    assert call.request.url == URL  # one request, no paging parameters
    # Counted in the key's Reporting window, not its User Event one.
    fingerprint = crypto.key_fingerprint(key)
    assert ratelimit.requests_today(fingerprint, ledger.REPORTING) == 1
    assert ratelimit.requests_today(fingerprint, ledger.EVENTS) == 0


@responses.activate
def test_it_remembers_a_spent_daily_limit_for_the_key(admin_client, key):
    responses.get(
        URL,
        status=429,
        json={"message": "Daily Limit Exceeded"},
        headers={"Retry-After": "3600"},
    )
    press(admin_client, base_url_key="kmsat-us", api_key=key)
    until = ratelimit.quota_blocked_until(crypto.key_fingerprint(key), ledger.REPORTING)
    assert until is not None
    assert abs(until - (datetime.now(UTC) + timedelta(hours=1))) < timedelta(minutes=1)

    html = press(admin_client, base_url_key="kmsat-us", api_key=key)

    assert 'data-outcome="quota"' in html and until.strftime("%H:%M UTC") in html
    assert len(responses.calls) == 1


@responses.activate
def test_it_uses_the_stored_reporting_key_when_the_field_is_blank(
    admin_client, collector, key
):
    source = reporting_source(collector, key)
    responses.get(URL, json=ACCOUNT)

    html = press(admin_client, base_url_key="kmsat-us", source=source.pk)

    assert 'data-outcome="authenticated"' in html
    assert responses.calls[0].request.headers["Authorization"] == f"Bearer {key}"
    assert key not in html


@responses.activate
def test_it_never_sends_a_stored_key_elsewhere(admin_client, collector, key):
    reporting = reporting_source(collector, key)
    events = make_source(collector, "Events", api_key=f"{key}-events")

    other_region = press(admin_client, base_url_key="kmsat-eu", source=reporting.pk)
    events_key = press(admin_client, base_url_key="kmsat-us", source=events.pk)

    assert 'data-outcome="invalid"' in other_region
    assert "Enter the API key again" in other_region and "Region" in other_region
    # An events source's key is no Reporting key: not a source of this form.
    assert 'data-outcome="invalid"' in events_key
    assert "Select a valid choice" in events_key
    assert not responses.calls
    # Nor does the events form test a Reporting source's stored key.
    html = admin_client.post(
        reverse("source-test-connection"),
        {"base_url_key": "us", "source": reporting.pk},
        **FETCH,
    ).content.decode()
    assert 'data-outcome="invalid"' in html and not responses.calls


@pytest.mark.parametrize(
    "data, words",
    [
        ({"base_url_key": "kmsat-us"}, "Enter the API key first"),
        ({"api_key": "kmsat-typed-key-0123456789"}, "Choose a Region first"),
        # An events Base URL is not a Region of this form.
        ({"base_url_key": "us", "api_key": "kmsat-typed-0123456"}, "valid choice"),
        ({"base_url_key": "kmsat-us", "api_key": "has space 123"}, "spaces"),
    ],
)
@responses.activate
def test_it_refuses_incomplete_input_without_a_request(admin_client, data, words):
    html = press(admin_client, **data)
    assert 'data-outcome="invalid"' in html and words in html
    assert not responses.calls


@responses.activate
def test_it_shares_the_try_limit_with_the_events_form(admin_client, key):
    responses.get(URL, json=ACCOUNT)
    for _ in range(connection.TRIES_PER_MINUTE):
        assert "Authenticated" in press(
            admin_client, base_url_key="kmsat-us", api_key=key
        )

    html = press(admin_client, base_url_key="kmsat-us", api_key=key)

    assert 'data-outcome="too_many_tries"' in html
    assert len(responses.calls) == connection.TRIES_PER_MINUTE
    events = admin_client.post(
        reverse("source-test-connection"),
        {"base_url_key": "us", "api_key": key},
        **FETCH,
    ).content.decode()
    assert 'data-outcome="too_many_tries"' in events


def test_it_needs_a_post_with_csrf_and_the_manage_permission(admin_user, user, key):
    url = reverse("source-test-connection-reporting")
    data = {"base_url_key": "kmsat-us", "api_key": key}
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(admin_user)
    assert strict.get(url).status_code == 405
    assert strict.post(url, data).status_code == 403
    viewer = Client()
    viewer.force_login(user)
    assert viewer.post(url, data).status_code == 403
    user.user_permissions.add(
        Permission.objects.get(
            codename="manage_collectors", content_type__app_label="collectors"
        )
    )
    with responses.RequestsMock() as mocked:
        mocked.get(URL, json=ACCOUNT)
        assert "Authenticated" in viewer.post(url, data).content.decode()


def test_it_is_on_the_reporting_add_and_edit_forms(admin_client, collector, key):
    add_url = reverse("source-add-reporting", args=[collector.pk])
    add = admin_client.get(add_url).content.decode()
    assert 'id="test-connection"' in add
    assert f'data-url="{reverse("source-test-connection-reporting")}"' in add
    assert "one request to the KMSAT Reporting API" in add
    source = reporting_source(collector, key)
    edit = admin_client.get(reverse("source-edit", args=[source.pk])).content.decode()
    assert f'name="source" value="{source.pk}"' in edit
    assert reverse("source-test-connection-reporting") in edit


@responses.activate
def test_it_answers_a_page_without_script(admin_client, key):
    responses.get(URL, json=ACCOUNT)
    response = admin_client.post(
        reverse("source-test-connection-reporting"),
        {"base_url_key": "kmsat-us", "api_key": key},
    )
    html = response.content.decode()
    assert "<h1>Test connection</h1>" in html and "Authenticated" in html


def test_it_authenticates_against_the_sandbox(settings, admin_client):
    with running_sandbox(reporting={"origin": 1_770_000_000}) as sb:
        settings.KNOWBE4_EXTRA_BASE_URLS = [f"Sandbox|{sb.url}"]
        ok = press(admin_client, base_url_key="x-sandbox", api_key=REPORTING_KEY)
        # The User Event key of the same sandbox is no Reporting key.
        events_key = press(admin_client, base_url_key="x-sandbox", api_key=SANDBOX_KEY)
        paths = [(r.path, r.status) for r in sb.requests]
    assert 'data-outcome="authenticated"' in ok
    assert 'data-outcome="unauthorized"' in events_key
    assert "Reporting API key" in events_key
    assert paths == [("/v1/account", 200), ("/v1/account", 401)]


def test_it_says_when_the_host_cannot_be_reached(settings, admin_client):
    with socket.socket() as probe:  # A port nobody listens on any more.
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.KNOWBE4_EXTRA_BASE_URLS = [f"Closed|http://127.0.0.1:{port}"]
    html = press(admin_client, base_url_key="x-closed", api_key="kmsat-any-key-01234")
    assert 'data-outcome="unreachable"' in html
    assert "Could not reach the host" in html and f"127.0.0.1:{port}" in html


@responses.activate
def test_it_says_so_instead_of_waiting_for_the_burst_limit(
    admin_client, key, monkeypatch
):
    class Busy:
        """The key's limiter with the Reporting burst (50 a minute) used up."""

        def acquire(self, longest=None):
            assert longest is not None and longest <= 5  # never a long wait
            raise ratelimit.WaitLonger(time.time() + 42)

        def release(self, finished_at=None):
            raise AssertionError("nothing was sent")

    monkeypatch.setattr(ratelimit, "limiter_for", lambda key_hash, api: Busy())

    html = press(admin_client, base_url_key="kmsat-us", api_key=key)

    assert 'data-outcome="throttled"' in html and "try again in 42 s" in html
    assert not responses.calls

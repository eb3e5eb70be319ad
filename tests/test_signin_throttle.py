"""Sign-in throttling (django-axes): lockout, reset, unlock, proxy address."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
import time_machine
from axes.models import AccessAttempt
from django.urls import reverse
from django.utils import timezone

from tests.cast import PASSWORD, make_user

pytestmark = pytest.mark.django_db

WRONG = "Wrong-Pa55word-never-logged"
HERE = "10.0.0.1"


@pytest.fixture
def viewer():
    return make_user("Viewer")


def sign_in(client, password: str, *, username="viewer", url=None, **extra):
    return client.post(
        url or reverse("login"),
        {"username": username, "password": password},
        REMOTE_ADDR=extra.pop("ip", HERE),
        **extra,
    )


def fail(client, times: int, **kw) -> list[int]:
    return [sign_in(client, WRONG, **kw).status_code for _ in range(times)]


def signed_in(client) -> bool:
    return client.get(reverse("collection")).status_code == 200


def test_it_locks_the_pair_after_five_failures(client, viewer):
    assert fail(client, 4) == [200] * 4
    response = sign_in(client, WRONG)
    assert response.status_code == 429
    html = response.content.decode()
    assert "Sign-in locked" in html
    assert "after 5 failures" in html and "15 minutes" in html
    assert "even with the right password" in html


def test_it_refuses_the_right_password_during_a_lockout(client, viewer):
    fail(client, 5)
    response = sign_in(client, PASSWORD)
    assert response.status_code == 429
    assert not signed_in(client)


def test_it_locks_only_that_username_from_that_address(client, viewer):
    make_user("Analyst")
    fail(client, 5)
    assert sign_in(client, PASSWORD, ip="10.0.0.2").status_code == 302
    client.logout()
    assert sign_in(client, PASSWORD, username="analyst").status_code == 302


def test_it_locks_the_admin_sign_in_too(client, admin_user):
    url = reverse("admin:login")
    codes = fail(client, 5, username="alice", url=url)
    assert codes == [200] * 4 + [429]
    response = sign_in(
        client, "correct horse battery staple", username="alice", url=url
    )
    assert response.status_code == 429
    # The lock is on the pair, whichever sign-in page was used.
    assert (
        sign_in(client, "correct horse battery staple", username="alice").status_code
        == 429
    )


def test_it_resets_the_count_on_a_successful_sign_in(client, viewer):
    fail(client, 4)
    assert sign_in(client, PASSWORD).status_code == 302
    client.logout()
    assert fail(client, 4) == [200] * 4
    assert sign_in(client, PASSWORD).status_code == 302


def test_it_unlocks_after_the_lockout_time(client, viewer):
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        fail(client, 5)
        traveller.shift(timedelta(minutes=14))
        assert sign_in(client, PASSWORD).status_code == 429
        traveller.shift(timedelta(minutes=2))
        assert sign_in(client, PASSWORD).status_code == 302


def test_it_lets_a_superuser_unlock_in_admin(client, admin_client, viewer):
    from django.test import Client

    locked = Client()
    fail(locked, 5)
    attempt = AccessAttempt.objects.get(username="viewer")
    assert attempt.failures_since_start == 5
    changelist = admin_client.get(reverse("admin:axes_accessattempt_changelist"))
    assert "viewer" in changelist.content.decode()
    response = admin_client.post(
        reverse("admin:axes_accessattempt_delete", args=[attempt.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    assert sign_in(locked, PASSWORD).status_code == 302


def test_it_keeps_unlocking_from_other_staff(client, viewer):
    """Staff without a grant on the attempts cannot clear a lock."""
    fail(client, 5)
    staff = make_user("Collector manager", username="staffer", is_staff=True)
    client.force_login(staff)
    attempt = AccessAttempt.objects.get(username="viewer")
    response = client.post(
        reverse("admin:axes_accessattempt_delete", args=[attempt.pk]), {"post": "yes"}
    )
    assert response.status_code == 403
    assert AccessAttempt.objects.filter(pk=attempt.pk).exists()


def test_it_logs_every_lockout_without_the_password(client, viewer, caplog):
    caplog.set_level(logging.INFO)
    fail(client, 5)
    sign_in(client, PASSWORD)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "viewer" in text and HERE in text
    lockouts = [r for r in caplog.records if "Locking out" in r.getMessage()]
    assert len(lockouts) == 1 and lockouts[0].levelno == logging.WARNING
    assert "viewer" in lockouts[0].getMessage()
    assert WRONG not in text and PASSWORD not in text
    attempt = AccessAttempt.objects.get(username="viewer")
    stored = f"{attempt.get_data} {attempt.post_data}"
    assert WRONG not in stored and PASSWORD not in stored


def test_it_ignores_a_forwarded_address_unless_configured(client, viewer):
    fail(client, 5)
    response = sign_in(client, PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.9")
    assert response.status_code == 429


def test_it_reads_the_proxy_header_the_operator_names(client, viewer, settings):
    settings.SIGNIN_PROXY_IP_HEADER = "X-Forwarded-For"
    settings.SIGNIN_PROXY_COUNT = 1
    proxy = {"ip": "10.9.9.9"}
    for _ in range(5):
        # The client's own entries (left) are not trusted; the proxy's is.
        sign_in(client, WRONG, HTTP_X_FORWARDED_FOR="6.6.6.6, 192.0.2.9", **proxy)
    assert AccessAttempt.objects.get().ip_address == "192.0.2.9"
    forged = sign_in(
        client, PASSWORD, HTTP_X_FORWARDED_FOR="7.7.7.7, 192.0.2.9", **proxy
    )
    assert forged.status_code == 429
    other = sign_in(client, PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.10", **proxy)
    assert other.status_code == 302


def test_it_falls_back_to_the_peer_on_a_malformed_header(client, viewer, settings):
    settings.SIGNIN_PROXY_IP_HEADER = "X-Forwarded-For"
    fail(client, 5, HTTP_X_FORWARDED_FOR="not-an-address")
    assert AccessAttempt.objects.get().ip_address == HERE


def test_it_takes_the_limit_from_settings(client, viewer, settings):
    settings.AXES_FAILURE_LIMIT = 2
    assert fail(client, 2) == [200, 429]


def test_it_keeps_force_login_and_client_login_working(client, viewer):
    assert client.login(username="viewer", password=PASSWORD)
    assert signed_in(client)
    client.logout()
    client.force_login(viewer)
    assert signed_in(client)

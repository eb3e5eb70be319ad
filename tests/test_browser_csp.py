"""Every page works under the Content-Security-Policy in a real browser.

The `page` fixture fails a test on any CSP violation (tests/conftest.py); the
panel and the source form's script are driven by the other browser tests.
These open every kind of page, the admin's too, and prove the check
catches a violation.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from collectors.models import HealthEvent, LogMessage
from tests.cast import make_collector, make_field, make_source
from tests.conftest import csp_violations

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def world():
    collector = make_collector()
    make_field("dept")
    source = make_source(collector, fields={"dept": "IT"})
    event = HealthEvent.objects.create(
        source=source,
        event_name="ThirdPartyConfigError",
        error_type="ThirdPartyConfig",
        severity="error",
        error_code="401",
        message="KnowBe4 refused the API key",
    )
    now = timezone.now()
    for n in range(5):
        LogMessage.objects.create(
            source=source,
            event_id=f"e-{n}",
            raw='{"id": 1}',
            message_time=now - timedelta(days=n),
            source_name=source.name,
            source_category=source.category,
            collector_name=collector.name,
            event_type="Phishing Test",
            risk_level=n,
        )
    return {"collector": collector, "source": source, "event": event}


def app_pages(world) -> list[str]:
    c, s, e = world["collector"].pk, world["source"].pk, world["event"].pk
    start = datetime(2000, 1, 1, tzinfo=UTC).strftime("%Y-%m-%dT%H:%M")
    return [
        reverse("collection"),
        reverse("collector-add"),
        reverse("collector-edit", args=[c]),
        reverse("collector-delete", args=[c]),
        reverse("source-types", args=[c]),
        reverse("source-add", args=[c]),
        reverse("source-edit", args=[s]),
        reverse("source-delete", args=[s]),
        reverse("source-detail", args=[s]),
        reverse("fields"),
        reverse("health-events"),
        reverse("health-event-detail", args=[e]),
        reverse("messages") + f"?after_time={start}",
        reverse("overview"),
        "/admin/",
        "/admin/collectors/source/",
        f"/admin/collectors/source/{s}/change/",
        "/admin/auth/user/add/",
        "/admin/axes/accessattempt/",
    ]


def test_it_opens_every_page_without_a_violation(page, live_server, world):
    for path in app_pages(world):
        response = page.goto(live_server.url + path)
        assert response.status == 200, path
        assert "default-src 'self'" in response.headers["content-security-policy"]
        page.wait_for_load_state("load")


def test_it_shows_the_login_page_without_a_violation(browser, live_server):
    context = browser.new_context()
    pg = context.new_page()
    violations = csp_violations(pg)
    pg.goto(f"{live_server.url}/login/")
    pg.goto(f"{live_server.url}/admin/login/")
    pg.wait_for_load_state("load")
    context.close()
    assert violations == []


def test_it_catches_a_violation(browser, live_server):
    """The check itself: an inline style attribute is blocked and reported."""
    context = browser.new_context()
    pg = context.new_page()
    violations = csp_violations(pg)
    pg.goto(f"{live_server.url}/login/")
    with pg.expect_console_message(lambda m: "Content Security Policy" in m.text):
        pg.evaluate(
            "document.body.insertAdjacentHTML('beforeend',"
            " '<p style=\"color: red\">inline</p>')"
        )
    context.close()
    assert any("style" in v for v in violations), violations

"""Fixes next to errors: Restart and Edit where the suggested fix calls for
them (and the role allows), the edit form showing the error it fixes, and a
"Next attempt" that is always true."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.urls import reverse

from collectors import health
from collectors.choices import ErrorType, Severity, SourceState
from tests.cast import make_collector, make_source, make_user, refuse_key

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def retrying(source):
    return health.record(
        source,
        ErrorType.THIRD_PARTY_GENERIC,
        code="503",
        message="KnowBe4 answered 503.",
        suggested_fix="KnowBe4 is unavailable; retrying until 13:30 UTC.",
        severity=Severity.WARNING,
    )


def html_of(client, url) -> str:
    response = client.get(url)
    assert response.status_code == 200
    return response.content.decode()


@pytest.fixture
def manager(client):
    client.force_login(make_user("Collector manager"))
    return client


def test_it_offers_restart_and_edit_in_the_panel_for_a_config_error(manager):
    source = make_source(make_collector())
    refuse_key(source)
    for url in (
        reverse("source-health", args=[source.pk]),
        reverse("collector-health", args=[source.collector.pk]),
        reverse("source-detail", args=[source.pk]),
    ):
        html = html_of(manager, url)
        assert f'action="{reverse("source-restart", args=[source.pk])}"' in html, url
        assert f'href="{reverse("source-edit", args=[source.pk])}"' in html, url


def test_it_offers_nothing_for_a_warning_that_fixes_itself(manager):
    source = make_source(make_collector(), state=SourceState.COLLECTING)
    retrying(source)
    html = html_of(manager, reverse("source-health", args=[source.pk]))
    assert 'class="fix-actions"' not in html
    assert "retrying until" in html


def test_it_hides_the_buttons_from_a_viewer_and_says_why(client):
    client.force_login(make_user("Viewer"))
    source = make_source(make_collector())
    refuse_key(source)
    html = html_of(client, reverse("source-health", args=[source.pk]))
    assert reverse("source-restart", args=[source.pk]) not in html
    assert reverse("source-edit", args=[source.pk]) not in html
    assert "ask a Collector manager" in html
    # and the view itself refuses
    response = client.post(reverse("source-restart", args=[source.pk]))
    assert response.status_code == 403
    source.refresh_from_db()
    assert source.state == SourceState.ERROR


def test_it_restarts_from_the_panel_button(manager):
    source = make_source(make_collector())
    refuse_key(source)
    response = manager.post(reverse("source-restart", args=[source.pk]))
    assert response.status_code == 302
    source.refresh_from_db()
    assert source.state == SourceState.PENDING


def test_it_shows_the_open_events_at_the_top_of_the_edit_form(manager):
    source = make_source(make_collector())
    refuse_key(source)
    html = html_of(manager, reverse("source-edit", args=[source.pk]))
    top = html[: html.index('id="source-form"')]
    assert "This source is in Error (ThirdPartyConfig)" in top
    assert "KnowBe4 refused the API key (401 Unauthorized)." in top
    assert health.FIX_CONFIG in top


def test_it_shows_no_event_box_on_a_healthy_edit_form(manager):
    source = make_source(make_collector(), state=SourceState.COLLECTING)
    html = html_of(manager, reverse("source-edit", args=[source.pk]))
    assert "form-health" not in html


@time_machine.travel(NOW, tick=False)
def test_it_tells_the_truth_about_the_next_attempt_on_the_source_page(manager):
    source = make_source(make_collector(), state=SourceState.COLLECTING)
    url = reverse("source-detail", args=[source.pk])

    def next_attempt() -> str:
        html = html_of(manager, url)
        start = html.index('data-live="next_attempt">') + len(
            'data-live="next_attempt">'
        )
        return html[start : html.index("</dd>", start)]

    source.__class__.objects.filter(pk=source.pk).update(
        lease_owner="w1", lease_expires=NOW + timedelta(minutes=4)
    )
    assert next_attempt() == "now, collecting"
    source.__class__.objects.filter(pk=source.pk).update(
        lease_owner="", lease_expires=None, next_attempt_at=NOW + timedelta(hours=1)
    )
    assert next_attempt() == "2026-11-27 13:00:00 UTC"
    refuse_key(source)
    assert next_attempt() == "after you edit or restart the source"


@pytest.mark.parametrize(
    ("next_url", "lands_on"),
    [
        ("/?show=errors", "/?show=errors"),
        ("https://evil.example/", None),
        ("//evil.example/x", None),
        ("javascript:alert(1)", None),
        ("", None),
    ],
)
def test_it_restarts_from_the_panel_back_to_the_page_it_was_opened_on(
    manager, next_url, lands_on
):
    source = make_source(make_collector())
    refuse_key(source)
    panel = html_of(
        manager, reverse("source-health", args=[source.pk]) + f"?next={next_url}"
    )
    if lands_on:
        assert f'name="next" value="{lands_on}"' in panel
    else:
        assert 'name="next"' not in panel
    response = manager.post(
        reverse("source-restart", args=[source.pk]), {"next": next_url}
    )
    assert response.status_code == 302
    assert response["Location"] == (lands_on or source.get_absolute_url())

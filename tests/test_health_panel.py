"""The status icon, its tooltip data and the Health Events panel fragments."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.template import Context, Template
from django.urls import reverse

from collectors.choices import ErrorType, HealthEventName, Severity, SourceState
from collectors.models import HealthEvent
from tests.cast import API_KEY, make_collector, make_source


def make_event(source=None, *, severity=Severity.ERROR, collector=None, **kw):
    kw.setdefault("event_name", HealthEventName.THIRD_PARTY_GENERIC)
    kw.setdefault("error_type", ErrorType.THIRD_PARTY_GENERIC)
    kw.setdefault("message", "KnowBe4 answered 503 Service Unavailable")
    return HealthEvent.objects.create(
        source=source, collector=collector, severity=severity, **kw
    )


def render_icon(obj) -> str:
    return Template('{% include "collectors/_status_icon.html" with obj=obj %}').render(
        Context({"obj": obj})
    )


@pytest.mark.django_db
def test_it_draws_red_with_counts_in_the_tooltip_data(source):
    make_event(source, error_code="503")
    make_event(
        source,
        severity=Severity.WARNING,
        event_name=HealthEventName.FIRST_PARTY_GENERIC,
        error_type=ErrorType.FIRST_PARTY_GENERIC,
    )
    html = render_icon(source)
    assert 'data-status="error"' in html
    assert 'data-tooltip="1 error, 1 warning"' in html
    assert "status-error.svg" in html
    assert f'data-health-url="{reverse("source-health", args=[source.pk])}"' in html


@pytest.mark.django_db
def test_it_shows_the_last_successful_collection(source):
    source.last_success_at = datetime(2026, 11, 26, 8, 30, tzinfo=UTC)
    source.state = SourceState.COLLECTING
    html = render_icon(source)
    assert 'data-status="healthy"' in html
    assert "Last successful collection: 2026-11-26 08:30 UTC" in html


@pytest.mark.django_db
def test_it_draws_a_pending_source_neutral_and_ignores_resolved_events(source):
    event = make_event(source)
    event.resolved_at = event.last_seen
    event.save()
    html = render_icon(source)
    assert 'data-status="neutral"' in html
    assert 'data-tooltip="0 errors, 0 warnings"' in html
    assert "No successful collection yet" in html


@pytest.mark.django_db
def test_it_gives_a_collector_the_latest_success_of_its_sources(collector):
    a = make_source(collector, "A", last_success_at=datetime(2026, 1, 2, tzinfo=UTC))
    make_source(collector, "B", last_success_at=datetime(2026, 1, 5, tzinfo=UTC))
    make_event(a, severity=Severity.WARNING)
    html = render_icon(collector)
    assert 'data-status="warning"' in html
    assert "Last successful collection: 2026-01-05 00:00 UTC" in html


@pytest.mark.django_db
def test_it_lists_open_events_of_a_source_in_at_most_5_queries(
    admin_client, source, django_assert_max_num_queries
):
    make_event(
        source,
        event_name=HealthEventName.THIRD_PARTY_CONFIG,
        error_type=ErrorType.THIRD_PARTY_CONFIG,
        error_code="401",
        message="KnowBe4 rejected the API key (401 Unauthorized)",
        suggested_fix="Check the API key and the Base URL region, then save.",
        count=3,
    )
    make_event(source, severity=Severity.WARNING, message="slow answers")
    make_event(
        source,
        event_name=HealthEventName.FIRST_PARTY_GENERIC,
        error_type=ErrorType.FIRST_PARTY_GENERIC,
        message="storage failed",
    )
    make_event(
        source,
        event_name=HealthEventName.FIRST_PARTY_GENERIC,
        message="an old resolved problem",
        resolved_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    with django_assert_max_num_queries(5):
        resp = admin_client.get(reverse("source-health", args=[source.pk]))
    html = resp.content.decode()
    assert resp.status_code == 200
    assert "<html" not in html  # a fragment, not a page
    assert "ThirdPartyConfigError" in html
    assert "KnowBe4 rejected the API key (401 Unauthorized)" in html
    assert "Check the API key and the Base URL region" in html
    assert "an old resolved problem" not in html
    # errors first, then warnings
    assert html.index("storage failed") < html.index("slow answers")
    assert html.index("KnowBe4 rejected") < html.index("slow answers")
    assert f"?source={source.pk}" in html  # link to the full history
    assert API_KEY not in html


@pytest.mark.django_db
def test_it_lists_a_collectors_and_its_sources_events(
    admin_client, collector, django_assert_max_num_queries
):
    first = make_source(collector, "First")
    make_source(collector, "Second")
    other = make_source(make_collector("Other"), "Elsewhere")
    make_event(first, message="first is failing")
    make_event(collector=collector, message="collector itself")
    make_event(other, message="not this collector")
    with django_assert_max_num_queries(5):
        resp = admin_client.get(reverse("collector-health", args=[collector.pk]))
    html = resp.content.decode()
    assert "first is failing" in html and "collector itself" in html
    assert "not this collector" not in html
    assert "2 open events" in html


@pytest.mark.django_db
def test_it_says_when_nothing_is_open(admin_client, source):
    html = admin_client.get(reverse("source-health", args=[source.pk])).content
    assert b"No open health events." in html


@pytest.mark.django_db
def test_it_requires_sign_in_for_the_panel(client, source):
    resp = client.get(reverse("source-health", args=[source.pk]))
    assert resp.status_code == 302
    assert "/login/" in resp["Location"]


@pytest.mark.django_db
def test_it_404s_an_unknown_resource(admin_client):
    assert admin_client.get(reverse("source-health", args=[999])).status_code == 404
    assert admin_client.get(reverse("collector-health", args=[999])).status_code == 404

"""The Health Events page: every event, filters, sorting, pages, detail view."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from collectors.choices import ErrorType, HealthEventName, Severity
from collectors.models import HealthEvent
from tests.cast import API_KEY, make_collector, make_source

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def make_event(source=None, *, collector=None, **kw):
    kw.setdefault("event_name", HealthEventName.THIRD_PARTY_GENERIC)
    kw.setdefault("error_type", ErrorType.THIRD_PARTY_GENERIC)
    kw.setdefault("severity", Severity.ERROR)
    kw.setdefault("message", "503 from KnowBe4")
    kw.setdefault("first_seen", T0)
    kw.setdefault("last_seen", kw["first_seen"])
    return HealthEvent.objects.create(source=source, collector=collector, **kw)


def ids(resp) -> list[int]:
    return [e.pk for e in resp.context["page"].object_list]


@pytest.fixture
def events(collector, source):
    other = make_source(make_collector("Other"), "Elsewhere")
    return {
        "config": make_event(
            source,
            event_name=HealthEventName.THIRD_PARTY_CONFIG,
            error_type=ErrorType.THIRD_PARTY_CONFIG,
            message="KnowBe4 rejected the API key",
            last_seen=T0 + timedelta(hours=3),
            count=4,
        ),
        "resolved": make_event(
            source,
            message="old outage",
            last_seen=T0 + timedelta(hours=1),
            resolved_at=T0 + timedelta(hours=2),
        ),
        "warning": make_event(
            other,
            severity=Severity.WARNING,
            message="daily quota spent",
            last_seen=T0 + timedelta(hours=2),
            count=2,
        ),
        "collector": make_event(
            collector=collector,
            event_name=HealthEventName.FIRST_PARTY_GENERIC,
            error_type=ErrorType.FIRST_PARTY_GENERIC,
            message="storage failed",
            first_seen=T0 - timedelta(days=3),
        ),
    }


@pytest.mark.django_db
def test_it_lists_open_and_resolved_events_newest_first(admin_client, events):
    resp = admin_client.get(reverse("health-events"))
    html = resp.content.decode()
    assert ids(resp) == [
        events[k].pk for k in ("config", "warning", "resolved", "collector")
    ]
    assert "Resolved 2026-11-20 14:00" in html
    assert 'aria-current="page">Health Events' in html
    assert API_KEY not in html


@pytest.mark.django_db
@pytest.mark.parametrize(
    "params, expected",
    [
        ({"severity": "warning"}, ["warning"]),
        ({"event_name": "ThirdPartyConfigError"}, ["config"]),
        ({"status": "open"}, ["config", "warning", "collector"]),
        ({"status": "resolved"}, ["resolved"]),
        ({"since": "2026-11-20T13:30"}, ["config", "warning"]),
        ({"until": "2026-11-20T12:30"}, ["collector"]),
    ],
)
def test_it_filters(admin_client, events, params, expected):
    resp = admin_client.get(reverse("health-events"), params)
    assert ids(resp) == [events[k].pk for k in expected]


@pytest.mark.django_db
def test_it_filters_by_resource(admin_client, events, source, collector):
    by_source = admin_client.get(reverse("health-events"), {"source": source.pk})
    assert ids(by_source) == [events["config"].pk, events["resolved"].pk]
    by_collector = admin_client.get(
        reverse("health-events"), {"collector": collector.pk}
    )
    assert ids(by_collector) == [
        events[k].pk for k in ("config", "resolved", "collector")
    ]


@pytest.mark.django_db
def test_it_sorts_by_an_allowed_column(admin_client, events):
    asc = admin_client.get(reverse("health-events"), {"sort": "count"})
    assert [e.count for e in asc.context["page"].object_list] == [1, 1, 2, 4]
    desc = admin_client.get(reverse("health-events"), {"sort": "-first_seen"})
    assert ids(desc)[-1] == events["collector"].pk
    bogus = admin_client.get(reverse("health-events"), {"sort": "message;drop"})
    assert ids(bogus)[0] == events["config"].pk  # default order


@pytest.mark.django_db
def test_it_rejects_bad_filters_with_a_message_not_a_500(admin_client, events):
    resp = admin_client.get(
        reverse("health-events"), {"severity": "fatal", "source": "abc"}
    )
    assert resp.status_code == 200
    assert ids(resp) == []
    assert "Select a valid choice" in resp.content.decode()


@pytest.mark.django_db
def test_it_paginates_in_constant_queries(
    admin_client, source, django_assert_num_queries
):
    for i in range(60):
        make_event(source, message=f"e{i}", resolved_at=T0, first_seen=T0)
    # session, user, sources + collectors + deleted resources for the
    # dropdowns, COUNT, the page's ids, then its 50 events with their resources
    with django_assert_num_queries(8):
        first = admin_client.get(reverse("health-events"))
    assert len(first.context["page"].object_list) == 50
    assert "Page 1 of 2" in first.content.decode()
    other = make_source(make_collector("More"), "More")
    for i in range(30):
        make_event(other, message=f"m{i}", resolved_at=T0)
    with django_assert_num_queries(8):
        second = admin_client.get(reverse("health-events"), {"page": 2})
    assert len(second.context["page"].object_list) == 40


@pytest.mark.django_db
def test_it_shows_one_event_in_detail(admin_client, events):
    event = events["config"]
    event.error_code = "401"
    event.suggested_fix = "Check the API key and the region, then save the source."
    event.save()
    resp = admin_client.get(reverse("health-event-detail", args=[event.pk]))
    html = resp.content.decode()
    assert resp.status_code == 200
    assert "KnowBe4 rejected the API key" in html
    assert "Check the API key and the region" in html
    assert "<dt>Count</dt><dd>4</dd>" in html
    assert event.source.get_absolute_url() in html


@pytest.mark.django_db
def test_it_404s_an_unknown_event(admin_client):
    assert admin_client.get(reverse("health-event-detail", args=[9])).status_code == 404

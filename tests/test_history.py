"""History outlives its resource: health events and state transitions keep the
resource's type, id and name when it is deleted, and other apps can file
health events for their own resources through `collectors.health`."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse

from collectors import health
from collectors.choices import ErrorType, HealthEventName, Severity, SourceState
from collectors.models import HealthEvent, StateTransition
from tests.cast import make_collector, make_source

OUTPUT = health.Resource("Output", 7, "Splunk HEC")


def fail(resource, message="503 from KnowBe4", **kw) -> HealthEvent:
    kw.setdefault("severity", Severity.ERROR)
    return health.record(
        resource, ErrorType.THIRD_PARTY_GENERIC, code="503", message=message, **kw
    )


def page_ids(resp) -> list[int]:
    return [e.pk for e in resp.context["page"].object_list]


@pytest.mark.django_db
def test_it_names_the_resource_and_its_collector_on_the_event(source):
    event = fail(source)
    assert (event.resource_type, event.resource_id) == ("Source", source.pk)
    assert event.resource_name == "KnowBe4 Events"
    assert (event.collector_ref, event.collector_name) == (
        source.collector_id,
        "Production",
    )
    assert event.source_id == source.pk and event.collector_id is None


@pytest.mark.django_db
def test_it_keeps_a_deleted_sources_events_listed_filtered_and_open(
    admin_client, collector, source
):
    event = fail(source, message="KnowBe4 is down")
    source.name = "Renamed before deletion"
    source.save()
    source.delete()

    event.refresh_from_db()
    assert event.source_id is None
    assert event.resource_name == "Renamed before deletion"
    listing = admin_client.get(reverse("health-events"))
    html = listing.content.decode()
    assert page_ids(listing) == [event.pk]
    assert 'Renamed before deletion <span class="muted">(deleted)</span>' in html
    assert "Production / Renamed before deletion (deleted)" in html  # dropdown
    by_source = admin_client.get(
        reverse("health-events"), {"source": event.resource_id}
    )
    assert page_ids(by_source) == [event.pk]
    by_collector = admin_client.get(
        reverse("health-events"), {"collector": collector.pk}
    )
    assert page_ids(by_collector) == [event.pk]
    detail = admin_client.get(reverse("health-event-detail", args=[event.pk]))
    assert detail.status_code == 200
    assert "KnowBe4 is down" in detail.content.decode()
    assert f"?source={event.resource_id}" in detail.content.decode()


@pytest.mark.django_db
def test_it_keeps_a_deleted_collectors_events_filterable(admin_client):
    collector = make_collector("Gone")
    source = make_source(collector)
    own = fail(collector, message="collector trouble")
    theirs = fail(source)
    collector_id = collector.pk
    collector.delete()  # the cascade deletes the source too

    resp = admin_client.get(reverse("health-events"), {"collector": collector_id})
    assert sorted(page_ids(resp)) == sorted([own.pk, theirs.pk])
    assert "Gone (deleted)" in resp.content.decode()
    own.refresh_from_db()
    assert (own.resource_type, own.resource_name, own.collector_id) == (
        "Collector",
        "Gone",
        None,
    )


@pytest.mark.django_db
def test_it_links_a_live_source_and_not_a_deleted_one(admin_client, source):
    live = fail(source)
    resp = admin_client.get(reverse("health-event-detail", args=[live.pk]))
    assert source.get_absolute_url() in resp.content.decode()
    url = source.get_absolute_url()
    source.delete()
    resp = admin_client.get(reverse("health-event-detail", args=[live.pk]))
    assert url not in resp.content.decode()
    assert "(deleted)" in resp.content.decode()


@pytest.mark.django_db
def test_another_app_records_and_resolves_events_for_its_own_resource(
    admin_client,
):
    first = fail(OUTPUT, message="Splunk said 503")
    again = fail(OUTPUT, message="Splunk said 503 again")
    other = fail(health.Resource("Output", 8, "Sumo HTTP"))
    assert first.pk == again.pk and again.count == 2
    assert other.pk != first.pk
    assert (again.source_id, again.collector_id, again.collector_ref) == (
        None,
        None,
        None,
    )
    listing = admin_client.get(reverse("health-events"))
    assert "Splunk HEC" in listing.content.decode()
    only = {"resource_type": "Source"}
    sources_only = admin_client.get(reverse("health-events"), only)
    assert page_ids(sources_only) == []
    assert (
        admin_client.get(reverse("health-event-detail", args=[first.pk])).status_code
        == 200
    )

    assert health.resolve(OUTPUT) == 1
    assert HealthEvent.objects.for_resource("Output", 8).open().count() == 1


@pytest.mark.django_db
def test_it_resolves_only_the_named_event_when_asked(source):
    fail(source)
    health.record(
        source,
        ErrorType.THIRD_PARTY_CONFIG,
        code="401",
        message="rejected",
        severity=Severity.ERROR,
    )
    assert health.resolve(source, HealthEventName.THIRD_PARTY_CONFIG) == 1
    assert [e.event_name for e in HealthEvent.objects.open()] == [
        HealthEventName.THIRD_PARTY_GENERIC
    ]
    assert health.resolve(source.pk) == 1


@pytest.mark.django_db
def test_it_allows_one_open_event_per_resource_and_name_even_without_links():
    fail(OUTPUT)
    with pytest.raises(IntegrityError), transaction.atomic():
        HealthEvent.objects.create(
            event_name=HealthEventName.THIRD_PARTY_GENERIC,
            error_type=ErrorType.THIRD_PARTY_GENERIC,
            severity=Severity.ERROR,
            message="a second open one",
            **OUTPUT.columns(),
        )


@pytest.mark.django_db
def test_it_keeps_a_deleted_sources_transitions_with_its_names(source):
    source.request_stop()
    source_id = source.pk
    source.delete()
    rows = list(
        StateTransition.objects.filter(source_ref=source_id).values_list(
            "source_id", "source_name", "collector_name", "from_state", "to_state"
        )
    )
    assert rows == [
        (None, "KnowBe4 Events", "Production", "", SourceState.PENDING),
        (
            None,
            "KnowBe4 Events",
            "Production",
            SourceState.PENDING,
            SourceState.STOPPING,
        ),
    ]

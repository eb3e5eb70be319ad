"""Deleting a collector goes through Stopping, as a source delete does: each
source is finished by the engine (a run in flight stops writing), the
collector row goes once its sources are gone, and history stays."""

from __future__ import annotations

from django.urls import reverse

from collectors import engine, health, tasks
from collectors.choices import ErrorType, Severity, SourceState
from collectors.engine import store as engine_store
from collectors.models import (
    HealthEvent,
    HostedCollector,
    LogMessage,
    Source,
    StateTransition,
)
from tests import engine_support as es
from tests.cast import make_source

clock, sb = es.clock, es.sb


def test_it_moves_every_source_to_stopping_and_keeps_the_collector_until_done(
    admin_client, settings, sb, collector
):
    first = es.sandbox_source(settings, sb, collector, name="First")
    second = es.sandbox_source(settings, sb, collector, name="Second")
    engine.run(first.pk)
    Source.objects.filter(pk=second.pk).update(state=SourceState.ERROR)

    resp = admin_client.post(reverse("collector-delete", args=[collector.pk]))
    assert resp.status_code == 302
    states = set(Source.objects.values_list("state", flat=True))
    assert states == {SourceState.STOPPING}
    collector.refresh_from_db()
    assert collector.is_deleting
    page = admin_client.get(reverse("collection")).content.decode()
    assert "Deleting" in page
    assert reverse("collector-edit", args=[collector.pk]) not in page
    assert reverse("source-types", args=[collector.pk]) not in page

    sb.clear_requests()
    assert engine.run(first.pk).outcome == "deleted"
    assert HostedCollector.objects.filter(pk=collector.pk).exists()  # one left
    assert engine.run(second.pk).outcome == "deleted"
    assert not HostedCollector.objects.filter(pk=collector.pk).exists()
    assert es.api_requests(sb) == []  # finishing a removal asks KnowBe4 nothing
    assert LogMessage.objects.filter(collector_name="Production").count() == 350
    reasons = StateTransition.objects.filter(source_ref=first.pk).values_list(
        "to_state", flat=True
    )
    assert list(reasons)[0] == SourceState.PENDING
    assert list(reasons)[-1] == SourceState.STOPPING


def test_it_stops_a_run_in_flight_without_writing_after_the_delete(
    settings, sb, collector, monkeypatch
):
    # The delete comes from the run's own connection here: with pages sharing
    # a transaction it would be rolled back with them. Every page alone.
    settings.COLLECTION_BATCH_PAGES = 1
    source = es.sandbox_source(settings, sb, collector)
    real = engine_store.store_page
    calls = []

    def store(run, *args, **kw):
        calls.append(1)
        if len(calls) == 3:  # The user deletes the collector while page 3 is read.
            HostedCollector.objects.get(pk=collector.pk).request_delete()
        return real(run, *args, **kw)

    monkeypatch.setattr(engine_store, "store_page", store)

    result = engine.run(source.pk)

    assert result.outcome == "deleted"
    assert len(calls) == 3
    # Pages 1 and 2 were committed before the delete; page 3 was rolled back.
    assert LogMessage.objects.count() == 100
    assert not Source.objects.exists()
    assert not HostedCollector.objects.exists()


def test_it_keeps_the_health_history_of_the_deleted_collector(
    admin_client, settings, sb, collector
):
    source = es.sandbox_source(settings, sb, collector)
    event = health.record(
        source,
        ErrorType.THIRD_PARTY_GENERIC,
        code="503",
        message="KnowBe4 is down",
        severity=Severity.ERROR,
    )
    collector_id = collector.pk
    HostedCollector.objects.get(pk=collector_id).request_delete()
    engine.run(source.pk)

    event.refresh_from_db()
    assert (event.source_id, event.resource_name, event.collector_name) == (
        None,
        "KnowBe4 Events",
        "Production",
    )
    assert event.resolved_at is not None  # nothing left to fix
    resp = admin_client.get(reverse("health-events"), {"collector": collector_id})
    assert [e.pk for e in resp.context["page"].object_list] == [event.pk]
    detail = admin_client.get(reverse("health-event-detail", args=[event.pk]))
    assert detail.status_code == 200
    assert HealthEvent.objects.count() == 1


def test_it_deletes_a_collector_without_sources_at_once(admin_client, collector):
    admin_client.post(reverse("collector-delete", args=[collector.pk]))
    assert not HostedCollector.objects.exists()


def test_the_dispatcher_queues_the_stopping_sources_and_sweeps_the_collector(
    collector, monkeypatch
):
    queued = []
    monkeypatch.setattr(tasks, "async_task", lambda *a, **kw: queued.append(a))
    source = make_source(collector)
    collector.request_delete()
    assert tasks.dispatch() == 1
    assert queued == [(tasks.COLLECT_FUNC, source.pk)]
    # Removed by other means (e.g. admin): the next tick removes the collector.
    Source.objects.filter(pk=source.pk).delete()
    tasks.dispatch()
    assert not HostedCollector.objects.exists()


def test_it_refuses_new_sources_and_edits_while_deleting(admin_client, collector):
    make_source(collector)
    collector.request_delete()
    for name in ("source-types", "source-add", "collector-edit"):
        resp = admin_client.get(reverse(name, args=[collector.pk]), follow=True)
        assert "is being deleted" in resp.content.decode(), name
    resp = admin_client.post(
        reverse("source-add", args=[collector.pk]),
        {"name": "Late", "base_url_key": "us", "api_key": "x" * 20},
    )
    assert resp.status_code == 302
    assert Source.objects.count() == 1

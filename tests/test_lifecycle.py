"""Delete (Stopping) and Restart as the engine sees them: a stopped source is
deleted by the worker, its messages stay, and an in-flight page is abandoned
without partial writes."""

from __future__ import annotations

from collectors import engine, lifecycle
from collectors.choices import SourceState
from collectors.engine import store as engine_store
from collectors.models import LogMessage, Source
from tests import engine_support as es

clock, sb = es.clock, es.sb


def test_it_stopping_deletes_the_source_and_keeps_its_messages(settings, sb, collector):
    source = es.sandbox_source(settings, sb, collector)
    engine.run(source.pk)
    sb.clear_requests()
    source.refresh_from_db()
    assert source.request_stop()
    assert lifecycle.due_sources().filter(pk=source.pk).exists()

    result = engine.run(source.pk)

    assert result.outcome == "deleted" and result.requests == 0
    assert not Source.objects.filter(pk=source.pk).exists()
    kept = LogMessage.objects.filter(source_name=source.name)
    assert kept.count() == 350
    assert set(kept.values_list("source", flat=True)) == {None}


def test_it_a_page_in_flight_when_deleted_is_abandoned(
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
        if len(calls) == 3:  # The user deletes the source while page 3 is read.
            Source.objects.get(pk=source.pk).request_stop()
        return real(run, *args, **kw)

    monkeypatch.setattr(engine_store, "store_page", store)

    result = engine.run(source.pk)

    assert result.outcome == "deleted"
    assert len(calls) == 3
    assert not Source.objects.filter(pk=source.pk).exists()
    # Pages 1 and 2 were committed; page 3 was rolled back, not half-stored.
    assert LogMessage.objects.count() == 100
    assert set(LogMessage.objects.values_list("source", flat=True)) == {None}


def test_it_a_stopping_source_in_error_is_deleted_too(settings, sb, collector):
    source = es.sandbox_source(settings, sb, collector, api_key="kb4-wrong-key-1234")
    engine.run(source.pk)
    source.refresh_from_db()
    assert source.state == SourceState.ERROR
    assert source.request_stop()

    assert engine.run(source.pk).outcome == "deleted"
    assert len(es.api_requests(sb)) == 1


def test_it_restart_keeps_the_checkpoint(settings, sb, collector):
    source = es.sandbox_source(settings, sb, collector)
    engine.run(source.pk, max_pages=2)
    Source.objects.filter(pk=source.pk).update(state=SourceState.ERROR)
    source.refresh_from_db()
    checkpoint = (source.cursor_day, source.cursor_page, source.last_complete_day)

    assert source.restart()

    source.refresh_from_db()
    assert source.state == SourceState.PENDING
    assert (source.cursor_day, source.cursor_page, source.last_complete_day) == (
        checkpoint
    )
    sb.clear_requests()
    assert engine.run(source.pk).requests == 5
    assert len(es.stored_ids(source)) == 350


def test_it_a_user_stop_is_never_overwritten_by_the_worker(settings, sb, collector):
    """The worker's state moves are conditional: Stopping wins."""
    source = es.sandbox_source(settings, sb, collector)
    stale = Source.objects.get(pk=source.pk)  # The worker's copy: Pending.
    Source.objects.get(pk=source.pk).request_stop()

    assert not lifecycle.mark_started(stale)
    assert Source.objects.get(pk=source.pk).state == SourceState.STOPPING

"""An edited source proves its key at once: a new API key or Base URL, and
Restart, send it back through Pending, Started, Initialized, Authenticated
(one cheap request) to Collecting or Error, even when it has caught up.
Edits that change neither keep it collecting without a request."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse

from collectors import engine, lifecycle
from collectors.choices import ErrorType, HealthEventName, SourceState
from collectors.engine.daypages import EventsReader
from collectors.models import HealthEvent, Source, StateTransition
from tests import engine_support as es

clock, sb = es.clock, es.sb

S = SourceState
WALK = [
    (S.PENDING, S.STARTED),
    (S.STARTED, S.INITIALIZED),
    (S.INITIALIZED, S.AUTHENTICATED),
    (S.AUTHENTICATED, S.COLLECTING),
]


@pytest.fixture(autouse=True)
def _no_dispatch_on_save(settings):
    """The next dispatch is run by the test itself."""
    settings.COLLECTION_DISPATCH_ON_SAVE = False


def caught_up(settings, server, collector) -> Source:
    source = es.sandbox_source(settings, server, collector)
    assert engine.run(source.pk).outcome == "caught_up"
    source.refresh_from_db()
    assert source.state == S.COLLECTING
    server.clear_requests()
    return source


def edit(client, source: Source, **changes):
    data = {
        "name": source.name,
        "description": source.description,
        "category": source.category,
        "base_url_key": source.base_url_key,
        "api_key": "",
        "initial_lookback_days": str(source.initial_lookback_days),
        "rescan_days": str(source.rescan_days),
        "field_key": [],
        "field_value": [],
        **changes,
    }
    response = client.post(reverse("source-edit", args=[source.pk]), data)
    assert response.status_code == 302, response.content.decode()[:2000]
    source.refresh_from_db()
    return source


def next_dispatch(source: Source) -> engine.RunResult | None:
    """What the dispatcher would do now: claim the source if it is due, run it."""
    if not lifecycle.due_sources().filter(pk=source.pk).exists():
        return None
    assert lifecycle.claim(Source.objects.get(pk=source.pk))
    result = engine.run(source.pk)
    source.refresh_from_db()
    return result


def moves_since(source: Source, count: int) -> list[tuple[str, str]]:
    rows = StateTransition.objects.filter(source=source).order_by("at", "id")
    return list(rows.values_list("from_state", "to_state"))[count:]


def test_it_a_caught_up_source_given_a_wrong_key_goes_red_at_the_next_dispatch(
    settings, sb, clock, collector, admin_client
):
    source = caught_up(settings, sb, collector)
    before = StateTransition.objects.filter(source=source).count()

    edit(admin_client, source, api_key="kb4-wrong-key-0123456789")

    assert source.state == S.PENDING
    result = next_dispatch(source)
    assert result.outcome == "config_error" and result.requests == 1
    (probe,) = es.api_requests(sb)
    assert "per_page=1" in probe.query and probe.status == 401
    assert f"occurred_date={es.YESTERDAY}" in probe.query
    assert source.state == S.ERROR
    assert source.error_type == ErrorType.THIRD_PARTY_CONFIG
    assert moves_since(source, before) == [
        (S.COLLECTING, S.PENDING),
        (S.PENDING, S.STARTED),
        (S.STARTED, S.INITIALIZED),
        (S.INITIALIZED, S.ERROR),
    ]
    event = HealthEvent.objects.get(source=source, resolved_at=None)
    assert event.event_name == HealthEventName.THIRD_PARTY_CONFIG

    # The right key again: back to Collecting through every state, one request.
    before = StateTransition.objects.filter(source=source).count()
    sb.clear_requests()
    edit(admin_client, source, api_key=sb.api_key)
    result = next_dispatch(source)

    assert result.outcome == "caught_up" and result.requests == 1
    assert source.state == S.COLLECTING
    assert moves_since(source, before) == [(S.ERROR, S.PENDING), *WALK]
    assert not HealthEvent.objects.filter(source=source, resolved_at=None).exists()
    assert set(es.stored_ids(source)) == sb.event_ids(*es.lookback())


def test_it_a_new_key_is_authenticated_even_with_nothing_to_read(
    settings, sb, clock, collector, admin_client
):
    source = caught_up(settings, sb, collector)
    sb.add_api_key("kb4-second-key-0123456789")
    before = StateTransition.objects.filter(source=source).count()

    edit(admin_client, source, api_key="kb4-second-key-0123456789")
    result = next_dispatch(source)

    assert result.requests == 1 and result.stored == 0
    assert moves_since(source, before) == [(S.COLLECTING, S.PENDING), *WALK]
    # Caught up: due again when the next day closes, not before.
    assert next_dispatch(source) is None
    clock.shift(timedelta(days=1))
    assert next_dispatch(source).stored == 50


def test_it_a_description_only_edit_keeps_collecting_without_a_request(
    settings, sb, clock, collector, admin_client
):
    source = caught_up(settings, sb, collector)
    before = StateTransition.objects.filter(source=source).count()
    version = source.config_version

    edit(admin_client, source, description="Now with a description")

    assert source.state == S.COLLECTING
    assert source.config_version == version + 1
    assert next_dispatch(source) is None  # Not due: nothing to do until tomorrow.
    assert engine.run(source.pk).requests == 0  # Even if a task ran anyway.
    assert es.api_requests(sb) == []
    assert StateTransition.objects.filter(source=source).count() == before


def test_it_restart_sends_a_collecting_source_through_the_states(
    settings, sb, clock, collector, admin_client
):
    source = caught_up(settings, sb, collector)
    before = StateTransition.objects.filter(source=source).count()

    response = admin_client.post(reverse("source-restart", args=[source.pk]))

    assert response.status_code == 302
    result = next_dispatch(source)
    assert result.requests == 1
    assert moves_since(source, before) == [(S.COLLECTING, S.PENDING), *WALK]


def test_it_a_source_restarted_during_a_run_is_due_again_at_once(
    settings, sb, clock, collector, monkeypatch
):
    """The run in flight does not push the next attempt to tomorrow over the
    restart: the new run authenticates now."""
    source = es.sandbox_source(settings, sb, collector)
    real = EventsReader._finish

    def restart_then_finish(reader, ctx, *args):
        Source.objects.get(pk=source.pk).restart()
        return real(reader, ctx, *args)

    monkeypatch.setattr(EventsReader, "_finish", restart_then_finish)
    assert engine.run(source.pk).outcome == "reconfigured"
    monkeypatch.setattr(EventsReader, "_finish", real)

    source.refresh_from_db()
    assert source.state == S.PENDING and source.next_attempt_at is None
    sb.clear_requests()
    assert next_dispatch(source).requests == 1
    assert source.state == S.COLLECTING


def test_it_a_new_base_url_counts_as_new_credentials(collector, settings, sb):
    from collectors.forms import SourceForm

    source = es.sandbox_source(settings, sb, collector)
    data = {
        "name": source.name,
        "category": "",
        "base_url_key": "us",
        "api_key": sb.api_key,
        "initial_lookback_days": "7",
        "rescan_days": "1",
    }
    form = SourceForm(data, instance=source, collector=collector)
    assert form.is_valid(), form.errors
    assert form.changes_credentials
    same = {**data, "base_url_key": source.base_url_key, "api_key": ""}
    form = SourceForm(same, instance=source, collector=collector)
    assert form.is_valid(), form.errors
    assert not form.changes_credentials

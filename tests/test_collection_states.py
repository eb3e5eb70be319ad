"""States: Pending -> Started -> Initialized -> Authenticated -> Collecting,
recorded in order; configuration errors stop every request until an edit."""

from __future__ import annotations

from datetime import timedelta

from collectors import engine, lifecycle
from collectors.choices import ErrorType, HealthEventName, Severity, SourceState
from collectors.engine import failures
from collectors.models import HealthEvent, Source, StateTransition
from tests import engine_support as es

clock, sb = es.clock, es.sb

S = SourceState


def moves(source) -> list[tuple[str, str]]:
    return list(
        StateTransition.objects.filter(source=source).values_list(
            "from_state", "to_state"
        )
    )


def test_it_walks_the_states_in_order(settings, sb, collector):
    source = es.sandbox_source(settings, sb, collector)
    assert source.state == S.PENDING

    assert lifecycle.claim(source)
    source.refresh_from_db()
    assert source.state == S.STARTED
    engine.run(source.pk)

    assert moves(source) == [
        ("", S.PENDING),  # created
        (S.PENDING, S.STARTED),
        (S.STARTED, S.INITIALIZED),
        (S.INITIALIZED, S.AUTHENTICATED),
        (S.AUTHENTICATED, S.COLLECTING),
    ]
    times = list(
        StateTransition.objects.filter(source=source).values_list("at", flat=True)
    )
    assert times == sorted(times)
    source.refresh_from_db()
    assert source.state == S.COLLECTING


def test_it_later_runs_add_no_transitions(settings, sb, clock, collector):
    source = es.sandbox_source(settings, sb, collector)
    engine.run(source.pk)
    clock.shift(timedelta(days=1))

    assert engine.run(source.pk).outcome == "caught_up"
    assert len(moves(source)) == 5


def test_it_a_401_is_a_config_error_after_one_request_and_none_after(
    settings, sb, clock, collector
):
    source = es.sandbox_source(settings, sb, collector, api_key="kb4-wrong-key-1234")

    result = engine.run(source.pk)

    assert result.outcome == "config_error" and result.requests == 1
    assert len(es.api_requests(sb)) == 1
    source.refresh_from_db()
    assert source.state == S.ERROR
    assert source.error_type == ErrorType.THIRD_PARTY_CONFIG
    assert moves(source)[-1] == (S.INITIALIZED, S.ERROR)
    event = HealthEvent.objects.get(source=source)
    assert event.event_name == HealthEventName.THIRD_PARTY_CONFIG
    assert event.severity == Severity.ERROR
    assert event.error_code == "http_401"
    assert "Check the API key" in event.suggested_fix

    # However long we wait: no dispatch, and a delivered task makes no request.
    clock.shift(timedelta(days=2))
    assert not lifecycle.due_sources().filter(pk=source.pk).exists()
    assert engine.run(source.pk).requests == 0
    assert len(es.api_requests(sb)) == 1


def test_it_collection_resumes_from_the_checkpoint_after_an_edit(
    settings, sb, clock, collector
):
    source = es.sandbox_source(settings, sb, collector)
    assert engine.run(source.pk, max_pages=3).stored == 150
    sb.remove_api_key(sb.api_key)  # The key is reset in KnowBe4.
    assert engine.run(source.pk).outcome == "config_error"
    assert engine.run(source.pk).requests == 0

    sb.add_api_key("kb4-new-key-5678")
    source.refresh_from_db()
    source.set_api_key("kb4-new-key-5678")
    source.save()
    source.reconfigured()
    assert source.state == S.PENDING
    sb.clear_requests()
    result = engine.run(source.pk)

    assert result.outcome == "caught_up"
    first_day = es.lookback()[0] + timedelta(days=3)
    assert f"occurred_date={first_day}" in es.api_requests(sb)[0].query
    assert result.requests == 4
    assert set(es.stored_ids(source)) == sb.event_ids(*es.lookback())
    assert HealthEvent.objects.get(source=source).resolved_at is not None
    assert moves(source)[-4:] == [
        (S.PENDING, S.STARTED),
        (S.STARTED, S.INITIALIZED),
        (S.INITIALIZED, S.AUTHENTICATED),
        (S.AUTHENTICATED, S.COLLECTING),
    ]


def test_it_an_undecryptable_key_is_a_config_error_without_a_request(
    settings, sb, collector
):
    source = es.sandbox_source(settings, sb, collector)
    Source.objects.filter(pk=source.pk).update(api_key_encrypted="not-a-token")

    result = engine.run(source.pk)

    assert result.outcome == "config_error" and result.requests == 0
    assert es.api_requests(sb) == []
    source.refresh_from_db()
    assert source.state == S.ERROR
    assert HealthEvent.objects.get(source=source).error_code == "key_unreadable"


def test_it_a_base_url_no_longer_allowed_is_a_config_error(settings, sb, collector):
    source = es.sandbox_source(settings, sb, collector)
    settings.KNOWBE4_EXTRA_BASE_URLS = []

    assert engine.run(source.pk).outcome == "config_error"
    assert es.api_requests(sb) == []
    assert HealthEvent.objects.get(source=source).error_code == "unknown_base_url"


def test_it_a_source_saved_during_a_failing_run_is_retried_not_errored(
    settings, sb, clock, collector, monkeypatch
):
    source = es.sandbox_source(settings, sb, collector, api_key="kb4-wrong-key-1234")
    real = failures.config_error

    def user_fixes_the_key_meanwhile(run, exc):
        edited = Source.objects.get(pk=source.pk)
        edited.set_api_key(sb.api_key)
        edited.save()
        edited.reconfigured()
        return real(run, exc)

    monkeypatch.setattr(failures, "config_error", user_fixes_the_key_meanwhile)
    result = engine.run(source.pk)

    assert result.outcome == "reconfigured"
    source.refresh_from_db()
    assert source.state != S.ERROR
    assert not HealthEvent.objects.filter(source=source).exists()
    assert lifecycle.due_sources().filter(pk=source.pk).exists()
    monkeypatch.setattr(failures, "config_error", real)
    assert engine.run(source.pk).outcome == "caught_up"
    source.refresh_from_db()
    assert source.state == S.COLLECTING

"""The re-scan window is read again on a clock (default every 6 hours, a
per-source override of at least 15 minutes), not only when a day closes, so a
late event backdated into yesterday is stored within hours."""

from __future__ import annotations

from datetime import timedelta

import pytest

from collectors import engine, lifecycle
from collectors.forms import SourceForm
from tests import engine_support as es

clock, sb = es.clock, es.sb


def due_run(source):
    if lifecycle.due_sources().filter(pk=source.pk).exists():
        return engine.run(source.pk)
    return None


def test_it_reads_the_window_again_after_the_interval(settings, sb, clock, collector):
    source = es.sandbox_source(settings, sb, collector)
    engine.run(source.pk)
    source.refresh_from_db()
    first = source.last_rescan_at
    assert first is not None
    late = sb.add_event(occurred_date=f"{es.YESTERDAY}T09:00:00Z")
    sb.clear_requests()

    clock.move_to(first + timedelta(hours=5, minutes=59))
    assert due_run(source) is None
    clock.move_to(first + timedelta(hours=6, seconds=1))
    result = due_run(source)

    assert result.stored == 1 and late["id"] in es.stored_ids(source)
    queries = [r.query for r in es.api_requests(sb)]
    assert len(queries) == 1 and f"occurred_date={es.YESTERDAY}" in queries[0]
    source.refresh_from_db()
    assert source.last_rescan_at > first + timedelta(hours=6)
    assert source.last_complete_day == es.YESTERDAY and source.cursor_day is None


def test_it_uses_the_sources_own_interval(settings, sb, clock, collector):
    source = es.sandbox_source(settings, sb, collector, rescan_interval_minutes=15)
    engine.run(source.pk)
    source.refresh_from_db()
    clock.move_to(source.last_rescan_at + timedelta(minutes=15, seconds=1))
    assert due_run(source).requests == 1


def test_it_never_re_reads_without_a_window(settings, sb, clock, collector):
    source = es.sandbox_source(settings, sb, collector, rescan_days=0)
    engine.run(source.pk)
    clock.move_to(es.NOON + timedelta(hours=11))
    assert due_run(source) is None


def test_it_shows_when_the_window_was_last_read(settings, sb, admin_client, collector):
    source = es.sandbox_source(settings, sb, collector)
    engine.run(source.pk)
    source.refresh_from_db()
    page = admin_client.get(source.get_absolute_url()).content.decode()
    assert "read again every 6 h; last read " in page


@pytest.mark.parametrize("value", ["14", "0", "-1", "abc", "99999999999"])
def test_it_refuses_a_bad_interval(collector, value):
    form = SourceForm(
        {
            "name": "S",
            "base_url_key": "us",
            "api_key": "kb4-key-0123456789-abcdef",
            "initial_lookback_days": 7,
            "rescan_days": 1,
            "rescan_interval_minutes": value,
            "today_poll_minutes": 15,
        },
        collector=collector,
    )
    assert not form.is_valid()
    assert "rescan_interval_minutes" in form.errors

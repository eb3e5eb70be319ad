"""End to end over real HTTP: a source collects its window from the sandbox
exactly once, a second run adds nothing, and late backdated events inside the
re-scan window are caught."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from collectors import days, engine
from collectors.choices import SourceState
from collectors.models import LogMessage, Source
from tests import engine_support as es
from tests.cast import make_field

clock, sb = es.clock, es.sb

NEXT_DAY = datetime.combine(es.TODAY + timedelta(days=1), datetime.min.time(), UTC)


def test_it_stores_exactly_the_sandbox_ids_of_the_window(settings, sb, collector):
    source = es.sandbox_source(settings, sb, collector)

    result = engine.run(source.pk)

    assert result.outcome == "caught_up"
    expected = sb.event_ids(*es.lookback())
    ids = es.stored_ids(source)
    assert len(expected) == 7 * 50
    assert len(ids) == len(set(ids))
    assert set(ids) == expected
    # One page per day (50 events, 100 per page), nothing else.
    assert len(es.api_requests(sb)) == 7 == result.requests
    source.refresh_from_db()
    assert source.state == SourceState.COLLECTING
    assert source.last_complete_day == es.YESTERDAY
    assert source.cursor_day is None
    # Due again when the re-scan window is next read on the clock (6 h),
    # before the next day closes.
    rescan_at = source.last_rescan_at + settings.COLLECTION_RESCAN_INTERVAL
    assert source.next_attempt_at == rescan_at < days.collectable_at(es.TODAY)
    assert source.lease_owner == "" and source.lease_expires is None


def test_it_keeps_the_raw_json_and_the_metadata(settings, sb, collector):
    make_field("team")
    source = es.sandbox_source(
        settings, sb, collector, fields={"Team": "blue", "unknown": "x"}
    )

    engine.run(source.pk)

    msg = LogMessage.objects.filter(source=source).order_by("message_time").first()
    assert msg.source_name == source.name
    assert msg.source_category == "Security/KnowBe4"
    assert msg.collector_name == collector.name
    assert msg.fields == {"team": "blue"}
    doc = LogMessage.objects.filter(source=source).count()
    source.refresh_from_db()
    assert source.dropped_fields == {"unknown": doc}
    event = json.loads(msg.raw)
    assert msg.event_id == event["id"]
    assert list(event)[:2] == ["id", "account_id"]  # The received key order.
    assert msg.user_email == event["user"]["email"]
    assert msg.message_time.isoformat()[:19] == event["occurred_date"][:19]


def test_it_pages_through_a_day_of_many_events(settings, clock, collector):
    with es.running_sandbox(per_day={str(es.YESTERDAY): 250}, days=1) as server:
        source = es.sandbox_source(settings, server, collector, initial_lookback_days=1)
        result = engine.run(source.pk)
        assert set(es.stored_ids(source)) == server.event_ids(es.YESTERDAY)
    assert len(es.stored_ids(source)) == 250
    assert result.pages == 3


def test_it_stores_nothing_new_on_a_second_run(settings, sb, collector):
    source = es.sandbox_source(settings, sb, collector)
    engine.run(source.pk)
    before = LogMessage.objects.count()

    # Not due yet: no request at all.
    again = engine.run(source.pk)
    assert again.outcome == "not_due" and again.requests == 0

    # Forget the checkpoint: every day is read again and nothing is stored twice.
    Source.objects.filter(pk=source.pk).update(
        last_complete_day=None, next_attempt_at=None
    )
    rerun = engine.run(source.pk)
    assert rerun.requests == 7 and rerun.stored == 0
    assert LogMessage.objects.count() == before


def test_it_reads_the_next_closed_day_and_rescans_the_one_before(
    settings, sb, clock, collector
):
    source = es.sandbox_source(settings, sb, collector)
    # Only the pass when a day closes here (the clock's re-scan: its own test).
    Source.objects.filter(pk=source.pk).update(rescan_interval_minutes=7 * 24 * 60)
    engine.run(source.pk)
    late = sb.add_event(occurred_date=f"{es.YESTERDAY}T08:00:00Z")
    too_late = sb.add_event(
        occurred_date=f"{es.YESTERDAY - timedelta(days=1)}T08:00:00Z"
    )
    sb.clear_requests()

    clock.move_to(NEXT_DAY + timedelta(minutes=5))  # Inside the settle delay.
    assert engine.run(source.pk).requests == 0
    clock.move_to(NEXT_DAY + timedelta(minutes=11))
    result = engine.run(source.pk)

    days = [r.query for r in es.api_requests(sb)]
    assert len(days) == 2
    assert f"occurred_date={es.YESTERDAY}" in days[0]
    assert f"occurred_date={es.TODAY}" in days[1]
    ids = set(es.stored_ids(source))
    assert late["id"] in ids
    assert too_late["id"] not in ids  # Outside the 1-day re-scan window.
    assert result.stored == 50 + 1
    expected = sb.event_ids(es.YESTERDAY - timedelta(days=6), es.TODAY)
    assert ids == expected - {too_late["id"]}
    source.refresh_from_db()
    assert source.last_complete_day == es.TODAY


def test_it_a_look_back_of_zero_days_starts_with_the_next_closed_day(
    settings, sb, clock, collector
):
    source = es.sandbox_source(settings, sb, collector, initial_lookback_days=0)

    assert engine.run(source.pk).requests == 0
    source.refresh_from_db()
    assert source.last_complete_day == es.YESTERDAY

    clock.move_to(NEXT_DAY + timedelta(minutes=11))
    result = engine.run(source.pk, max_pages=1)
    assert result.requests == 1  # The re-scan of yesterday comes first.
    Source.objects.filter(pk=source.pk).update(next_attempt_at=None)
    engine.run(source.pk)
    assert set(es.stored_ids(source)) == sb.event_ids(es.YESTERDAY, es.TODAY)

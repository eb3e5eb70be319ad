"""Poison events: an event that cannot be stored as it is never fails its page.

Pages are served with `responses` as exact bytes, so what quarantine keeps can
be compared with what was sent, byte for byte. The same tests run on SQLite
and (the suite's second CI pass) on PostgreSQL, where a NUL in a text column
is refused by the database itself.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from django.contrib.auth.models import Permission
from django.db import DataError
from django.urls import reverse

from collectors import engine, quarantine
from collectors.choices import HealthEventName, Severity, SourceState
from collectors.engine import store as engine_store
from collectors.knowbe4 import events
from collectors.models import HealthEvent, LogMessage, QuarantinedEvent
from tests import engine_support as es
from tests.cast import make_source

clock = es.clock

URL = "https://api.events.knowbe4.com/events"
DAY = es.YESTERDAY


def event(n: int, **overrides) -> dict:
    doc = {
        "id": f"786a515c-1cbd-4a8c-a94a-61ad877c{n:04d}",
        "user": {"email": f"user{n}@example.com", "id": n},
        "description": "A description",
        "occurred_date": f"{DAY}T10:{n % 60:02d}:13.890Z",
        "risk": {"level": 3},
        "event_type": {"id": 1, "name": "phish_clicked"},
    }
    doc.update(overrides)
    return doc


def page_body(entries: list[bytes], next_page: int | None) -> bytes:
    """A page as KnowBe4 sends it, from each entry's exact bytes."""
    meta = json.dumps({"next_page": next_page, "current_page": 1}).encode()
    return b'{"data": [' + b", ".join(entries) + b'], "meta": ' + meta + b"}"


def encoded(doc) -> bytes:
    return json.dumps(doc).encode()


def serve(pages: dict[int, bytes]) -> list[int]:
    """Answer /events for DAY by page number (empty past the last); return the
    list of pages requested, in order."""
    asked: list[int] = []

    def answer(request):
        query = parse_qs(urlsplit(request.url).query)
        page = int(query["page"][0])
        asked.append(page)
        empty = page_body([], None)
        body = pages.get(page, empty) if query["occurred_date"] == [str(DAY)] else empty
        return 200, {"Content-Type": "application/json"}, body

    responses.add_callback(responses.GET, URL, callback=answer)
    return asked


@pytest.fixture
def src(db, collector):
    # A key of its own: the limiter's Redis counters (second CI pass) outlive
    # the test, and other files count requests made with the cast's key.
    return make_source(
        collector, initial_lookback_days=1, api_key="kb4-quarantine-tests-0123456789"
    )


def stored(source) -> list[str]:
    return sorted(es.stored_ids(source))


def warning(source) -> HealthEvent | None:
    return HealthEvent.objects.filter(
        source=source,
        event_name=HealthEventName.EVENTS_NOT_STORED,
        resolved_at__isnull=True,
    ).first()


def assert_moved_past_the_day(source) -> None:
    source.refresh_from_db()
    assert source.last_complete_day == DAY
    assert source.cursor_day is None
    assert source.state == SourceState.COLLECTING


@responses.activate
def test_it_stores_nul_and_surrogates_in_any_column_cleaned_with_raw_as_sent(
    clock, src
):
    nul_type = event(1, event_type={"id": 1, "name": "phish\u0000clicked"})
    nul_email = event(2, user={"email": "a\u0000b@example.com", "id": 2})
    nul_text = event(3, description="before\u0000after")
    lone = event(4, event_type={"id": 1, "name": "bad \ud800 name"})
    serve(
        {
            1: page_body(
                [encoded(e) for e in (nul_type, nul_email, nul_text, lone)], 2
            ),
            2: page_body([encoded(event(5))], None),
        }
    )

    result = engine.run(src.pk)

    assert result.outcome == "caught_up" and result.stored == 5
    rows = {m.event_id: m for m in LogMessage.objects.filter(source=src)}
    assert rows[nul_type["id"]].event_type == "phishclicked"
    assert rows[nul_email["id"]].user_email == "ab@example.com"
    assert rows[lone["id"]].event_type == "bad \ufffd name"
    # raw keeps the event as sent: JSON's text form escapes the NUL.
    assert json.loads(rows[nul_text["id"]].raw) == nul_text
    assert "\\u0000" in rows[nul_text["id"]].raw
    assert json.loads(rows[lone["id"]].raw) == lone
    assert not QuarantinedEvent.objects.exists()
    assert warning(src) is None
    assert_moved_past_the_day(src)


@responses.activate
def test_it_cuts_display_columns_to_the_model_widths_never_the_id(clock, src):
    width = LogMessage._meta.get_field("event_type").max_length
    long_type = event(1, event_type={"name": "x" * (width + 50)})
    long_email = event(2, user={"email": "e" * 400 + "@example.com"})
    serve({1: page_body([encoded(long_type), encoded(long_email)], None)})

    assert engine.run(src.pk).stored == 2

    first = LogMessage.objects.get(event_id=long_type["id"])
    assert first.event_type == "x" * width
    email_width = LogMessage._meta.get_field("user_email").max_length
    assert len(LogMessage.objects.get(event_id=long_email["id"]).user_email) == (
        email_width
    )


def lenient_ids(monkeypatch):
    """The 'upgrade' for numeric ids: they are read as their decimal text."""
    real = events.problem

    def problem(entry, id_max):
        if isinstance(entry, dict) and isinstance(entry.get("id"), int):
            entry["id"] = str(entry["id"])
        return real(entry, id_max)

    monkeypatch.setattr(events, "problem", problem)


def reads_yesterday(monkeypatch):
    """The 'upgrade' for `occurred_date: "yesterday"`."""
    real = events.parse_occurred

    def parse(value):
        if value == "yesterday":
            return datetime(DAY.year, DAY.month, DAY.day, 12, tzinfo=UTC)
        return real(value)

    monkeypatch.setattr(events, "parse_occurred", parse)


def decodes_strings(monkeypatch):
    """The 'upgrade' for an event sent as a JSON string holding the event."""
    real = events.split

    def split(data, body, id_max, checker=None):
        data = [json.loads(e) if isinstance(e, str) else e for e in data]
        return real(data, body, id_max, checker)

    monkeypatch.setattr(events, "split", split)


CASES = {
    "65-character id": (
        b'{"id": "' + b"a" * 65 + b'", "occurred_date": "' + str(DAY).encode() + b'"}',
        "invalid_id",
        None,
    ),
    "numeric id": (
        b'{"id":  12345, "occurred_date": "' + str(DAY).encode() + b'T01:00:00Z"}',
        "invalid_id",
        lenient_ids,
    ),
    "unreadable occurred_date": (
        b'{"id": "evt-yesterday",   "occurred_date": "yesterday"}',
        "unreadable_occurred_date",
        reads_yesterday,
    ),
    "missing occurred_date": (b'{"id": "evt-no-date"}', "missing_occurred_date", None),
    "no id": (b'{"occurred_date": "2026-03-09T01:00:00Z"}', "missing_id", None),
    "a string entry": (
        json.dumps(json.dumps(event(9, id="evt-sent-as-a-string"))).encode(),
        "not_an_object",
        decodes_strings,
    ),
    "a plain string entry": (b'"just a string"', "not_an_object", None),
}


@pytest.mark.parametrize("case", list(CASES))
@responses.activate
def test_it_quarantines_a_poison_event_and_stores_the_rest_once(
    clock, src, monkeypatch, case
):
    bad, code, fix = CASES[case]
    good = [event(1), event(2), event(3)]
    serve(
        {
            1: page_body([encoded(good[0]), bad, encoded(good[1])], 2),
            2: page_body([encoded(good[2])], None),
        }
    )

    result = engine.run(src.pk)

    assert result.outcome == "caught_up"
    assert stored(src) == sorted(e["id"] for e in good)
    assert_moved_past_the_day(src)
    kept = QuarantinedEvent.objects.get(source=src)
    assert (kept.day, kept.page, kept.reason_code) == (DAY, 1, code)
    assert bytes(kept.raw) == bad  # Verbatim, spacing and all.
    assert kept.reason and kept.reprocessed_at is None
    open_warning = warning(src)
    assert open_warning.severity == Severity.WARNING
    assert open_warning.message == "1 event could not be stored."

    # A later run (re-scan of the same day) keeps it once and stores nothing twice.
    clock.shift(timedelta(days=1))
    assert engine.run(src.pk).outcome == "caught_up"
    assert QuarantinedEvent.objects.filter(source=src).count() == 1
    assert LogMessage.objects.filter(source=src).count() == 3
    assert warning(src) is not None  # A clean run does not resolve it.

    if fix is None:  # No upgrade can store it: Reprocess leaves it, Warning stays.
        assert quarantine.reprocess(src) == (0, 1)
        assert warning(src) is not None
        return
    fix(monkeypatch)
    assert quarantine.reprocess(src) == (1, 0)
    assert LogMessage.objects.filter(source=src).count() == 4
    kept.refresh_from_db()
    assert kept.reprocessed_at is not None
    assert warning(src) is None
    assert HealthEvent.objects.get(
        source=src, event_name=HealthEventName.EVENTS_NOT_STORED
    ).resolved_at


@responses.activate
def test_it_keeps_a_json_page_without_a_data_list_whole_and_follows_its_meta(
    clock, src
):
    broken = b'{"data": {"oops": 1}, "meta": {"next_page": 2}}'
    asked = serve({1: broken, 2: page_body([encoded(event(7))], None)})

    assert engine.run(src.pk).outcome == "caught_up"

    assert asked[:2] == [1, 2]
    assert stored(src) == [event(7)["id"]]
    kept = QuarantinedEvent.objects.get(source=src)
    assert (bytes(kept.raw), kept.reason_code) == (broken, events.PAGE_CODE)
    assert_moved_past_the_day(src)
    assert warning(src).message == "1 event could not be stored."
    assert quarantine.reprocess(src) == (0, 1)


@responses.activate
def test_it_quarantines_only_the_row_the_database_refuses(clock, src, monkeypatch):
    """The safety net for a cause nobody foresaw: the page is retried row by
    row in savepoints and only the refused row is kept."""
    real = engine_store.MessageWriter._insert
    poison = event(2)["id"]

    def insert(rows):
        if any(row[1] == poison for row in rows):
            raise DataError("value refused")
        return real(rows)

    monkeypatch.setattr(engine_store.MessageWriter, "_insert", staticmethod(insert))
    serve({1: page_body([encoded(event(n)) for n in (1, 2, 3)], None)})

    assert engine.run(src.pk).outcome == "caught_up"

    assert stored(src) == sorted([event(1)["id"], event(3)["id"]])
    kept = QuarantinedEvent.objects.get(source=src)
    assert kept.reason_code == "refused_by_database" and kept.event_id == poison
    assert json.loads(bytes(kept.raw)) == event(2)
    assert_moved_past_the_day(src)

    monkeypatch.setattr(engine_store.MessageWriter, "_insert", staticmethod(real))
    assert quarantine.reprocess(src) == (1, 0)
    assert len(stored(src)) == 3 and warning(src) is None


@responses.activate
def test_it_counts_every_event_left_in_the_warning(clock, src):
    bad = [b'"one"', b'{"id": 7, "occurred_date": "2026-03-09"}', b"[1, 2]"]
    serve({1: page_body([*bad, encoded(event(1))], None)})

    engine.run(src.pk)

    assert warning(src).message == "3 events could not be stored."
    assert QuarantinedEvent.objects.filter(source=src).count() == 3


@responses.activate
def test_it_lists_quarantine_on_the_source_page_and_reprocesses_by_post(
    clock, src, admin_client, monkeypatch
):
    serve({1: page_body([b'{"id": 99, "occurred_date": "2026-03-09"}'], None)})
    engine.run(src.pk)
    page = admin_client.get(src.get_absolute_url())
    html = page.content.decode()
    assert 'id="quarantine"' in html and "invalid_id" in html
    assert "&quot;id&quot;: 99" in html
    url = reverse("source-reprocess", args=[src.pk])
    assert url in html
    # The Warning leads to the list.
    assert (
        f"{src.get_absolute_url()}#quarantine"
        in admin_client.get(reverse("source-health", args=[src.pk])).content.decode()
    )

    assert admin_client.get(url).status_code == 405
    response = admin_client.post(url, follow=True)
    assert "still cannot be stored" in response.content.decode()
    lenient_ids(monkeypatch)
    response = admin_client.post(url, follow=True)
    assert "1 event stored" in response.content.decode()
    assert warning(src) is None


def test_it_refuses_reprocess_without_the_manage_permission(client, user, src):
    client.force_login(user)
    url = reverse("source-reprocess", args=[src.pk])
    assert client.post(url).status_code == 403
    user.user_permissions.add(
        Permission.objects.get(
            codename="manage_collectors", content_type__app_label="collectors"
        )
    )
    assert client.post(url).status_code == 302

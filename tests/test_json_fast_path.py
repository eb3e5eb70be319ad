"""The events JSON fast path: orjson parses a page and writes each event's
`raw` back, and Python's json takes over for what orjson refuses, so no event
is stored differently from how json would have stored it (bar how a few
floats are spelt), and none is lost."""

from __future__ import annotations

import json

import pytest
from django.db import connection

from collectors.engine.store import COLUMNS, MessageWriter
from collectors.knowbe4 import events
from collectors.knowbe4.client import KnowBe4Client
from tests.cast import make_source

RAW = COLUMNS.index("raw")
TIME = COLUMNS.index("message_time")


def page(*entries: str) -> bytes:
    """A page of events from each entry's exact JSON text."""
    return (
        '{"data": [' + ", ".join(entries) + '], "meta": {"next_page": null}}'
    ).encode()


def stored_raw(source, body: bytes) -> tuple[bool, list[str]]:
    """(parsed natively, each event's `raw`) as the engine would store them."""
    with KnowBe4Client("https://api.events.knowbe4.com", "k" * 30) as client:
        parsed = client._parse_page(body)
    prepared = MessageWriter(source).prepare(parsed)
    assert not prepared.rejected
    return parsed.native, [row[RAW] for row in prepared.rows]


def as_json_writes_it(text: str) -> str:
    return json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":"))


@pytest.fixture
def source(db, collector):
    return make_source(collector)


def test_it_stores_an_ordinary_event_exactly_as_json_would(source):
    entry = (
        '{"id": "e1", "occurred_date": "2026-11-30T10:00:00.000Z", '
        '"user": {"email": "zoë@example.com", "id": 9007199254740993}, '
        '"risk": {"level": -3, "factor": 0.25, "big": 1e16, "expire_date": null}, '
        '"tags": ["a", "日本", true, false], "description": "tab\\tquote\\"",'
        ' "event_type": {"id": 1, "name": "phish_clicked"}}'
    )

    native, raws = stored_raw(source, page(entry))

    assert native
    assert raws == [as_json_writes_it(entry)]


@pytest.mark.parametrize(
    "entry",
    [
        # A lone surrogate escape: kept as \ud800 in raw (UTF-8 cannot hold it).
        '{"id": "e2", "occurred_date": "2026-11-30T10:00:00Z", "name": "a\\ud800b"}',
        # NaN and Infinity: JSON extensions json reads and writes.
        '{"id": "e3", "occurred_date": "2026-11-30T10:00:00Z", "score": NaN}',
        '{"id": "e4", "occurred_date": "2026-11-30T10:00:00Z", "n": 1e400}',
        # orjson would read 2**70 as a float.
        '{"id": "e5", "occurred_date": "2026-11-30T10:00:00Z", '
        '"n": 1180591620717411303424}',
    ],
)
def test_it_falls_back_to_json_for_what_orjson_refuses(source, entry):
    native, raws = stored_raw(source, page(entry))

    assert not native
    assert len(raws) == 1
    if "ud800" in entry:
        assert raws[0] == json.dumps(json.loads(entry), separators=(",", ":"))
    else:
        assert raws[0] == as_json_writes_it(entry)


def test_it_writes_a_value_nested_past_orjsons_limit_with_json():
    deep = "[" * 300 + "]" * 300
    value, native = events.loads(deep.encode())

    assert native
    assert events.dumps(value, native) == deep


def test_it_refuses_what_neither_parser_reads():
    with pytest.raises(ValueError):
        events.loads(b'{"data": [')


@pytest.mark.parametrize(
    "occurred",
    [
        "2026-11-30T10:00:00.056Z",  # KnowBe4's own spelling: sliced on SQLite.
        "2026-11-30T10:00:00.000Z",  # Whole seconds: Django writes no fraction.
        "2026-12-31T23:59:59.999Z",
        "2026-11-30T24:00:00.000Z",  # Refused by Python: rejected, not sliced.
        "2026-11-30T10:00:00Z",
        "2026-11-30T10:00:00.056789Z",
        "2026-11-30T10:00:00.056+02:00",
        "2026-11-30T10:00:00.056",
        "2026-11-30 10:00:00.056Z",
        "2026-11-30T10:00:00,056Z",
    ],
)
def test_it_writes_message_time_as_djangos_own_adapter_would(source, occurred):
    entry = json.dumps({"id": "e1", "occurred_date": occurred})
    with KnowBe4Client("https://api.events.knowbe4.com", "k" * 30) as client:
        parsed = client._parse_page(page(entry))

    prepared = MessageWriter(source).prepare(parsed)

    try:
        when = events.parse_occurred(occurred)
    except events.UnreadableDate:
        assert [r.code for r in prepared.rejected] == ["unreadable_occurred_date"]
        return
    assert [row[TIME] for row in prepared.rows] == [
        connection.ops.adapt_datetimefield_value(when)
    ]

"""The three wire formats, record by record and batch by batch."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime

import pytest

from outputs import formats
from outputs.models import Output, mask_token, mask_url

RAW = '{"id":"786a515c","user":{"email":"a@example.org"},"occurred_date":"2026-11-01T10:05:13.890Z"}'  # noqa: E501


def row(pk: int = 7, *, category: str = "Security/KnowBe4", raw: str = RAW, **kw):
    values = {
        "pk": pk,
        "event_id": "786a515c",
        "raw": raw,
        "message_time": datetime(2026, 11, 1, 10, 5, 13, 890000, tzinfo=UTC),
        "source_id": 1,
        "source_name": "KnowBe4 Events",
        "category": category,
        "collector_name": "Production",
        "fields": {"env": "prod"},
    }
    return formats.Row(**{**values, **kw})


def output(**kw) -> Output:
    return Output(**{"name": "o", "format": "ndjson", **kw})


def lines(batch: formats.Batch) -> list[dict]:
    body = batch.body
    if batch.headers.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    return [json.loads(line) for line in body.decode().splitlines()]


def test_it_sends_sumo_raw_events_with_the_message_id_gzipped():
    batch = formats.first_batch(
        output(format="sumo", compress=False, sumo_host="kb4-host"), [row()], ""
    )
    assert batch.headers == {
        "Content-Type": "text/plain; charset=utf-8",
        "Content-Encoding": "gzip",  # always, for Sumo
        "X-Sumo-Category": "Security/KnowBe4",
        "X-Sumo-Name": "KnowBe4 Events",
        "X-Sumo-Host": "kb4-host",
    }
    (event,) = lines(batch)
    assert event == {"message_id": 7, **json.loads(RAW)}
    assert list(event)[:2] == ["message_id", "id"]  # the raw event, as received


def test_it_never_mixes_categories_or_sources_in_one_sumo_request():
    rows = [row(1), row(2), row(3, category="Audit"), row(4)]
    batch = formats.first_batch(output(format="sumo"), rows, "")
    assert batch.message_ids == [1, 2]
    named = [row(5), row(6, source_name="Other")]
    assert formats.first_batch(output(format="sumo"), named, "").message_ids == [5]


def test_it_keeps_sumo_requests_within_one_megabyte_before_compression():
    big = "{" + '"id":"x","pad":"' + "a" * 9_000 + '"}'
    rows = [row(i, raw=big) for i in range(1, 301)]
    sumo = output(format="sumo", max_batch_bytes=5_000_000, max_batch_count=10_000)
    batch = formats.first_batch(sumo, rows, "")
    assert batch.raw_bytes <= 1_000_000 < batch.raw_bytes + 9_100
    assert len(gzip.decompress(batch.body)) == batch.raw_bytes


def test_it_sends_one_oversized_record_alone_rather_than_never():
    big = '{"id":"x","pad":"' + "a" * 5_000 + '"}'
    batch = formats.first_batch(output(max_batch_bytes=1_000), [row(1, raw=big)], "")
    assert batch.message_ids == [1]


def test_it_builds_the_splunk_hec_envelope():
    hec = output(
        format="hec",
        sumo_host="kb4-host",
        hec_sourcetype="knowbe4:user_event",
        hec_index="security",
    )
    batch = formats.first_batch(hec, [row()], "tok-123")
    assert batch.headers["Authorization"] == "Splunk tok-123"
    assert batch.headers["Content-Type"] == "application/json"
    (record,) = lines(batch)
    assert record == {
        "time": 1793527513.89,
        "host": "kb4-host",
        "source": "KnowBe4 Events",
        "sourcetype": "knowbe4:user_event",
        "index": "security",
        "fields": {
            "message_id": "7",
            "event_id": "786a515c",
            "_sourceCategory": "Security/KnowBe4",
            "_collector": "Production",
            "env": "prod",
        },
        "event": json.loads(RAW),
    }


def test_it_builds_generic_ndjson_with_an_optional_bearer_token():
    plain = output(compress=False)
    batch = formats.first_batch(plain, [row(1), row(2)], "")
    assert "Authorization" not in batch.headers
    assert "Content-Encoding" not in batch.headers
    first, second = lines(batch)
    assert first == {
        "message_id": 1,
        "event_id": "786a515c",
        "message_time": "2026-11-01T10:05:13.890000Z",
        "_source": "KnowBe4 Events",
        "_sourceCategory": "Security/KnowBe4",
        "_collector": "Production",
        "fields": {"env": "prod"},
        "event": json.loads(RAW),
    }
    assert second["message_id"] == 2
    tokened = formats.first_batch(output(), [row()], "s3cret")
    assert tokened.headers["Authorization"] == "Bearer s3cret"
    assert tokened.headers["Content-Encoding"] == "gzip"


@pytest.mark.parametrize("raw", ["{}", "  { } ", "[1,2]"])
def test_it_carries_the_id_even_on_odd_raw_text(raw):
    (event,) = lines(formats.first_batch(output(format="sumo"), [row(3, raw=raw)], ""))
    assert event["message_id"] == 3


def test_it_masks_urls_and_tokens():
    url = "https://endpoint4.collection.sumologic.com/receiver/v1/http/ZaVnC4dh=="
    assert mask_url(url) == "https://endpoint4.collection.sumologic.com/…"
    assert mask_url("https://user:pw@splunk:8088/x") == "https://splunk:8088/…"
    assert mask_token("0123456789abcdef") == "…cdef"
    assert mask_token("short") == "…"

"""Export of the current message results as streamed CSV and JSON lines."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.http import StreamingHttpResponse
from django.urls import reverse

from collectors.models import LogMessage
from collectors.views import messages as views
from tests.cast import API_KEY

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def add(source, n: int, category: str, **kw) -> LogMessage:
    return LogMessage.objects.create(
        source=source,
        event_id=f"evt-{n}",
        raw=json.dumps({"id": f"evt-{n}", "risk": {"level": n}}),
        message_time=NOW - timedelta(hours=n),
        receipt_time=NOW,
        source_name=source.name,
        source_category=category,
        collector_name=source.collector.name,
        fields={"team": "blue"},
        **kw,
    )


def body(resp) -> str:
    """The streamed body as text (a CSV's byte-order mark checked and dropped)."""
    assert isinstance(resp, StreamingHttpResponse)
    data = b"".join(resp.streaming_content)
    if resp["Content-Type"].startswith("text/csv"):
        assert data.startswith(b"\xef\xbb\xbf")
        return data.decode("utf-8-sig")
    return data.decode()


def csv_rows(resp) -> list[dict]:
    return list(csv.DictReader(io.StringIO(body(resp))))


@pytest.mark.django_db
def test_it_exports_the_filtered_rows_as_csv(admin_client, source):
    add(source, 1, "Security/KnowBe4", risk_level=-3, user_email="a@example.org")
    add(source, 2, "Security/Phish")
    add(source, 3, "Ops/KnowBe4")
    resp = admin_client.get(
        reverse("messages-export", args=["csv"]), {"category": "Security/*"}
    )
    assert resp["Content-Type"] == "text/csv; charset=utf-8"
    assert "attachment;" in resp["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(body(resp))))
    assert [r["event_id"] for r in rows] == ["evt-1", "evt-2"]
    first = rows[0]
    assert first["_sourceCategory"] == "Security/KnowBe4"
    assert first["_source"] == source.name
    assert first["_collector"] == source.collector.name
    assert first["risk_level"] == "-3"
    assert first["user_email"] == "a@example.org"
    assert json.loads(first["fields"]) == {"team": "blue"}
    assert json.loads(first["_raw"]) == {"id": "evt-1", "risk": {"level": 1}}
    assert first["_messagetime"] == "2026-11-27T11:00:00+00:00"


@pytest.mark.django_db
def test_it_exports_json_lines(admin_client, source):
    add(source, 1, "Security/KnowBe4")
    add(source, 2, "Other")
    resp = admin_client.get(
        reverse("messages-export", args=["jsonl"]), {"category": "Security/KnowBe4"}
    )
    assert resp["Content-Type"] == "application/x-ndjson"
    lines = body(resp).splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["_raw"]["id"] == "evt-1"
    assert record["_sourceCategory"] == "Security/KnowBe4"
    assert record["fields"] == {"team": "blue"}


@pytest.mark.django_db
def test_it_streams_in_chunks_rather_than_building_the_file(
    admin_client, source, monkeypatch
):
    monkeypatch.setattr(views, "EXPORT_CHUNK", 3)
    for n in range(10):
        add(source, n, "Security/KnowBe4")
    resp = admin_client.get(reverse("messages-export", args=["csv"]))
    assert resp.streaming
    chunks = list(resp.streaming_content)
    assert len(chunks) == 11  # the header, then one chunk per row, lazily
    assert API_KEY.encode() not in b"".join(chunks)


@pytest.mark.django_db
def test_it_neutralises_spreadsheet_formulas(admin_client, source):
    add(source, 1, '=HYPERLINK("http://evil")', event_type="+cmd")
    rows = csv_rows(admin_client.get(reverse("messages-export", args=["csv"])))
    assert rows[0]["_sourceCategory"].startswith("'=")
    assert rows[0]["event_type"] == "'+cmd"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "text",
    [
        " =1+1",
        "\t=1+1",
        "\n\n@SUM(A1)",
        "\u3000-2+3",
        "＝1+1",
        "＋cmd",
        "－1",
        "＠SUM(A1)",
        "  ＝HYPERLINK()",
        "\r=1",
    ],
)
def test_it_neutralises_formulas_after_whitespace_and_in_fullwidth(
    admin_client, source, text
):
    add(source, 1, text, event_type=text, user_email=text)
    (row,) = csv_rows(admin_client.get(reverse("messages-export", args=["csv"])))
    for column in ("_sourceCategory", "event_type", "user_email"):
        assert row[column] == "'" + text


@pytest.mark.django_db
@pytest.mark.parametrize("text", ["Security/KnowBe4", "a=b", "x+1", "Ünïcödé 東京"])
def test_it_leaves_other_text_alone(admin_client, source, text):
    add(source, 1, text, event_type=text)
    (row,) = csv_rows(admin_client.get(reverse("messages-export", args=["csv"])))
    assert row["_sourceCategory"] == row["event_type"] == text


@pytest.mark.django_db
def test_it_sends_utf8_with_a_byte_order_mark(admin_client, source):
    add(source, 1, "Sécurité/東京")
    resp = admin_client.get(reverse("messages-export", args=["csv"]))
    assert resp["Content-Type"] == "text/csv; charset=utf-8"
    data = b"".join(resp.streaming_content)
    assert data.startswith("\ufeffMessage time,".encode())
    assert data.count("\ufeff".encode()) == 1
    assert "Sécurité/東京".encode() in data


@pytest.mark.django_db
def test_it_exports_nothing_for_invalid_filters(admin_client, source):
    add(source, 1, "Security/KnowBe4")
    resp = admin_client.get(
        reverse("messages-export", args=["csv"]), {"risk_level": "x"}
    )
    assert body(resp).strip().splitlines() == [",".join(views.EXPORT_COLUMNS)]


@pytest.mark.django_db
def test_it_404s_an_unknown_format(admin_client):
    assert admin_client.get("/messages/export.xlsx").status_code == 404


@pytest.mark.django_db
def test_it_requires_sign_in(client):
    assert client.get(reverse("messages-export", args=["csv"])).status_code == 302

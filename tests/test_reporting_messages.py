"""Reporting record versions on the Messages page: a data-type column and
filter, and exports of each data type, as for events."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest

from collectors.engine import run
from collectors.knowbe4.records import MESSAGE_TYPES
from collectors.models import LogMessage
from tests.cast import make_source
from tests.sandbox_support import REPORTING_KEY, running_sandbox

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def collected(time_machine, settings, collector):
    """A Reporting source with every data type, one snapshot stored, and an
    events message beside it."""
    time_machine.move_to(NOW, tick=False)
    settings.KNOWBE4_RATE_LIMIT = False
    with running_sandbox(rate_limit=False, reporting={"origin": NOW.timestamp()}) as s:
        settings.KNOWBE4_EXTRA_BASE_URLS = [f"Sandbox|{s.url}"]
        source = make_source(
            collector,
            "KMSAT",
            api_key=REPORTING_KEY,
            base_url_key="x-sandbox",
            category="Security/KMSAT",
            kind="reporting",
            reporting={
                "data_types": ["phishing", "users", "groups", "training", "account"]
            },
        )
        assert run(source.pk).outcome == "caught_up"
    return source


def body(resp) -> str:
    return b"".join(resp.streaming_content).decode("utf-8-sig")


@pytest.mark.parametrize("data_type", sorted(set(MESSAGE_TYPES) - {"events"}))
def test_it_finds_and_exports_each_data_type(collected, admin_client, data_type):
    expected = LogMessage.objects.filter(data_type=data_type).count()
    assert expected
    resp = admin_client.get("/messages/", {"data_type": data_type})
    assert resp.status_code == 200
    shown = resp.context["page"].rows
    assert shown and {m.data_type for m in shown} == {data_type}
    assert MESSAGE_TYPES[data_type] in resp.content.decode()
    rows = list(
        csv.DictReader(
            io.StringIO(
                body(admin_client.get("/messages/export.csv", {"data_type": data_type}))
            )
        )
    )
    assert len(rows) == expected and {r["data_type"] for r in rows} == {data_type}
    assert all(r["_sourceCategory"] == "Security/KMSAT" for r in rows)
    lines = body(
        admin_client.get("/messages/export.jsonl", {"data_type": data_type})
    ).splitlines()
    assert len(lines) == expected
    assert all(json.loads(line)["data_type"] == data_type for line in lines)


def test_it_refuses_an_unknown_data_type_with_a_message(collected, admin_client):
    resp = admin_client.get("/messages/", {"data_type": "nope"})
    assert resp.status_code == 200
    assert not resp.context["page"].rows
    assert "data_type" in resp.context["form"].errors


def test_it_searches_a_record_by_its_text(collected, admin_client):
    resp = admin_client.get(
        "/messages/", {"q": "Équipe Montréal", "data_type": "group"}
    )
    rows = resp.context["page"].rows
    assert rows and all("Montréal" in m.raw for m in rows)

"""The source page's facts (state since, last success, checkpoint, re-scan,
freshness, retry streak, messages in total, Daily quota) stay true while the
page is open: the refresh endpoint renders them again for the page's own
source (`?detail=ID`), from the very templates the page includes, and
health.js puts them in place like every other live cell."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.urls import reverse

from collectors import crypto, ledger
from collectors.choices import SourceState
from collectors.models import Source
from collectors.views.health import LIVE_FACTS
from tests.cast import make_collector, make_messages, make_source

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
KEY = "kb4-refresh-tests-0123456789-AbCdEf"


@pytest.fixture
def frozen(time_machine):
    time_machine.move_to(NOW, tick=False)
    return time_machine


@pytest.fixture
def src(db, frozen):
    return make_source(make_collector("Production"), "Events", api_key=KEY)


def facts(client, source, **params) -> dict:
    resp = client.get(
        reverse("collection-status"),
        {"sources": str(source.pk), "detail": str(source.pk), **params},
    )
    assert resp.status_code == 200
    [item] = resp.json()["sources"]
    return item["cells"]


def page_html(client, source) -> str:
    return client.get(source.get_absolute_url()).content.decode()


def test_it_renders_the_facts_as_the_page_shows_them(admin_client, src):
    make_messages(src, 3)
    cells = facts(admin_client, src)

    html = page_html(admin_client, src)
    for name in LIVE_FACTS:
        assert f'data-live="{name}">{cells[name]}</' in html, name
    assert "newest stored event occurred 2026-11-01" in cells["freshness"]
    assert cells["messages_total"] == "3"


def test_it_shows_what_a_run_stored_and_spent_since_the_page_opened(
    admin_client, src, frozen
):
    before = facts(admin_client, src)
    assert "no event stored yet" in before["freshness"]
    assert '<dd class="quota-used">0</dd>' in before["quota"]

    make_messages(src, 2, start=NOW - timedelta(minutes=5))
    for _ in range(3):
        ledger.take(src.kind, crypto.key_fingerprint(KEY), None)
    Source.objects.filter(pk=src.pk).update(
        last_complete_day=date(2026, 11, 1),
        last_success_at=NOW,
        error_streak_started=NOW,
        state=SourceState.COLLECTING,
        state_changed=NOW,
    )
    frozen.shift(timedelta(minutes=1))
    after = facts(admin_client, src)

    assert after["messages_total"] == "2"
    assert "every day up to <strong>2026-11-01</strong>" in after["checkpoint"]
    assert after["last_success"] == "2026-11-02 12:00:00 UTC"
    assert (
        "gives up at <strong>2026-11-02 13:30:00 UTC</strong>" in after["retry_streak"]
    )
    assert "since 2026-11-02 12:00:00 UTC" in after["state_since"]

    assert "occurred 2026-11-02 11:55:01 UTC (5\xa0minutes ago)" in after["freshness"]
    assert '<dd class="quota-used">3</dd>' in after["quota"]


def test_it_adds_them_only_for_the_named_source(admin_client, src):
    other = make_source(src.collector, "Other", api_key=KEY)
    resp = admin_client.get(
        reverse("collection-status"),
        {"collectors": str(src.collector.pk), "detail": str(src.pk)},
    )
    cells = {s["id"]: s["cells"] for s in resp.json()["sources"]}

    assert set(LIVE_FACTS) <= set(cells[src.pk])
    assert not set(LIVE_FACTS) & set(cells[other.pk])


def test_it_adds_nothing_for_a_source_not_among_the_rows(admin_client, src):
    other = make_source(src.collector, "Other", api_key=KEY)
    cells = facts(admin_client, src, detail=str(other.pk))

    assert "freshness" not in cells


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "9" * 40])
def test_it_refuses_a_detail_that_is_not_a_source_id(admin_client, src, value):
    resp = admin_client.get(
        reverse("collection-status"), {"sources": str(src.pk), "detail": value}
    )

    assert resp.status_code == 400
    assert resp.json() == {"error": "detail: expected a source id."}


def test_it_never_sends_the_key(admin_client, src):
    resp = admin_client.get(
        reverse("collection-status"), {"sources": str(src.pk), "detail": str(src.pk)}
    )

    assert KEY not in resp.content.decode()
    assert crypto.key_fingerprint(KEY) not in resp.content.decode()


def test_it_requires_sign_in(client, src):
    resp = client.get(reverse("collection-status"), {"detail": str(src.pk)})

    assert resp.status_code == 302


def test_it_marks_the_source_page_for_its_detail(admin_client, src):
    html = admin_client.get(src.get_absolute_url()).content.decode()

    assert f'data-status-detail="{src.pk}"' in html

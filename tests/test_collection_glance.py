"""A glanceable Collection page: Sumo's columns, the summary strip, the Show
filter, trailing-wildcard search, Messages and the Last 24 hours sparkline,
backfill progress, and the refresh endpoint's passed states and gone rows."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest
import time_machine
from django.urls import reverse

from collectors.choices import HealthEventName, Severity, SourceState
from collectors.models import HealthEvent, Source
from tests.cast import add_messages, make_collector, make_source, make_user

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def open_event(severity, *, source=None, collector=None):
    return HealthEvent.objects.create(
        source=source,
        collector=collector,
        event_name=HealthEventName.THIRD_PARTY_GENERIC,
        error_type="ThirdPartyGeneric",
        severity=severity,
        message="KnowBe4 answered 503",
    )


def row(html: str, attr: str) -> str:
    start = html.index(attr)
    return html[start : html.index("</tr>", start)]


def cell(html_row: str, live: str) -> str:
    match = re.search(rf'data-live="{live}">(.*?)</td>', html_row)
    return match.group(1)


def page(client, **params) -> str:
    response = client.get("/", params)
    assert response.status_code == 200
    return response.content.decode()


def listed_sources(html: str) -> set[int]:
    return {int(pk) for pk in re.findall(r'<tr [^>]*data-source-id="(\d+)"', html)}


@pytest.fixture
def world(db):
    prod = make_collector("Production", category="Security")
    lab = make_collector("Lab", category="Testing")
    return {
        "prod": prod,
        "lab": lab,
        "collecting": make_source(prod, "Phish Events", state=SourceState.COLLECTING),
        "error": make_source(prod, "Training", state=SourceState.ERROR),
        "warning": make_source(lab, "Lab Events", state=SourceState.COLLECTING),
        "stopping": make_source(lab, "Old", state=SourceState.STOPPING),
        "pending": make_source(lab, "New one"),
    }


def test_it_has_sumo_columns_in_order(admin_client, world):
    html = page(admin_client)
    head = html[html.index("<thead>") : html.index("</thead>")]
    names = re.findall(r"<th [^>]*>([^<]+)", head)
    assert names[:8] == [
        "Name",
        "Health",
        "Type",
        "Status",
        "Source Category",
        "Sources",
        "Messages ",
        "Last 24 hours",
    ]
    assert "(last 24 hours)" in head
    collector_row = row(html, f'data-collector-id="{world["prod"].pk}"')
    assert cell(collector_row, "sources") == "2"


def test_it_sums_up_sources_and_filters_on_a_click(admin_client, world):
    open_event(Severity.WARNING, source=world["warning"])
    open_event(Severity.ERROR, source=world["error"])
    response = admin_client.get("/")
    assert response.context["summary"] == {
        "collecting": 2,
        "errors": 1,
        "warnings": 1,
        "stopping": 1,
    }
    html = response.content.decode()
    assert 'href="?show=errors"' in html
    expected = {
        "collecting": {world["collecting"].pk, world["warning"].pk},
        "errors": {world["error"].pk},
        "warnings": {world["warning"].pk},
        "stopping": {world["stopping"].pk},
        "all": {s.pk for s in Source.objects.all()},
    }
    for show, pks in expected.items():
        assert listed_sources(page(admin_client, show=show)) == pks, show
    errors = page(admin_client, show="errors")
    assert f'data-collector-id="{world["lab"].pk}"' not in errors
    assert 'aria-current="true"' in errors


def test_it_lists_a_collector_with_its_own_error_under_errors(admin_client, world):
    open_event(Severity.ERROR, collector=world["lab"])
    html = page(admin_client, show="errors")
    assert f'data-collector-id="{world["lab"].pk}"' in html


def test_it_refuses_an_unknown_show_value_clearly(admin_client, world):
    response = admin_client.get("/", {"show": "<everything>"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "Unknown Show filter" in html
    assert listed_sources(html) == {s.pk for s in Source.objects.all()}


def test_it_searches_with_a_trailing_wildcard(admin_client, world):
    assert listed_sources(page(admin_client, q="phish*")) == {world["collecting"].pk}
    # without the star the text may be anywhere; with it, only at the start
    assert listed_sources(page(admin_client, q="events")) == {
        world["collecting"].pk,
        world["warning"].pk,
    }
    assert listed_sources(page(admin_client, q="events*")) == set()
    # a collector's name or category lists all its sources
    assert listed_sources(page(admin_client, q="test*")) == {
        world["warning"].pk,
        world["stopping"].pk,
        world["pending"].pk,
    }
    assert len(listed_sources(page(admin_client, q="*"))) == 5
    combined = page(admin_client, q="lab*", show="stopping")
    assert listed_sources(combined) == {world["stopping"].pk}
    assert "q=lab%2A&amp;show=errors" in combined


@time_machine.travel(NOW, tick=False)
def test_it_shows_messages_and_an_hourly_sparkline(admin_client, world):
    source = world["collecting"]
    add_messages(source, 1200, received=NOW - timedelta(minutes=10))
    add_messages(source, 5, received=NOW - timedelta(hours=30), start=5000)
    add_messages(world["error"], 3, received=NOW - timedelta(hours=3), start=9000)
    html = page(admin_client)
    source_row = row(html, f'data-source-id="{source.pk}"')
    assert cell(source_row, "messages") == "1,200"
    spark = cell(source_row, "activity")
    assert spark.startswith('<svg class="sparkline"')
    assert "1,200 messages in the last 24 hours" in spark
    assert spark.count("<rect") == 1
    collector_row = row(html, f'data-collector-id="{world["prod"].pk}"')
    assert cell(collector_row, "messages") == "1,203"
    assert cell(collector_row, "activity").count("<rect") == 2
    assert "style=" not in source_row and "<script" not in source_row


@time_machine.travel(NOW, tick=False)
def test_it_shows_backfill_progress_in_the_status_cell(admin_client, world):
    with time_machine.travel(NOW - timedelta(hours=1), tick=False):
        source = make_source(
            world["prod"],
            "Backfilling",
            state=SourceState.COLLECTING,
            initial_lookback_days=90,
        )
    Source.objects.filter(pk=source.pk).update(last_complete_day=date(2026, 9, 7))
    add_messages(source, 4400, received=NOW - timedelta(hours=1))
    add_messages(source, 600, received=NOW - timedelta(minutes=2), start=10_000)
    status = cell(row(page(admin_client), f'data-source-id="{source.pk}"'), "status")
    assert '<progress max="90" value="10"' in status
    assert "10 of 90 days" in status
    assert "5,000 events" in status
    assert "about 11 h left" in status


def test_it_offers_edit_only_to_managers(client, world):
    client.force_login(make_user("Viewer"))
    html = page(client)
    assert reverse("source-edit", args=[world["collecting"].pk]) not in html
    client.force_login(make_user("Collector manager"))
    assert reverse("source-edit", args=[world["collecting"].pk]) in page(client)


def _populate(prefix: str, collectors: int, per: int) -> None:
    for i in range(collectors):
        c = make_collector(f"{prefix}{i:03}")
        for j in range(per):
            s = make_source(c, f"S{j}", state=SourceState.COLLECTING)
            add_messages(s, 2, received=NOW - timedelta(hours=j + 1))
            open_event(Severity.WARNING if j % 2 else Severity.ERROR, source=s)


@time_machine.travel(NOW, tick=False)
def test_it_runs_constant_queries_with_activity_and_backfills(
    admin_client, django_assert_num_queries
):
    _populate("Small", 2, 2)
    admin_client.get("/")
    # session, user, summary, count, ids, collectors, sources, the collectors'
    # sources, activity, backfill counts
    with django_assert_num_queries(10):
        admin_client.get("/")
    _populate("Big", 40, 4)
    with django_assert_num_queries(10):
        html = page(admin_client, show="all")
    assert len(listed_sources(html)) == 4 + 160
    with django_assert_num_queries(10):
        page(admin_client, q="big*", show="errors")


def status(client, **params) -> dict:
    response = client.get(reverse("collection-status"), params)
    assert response.status_code == 200
    return response.json()


@time_machine.travel(NOW, tick=False)
def test_it_returns_the_states_passed_since_the_last_refresh(admin_client, world):
    source = make_source(world["prod"], "Walker")
    since = status(admin_client, sources=str(source.pk))["now"]
    with time_machine.travel(NOW + timedelta(seconds=1), tick=False):
        for state in ("started", "initialized", "authenticated", "collecting"):
            source.transition(state, "test")
    with time_machine.travel(NOW + timedelta(seconds=2), tick=False):
        data = status(admin_client, sources=str(source.pk), since=since)
    (item,) = data["sources"]
    assert item["state"] == "collecting"
    status_cell = item["cells"]["status"]
    assert "Pending → Started → Initialized → Authenticated →" in status_cell
    assert (
        '→</span> <span class="state state-collecting" data-state>Collecting</span>'
        in status_cell
    )
    with time_machine.travel(NOW + timedelta(seconds=6), tick=False):
        later = status(admin_client, sources=str(source.pk), since=data["now"])
    assert "state-trail" not in later["sources"][0]["cells"]["status"]


def test_it_names_the_rows_that_are_gone(admin_client, world):
    gone = world["stopping"]
    gone_pk, lab_pk = gone.pk, world["lab"].pk
    gone.delete()
    data = status(
        admin_client,
        sources=f"{gone_pk},{world['pending'].pk}",
        collectors=f"{lab_pk},999999",
    )
    assert data["gone"] == {"sources": [gone_pk], "collectors": [999999]}


@pytest.mark.parametrize("since", ["yesterday", "2026-11-27T12:00:00", "\x00"])
def test_it_refuses_a_bad_since_clearly(admin_client, since):
    response = admin_client.get(reverse("collection-status"), {"since": since})
    assert response.status_code == 400
    assert "since" in response.json()["error"]


def test_it_renders_the_same_cells_on_the_page_and_in_the_refresh(admin_client, world):
    open_event(Severity.ERROR, source=world["error"])
    html = page(admin_client)
    data = status(admin_client, collectors=f"{world['prod'].pk}")
    for item in data["sources"]:
        source_row = row(html, f'data-source-id="{item["id"]}"')
        for name in ("health", "status", "messages", "activity"):
            assert cell(source_row, name) == item["cells"][name], name

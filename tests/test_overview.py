"""The Overview dashboard: each aggregate against a direct count of a known
data set, its filters, links to the messages behind a figure, the menu, and
a constant number of queries."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine
from django.urls import reverse

from collectors import overview
from collectors.choices import HealthEventName, Severity, SourceState
from collectors.models import HealthEvent, LogMessage
from tests.cast import make_collector, make_source

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
TYPES = ["phishing_click", "training_completed", "password_reuse", "mfa_disabled"]
USERS = [f"user{i}@example.org" for i in range(14)]

pytestmark = pytest.mark.django_db


@pytest.fixture
def data():
    """Two collectors, three sources, 400 messages over 40 days (known mix),
    plus an event type that only occurs in the last five days."""
    prod, lab = make_collector("Production"), make_collector("Lab")
    a = make_source(prod, "KB4 A", category="Security/KnowBe4")
    b = make_source(prod, "KB4 B", category="Security/Phish")
    c = make_source(lab, "KB4 C", category="Lab/KnowBe4")
    rows = []
    for n in range(400):
        source = (a, b, c)[n % 3]
        risk = None if n % 17 == 0 else (n % 21) - 10
        rows.append(
            LogMessage(
                source=source,
                event_id=f"evt-{n}",
                raw=json.dumps({"id": n}),
                message_time=NOW - timedelta(hours=n * 2.4 + 1),
                source_name=source.name,
                source_category=source.category,
                collector_name=source.collector.name,
                event_type=TYPES[n % 4] if n % 23 else "",
                risk_level=risk,
                user_email=USERS[n % 14] if n % 19 else "",
            )
        )
    for n in range(5):
        rows.append(
            LogMessage(
                source=a,
                event_id=f"usb-{n}",
                raw="{}",
                message_time=NOW - timedelta(days=n, hours=3),
                source_name=a.name,
                source_category=a.category,
                collector_name=prod.name,
                event_type="usb_drop",
                risk_level=8,
                user_email=USERS[0],
            )
        )
    LogMessage.objects.bulk_create(rows)
    return {"a": a, "b": b, "c": c, "prod": prod, "lab": lab}


def window(days: int = 30, **scope):
    """The messages a direct count expects: last `days` days, in scope."""
    return [
        m
        for m in LogMessage.objects.all()
        if m.message_time >= NOW - timedelta(days=days)
        and all(getattr(m, k) == v for k, v in scope.items())
    ]


def view_for(**params):
    """The Overview's filter and panels for these GET parameters, at NOW."""
    with time_machine.travel(NOW, tick=False):
        view = overview.OverviewFilter.from_params(_query(params), now=NOW)
        return view, overview.build(view)


def _query(params):
    from django.http import QueryDict

    q = QueryDict(mutable=True)
    for k, v in params.items():
        q[k] = str(v)
    return q


def test_it_counts_events_per_day_by_type_as_a_direct_count(data):
    view, panels = view_for()
    expected = Counter(
        (m.message_time.date(), m.event_type or "Other") for m in window()
    )
    got = Counter()
    series = [s["key"] for s in panels["events_per_day"]["series"]]
    for d in panels["events_per_day"]["days"]:
        for name, n in zip(series, d["counts"], strict=True):
            if n:
                got[(d["day"], name)] += n
    assert got == expected
    assert sum(expected.values()) == panels["totals"]["messages"] == len(window())
    assert panels["events_per_day"]["days"][0]["day"] == (NOW - timedelta(30)).date()
    assert panels["events_per_day"]["days"][-1]["day"] == NOW.date()
    assert "usb_drop" in series


def test_it_distributes_risk_levels_as_a_direct_count(data):
    _, panels = view_for(range="7d")
    expected = Counter(m.risk_level for m in window(7))
    assert {r["level"]: r["count"] for r in panels["risk"]} == expected
    levels = [r["level"] for r in panels["risk"]]
    assert levels[-1] is None and levels[:-1] == sorted(levels[:-1])


def test_it_ranks_the_top_ten_users_by_summed_risk(data):
    _, panels = view_for()
    sums, counts = defaultdict(int), Counter()
    for m in window():
        if m.user_email and m.risk_level is not None:
            sums[m.user_email] += m.risk_level
            counts[m.user_email] += 1
    ranked = sorted(sums, key=lambda u: (-sums[u], -counts[u], u))[:10]
    got = panels["top_users"]
    assert [u["user_email"] for u in got] == ranked
    assert [u["risk"] for u in got] == [sums[u] for u in ranked]
    assert [u["events"] for u in got] == [counts[u] for u in ranked]


def test_it_lists_only_event_types_new_to_the_range(data):
    _, panels = view_for(range="7d")
    rows = panels["new_types"]["rows"]
    assert [r["event_type"] for r in rows] == ["usb_drop"]
    assert rows[0]["events"] == 5
    assert rows[0]["first_seen"] == NOW - timedelta(days=4, hours=3)
    # The data span 40 days, so over 30 days the other types are old too.
    _, wide = view_for(range="30d")
    assert [r["event_type"] for r in wide["new_types"]["rows"]] == ["usb_drop"]


def test_it_calls_a_type_new_to_the_chosen_collector(data):
    """Scoped to Lab, a type that Production had before is still new to Lab."""
    LogMessage.objects.create(
        source=data["c"],
        event_id="lab-usb",
        raw="{}",
        message_time=NOW - timedelta(hours=2),
        source_name="KB4 C",
        collector_name="Lab",
        event_type="usb_drop",
        risk_level=1,
    )
    _, panels = view_for(range="24h", collector=data["lab"].pk)
    assert [r["event_type"] for r in panels["new_types"]["rows"]] == ["usb_drop"]
    _, everywhere = view_for(range="24h")
    assert everywhere["new_types"]["rows"] == []


def test_it_filters_every_panel_by_source(data):
    _, panels = view_for(source=data["b"].pk)
    expected = window(source_id=data["b"].pk)
    assert panels["totals"]["messages"] == len(expected)
    assert sum(r["count"] for r in panels["risk"]) == len(expected)
    assert panels["sources"]["total"] == 1


def test_it_filters_by_category_pattern(data):
    _, panels = view_for(category="*/knowbe4")
    expected = [m for m in window() if m.source_category.endswith("/KnowBe4")]
    assert panels["totals"]["messages"] == len(expected)
    assert panels["sources"]["total"] == 2


def test_it_counts_sources_by_health(data):
    HealthEvent.objects.create(
        source=data["a"],
        event_name=HealthEventName.THIRD_PARTY_CONFIG,
        error_type="ThirdPartyConfig",
        severity=Severity.ERROR,
        message="401",
    )
    HealthEvent.objects.create(
        source=data["b"],
        event_name=HealthEventName.THIRD_PARTY_GENERIC,
        error_type="ThirdPartyGeneric",
        severity=Severity.WARNING,
        message="quota",
    )
    HealthEvent.objects.create(
        source=data["c"],
        event_name=HealthEventName.THIRD_PARTY_GENERIC,
        error_type="ThirdPartyGeneric",
        severity=Severity.ERROR,
        message="resolved",
        resolved_at=NOW,
    )
    data["c"].state = SourceState.COLLECTING
    data["c"].save()
    _, panels = view_for()
    looks = {row["look"].key: row["count"] for row in panels["sources"]["looks"]}
    assert looks == {"error": 1, "warning": 1, "healthy": 1, "neutral": 0}
    names = [row["source"].name for row in panels["sources"]["unhealthy"]]
    assert names == ["KB4 A", "KB4 B"]


def test_it_links_a_user_to_exactly_their_messages(admin_client, data):
    _, panels = view_for(collector=data["prod"].pk)
    top = panels["top_users"][0]
    url = top["url"]
    params = parse_qs(urlsplit(url).query)
    assert params["user_email"] == [top["user_email"]]
    assert params["range"] == ["30d"] and params["collector"] == [str(data["prod"].pk)]
    with time_machine.travel(NOW, tick=False):
        page = admin_client.get(url)
    shown = page.context["page"].rows
    assert len(shown) == top["events"]
    assert {m.user_email for m in shown} == {top["user_email"]}


def test_it_links_a_day_to_exactly_that_days_messages(admin_client, data, settings):
    """The day link carries From/To in the user's zone, to the second."""
    _, panels = view_for()
    day = panels["events_per_day"]["days"][-3]
    with time_machine.travel(NOW, tick=False):
        page = admin_client.get(day["url"])
    assert page.status_code == 200
    assert len(page.context["page"].rows) == sum(day["counts"])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"range": "", "until": "2026-11-20T00:00"}, "Choose a time range, or a start"),
        ({"range": "", "since": "2025-01-01T00:00"}, "at most 366 days"),
        (
            {"range": "", "since": "2026-11-20T00:00", "until": "2026-11-01T00:00"},
            "before its start",
        ),
        ({"range": "1y"}, "Select a valid choice"),
        ({"source": "abc"}, "Select a valid choice"),
    ],
)
def test_it_rejects_bad_filters_with_a_message(admin_client, data, params, message):
    with time_machine.travel(NOW, tick=False):
        resp = admin_client.get(reverse("overview"), params)
    assert resp.status_code == 200
    assert message in resp.content.decode()
    assert resp.context["panels"] == {}


def test_it_runs_a_constant_number_of_queries(
    admin_client, data, django_assert_num_queries
):
    """Session, user, two dropdowns, the categories, existence, six panels
    (sources' health is two), the Reporting data types present: 14, the
    same with 20 more sources and 500 more messages of new types and users."""
    url = reverse("overview")
    params = {"collector": data["prod"].pk, "category": "Security/*"}
    with time_machine.travel(NOW, tick=False):
        admin_client.get(url)  # the session learns that messages exist
        with django_assert_num_queries(14):
            admin_client.get(url, params)
        more = make_collector("More")
        for i in range(20):
            source = make_source(more, f"S{i}")
            LogMessage.objects.bulk_create(
                LogMessage(
                    source=source,
                    event_id=f"more-{i}-{n}",
                    raw="{}",
                    message_time=NOW - timedelta(hours=n),
                    source_name=source.name,
                    source_category="Security/More",
                    collector_name="More",
                    event_type=f"type-{n % 9}",
                    user_email=f"m{n}@example.org",
                    risk_level=n % 10,
                )
                for n in range(25)
            )
        with django_assert_num_queries(14):
            resp = admin_client.get(url, params)
    assert resp.status_code == 200


def test_it_shows_the_panels_with_separators(admin_client, data):
    LogMessage.objects.bulk_create(
        LogMessage(
            source=data["a"],
            event_id=f"bulk-{n}",
            raw="{}",
            message_time=NOW - timedelta(minutes=n + 1),
            source_name="KB4 A",
            collector_name="Production",
            event_type="phishing_click",
        )
        for n in range(1200)
    )
    with time_machine.travel(NOW, tick=False):
        body = admin_client.get(reverse("overview")).content.decode()
    total = len(window())
    assert total > 1000
    assert f'data-kpi="messages">{total:,}<' in body
    for heading in (
        "Events per day by event type",
        "Risk-level distribution",
        "Top 10 users by summed risk",
        "New event types",
        "Sources' health",
    ):
        assert heading in body
    assert "<script" not in body.split("</main>")[0].split("<main")[1]
    assert 'style="' not in body


def test_it_leads_the_menu_once_messages_exist(client, admin_user, data):
    client.force_login(admin_user)
    body = client.get(reverse("collection")).content.decode()
    nav = body.split('class="mainnav"')[1].split("</nav>")[0]
    assert nav.index(">Overview<") < nav.index(">Collection<")
    client.logout()
    resp = client.post(
        reverse("login"),
        {"username": "alice", "password": "correct horse battery staple"},
    )
    assert resp.status_code == 302 and resp["Location"] == reverse("overview")


def test_it_follows_collection_in_the_menu_without_messages(client, admin_user):
    resp = client.post(
        reverse("login"),
        {"username": "alice", "password": "correct horse battery staple"},
    )
    assert resp["Location"] == reverse("collection")
    body = client.get(reverse("overview")).content.decode()
    assert "No messages have been collected yet" in body
    nav = body.split('class="mainnav"')[1].split("</nav>")[0]
    assert nav.index(">Collection<") < nav.index(">Overview<")


def test_it_refuses_a_user_without_the_view_permission(client, user):
    client.force_login(user)
    assert client.get(reverse("overview")).status_code == 403


def test_it_shows_nothing_for_a_category_that_matches_none(admin_client, data):
    with time_machine.travel(NOW, tick=False):
        resp = admin_client.get(reverse("overview"), {"category": "Nope/*"})
    assert resp.status_code == 200
    panels = resp.context["panels"]
    assert panels["totals"]["messages"] == 0 and panels["new_types"]["rows"] == []

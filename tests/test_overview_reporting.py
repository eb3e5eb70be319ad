"""The Overview's KnowBe4 KMSAT Reporting panels: each aggregate against a
direct count over the latest version of each record on a known data set
(records with two and three versions), links to the messages behind each
figure, shown only with Reporting data, roles, and a constant query count."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine
from django.test import Client
from django.urls import reverse

from collectors import overview
from collectors.models import LogMessage
from tests.cast import (
    make_collector,
    make_messages,
    make_source,
    make_user,
)
from tests.cast import store_record as put

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)

pytestmark = pytest.mark.django_db


def iso(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z") if moment else None


def test_record(pst, name, started, ppp, *, delivered, clicked, entered, reported):
    return {
        "pst_id": pst,
        "name": name,
        "status": "Closed",
        "started_at": iso(started),
        "phish_prone_percentage": ppp,
        "delivered_count": delivered,
        "clicked_count": clicked,
        "data_entered_count": entered,
        "reported_count": reported,
    }


test_record.__test__ = False  # a record builder, not a test


def recipient(rid, pst, email, *, clicked=None, delivered=None):
    return {
        "recipient_id": rid,
        "pst_id": pst,
        "user": {"id": rid, "email": email},
        "delivered_at": iso(delivered),
        "clicked_at": iso(clicked),
    }


def enrollment(eid, email, campaign, status, done=None):
    return {
        "enrollment_id": eid,
        "user": {"email": email},
        "campaign_name": campaign,
        "status": status,
        "completion_date": iso(done),
    }


def user(uid, email, score):
    return {"id": uid, "email": email, "status": "active", "current_risk_score": score}


@pytest.fixture
def data():
    """One Reporting source and one event source. Records with several
    versions: test 2 (its counts grew), dave's test-1 recipient (delivered,
    then clicked), bob's enrollment (In Progress, then Passed), users alice
    (two scores) and dave (three). Test 0 started before the 30-day range."""
    prod = make_collector("Production")
    rep = make_source(prod, "KMSAT", category="Security/Reporting")
    events = make_source(prod, "Events", category="Security/KnowBe4")
    make_messages(events, 30, start=NOW - 3 * DAY)
    early, late = NOW - 20 * DAY, NOW - 2 * DAY
    t1, t2 = NOW - 15 * DAY, NOW - 6 * DAY
    put(
        rep,
        "phishing_test",
        test_record(
            9,
            "Old",
            NOW - 60 * DAY,
            50.0,
            delivered=5,
            clicked=5,
            entered=5,
            reported=0,
        ),
        NOW - 60 * DAY,
    )
    put(
        rep,
        "phishing_test",
        test_record(
            1, "Invoice", t1, 20.0, delivered=10, clicked=3, entered=1, reported=4
        ),
        t1,
    )
    put(
        rep,
        "phishing_test",
        test_record(
            2, "Parcel", t2, 10.0, delivered=10, clicked=1, entered=0, reported=1
        ),
        t2,
    )
    put(
        rep,
        "phishing_test",
        test_record(
            2, "Parcel", t2, 30.0, delivered=10, clicked=3, entered=2, reported=2
        ),
        late,
    )
    a, b, c, d = (f"{n}@example.org" for n in ("alice", "bob", "carol", "dave"))
    put(rep, "phishing_recipient", recipient(11, 1, a, clicked=t1 + DAY), t1)
    put(rep, "phishing_recipient", recipient(12, 1, b, clicked=t1 + DAY), t1)
    put(rep, "phishing_recipient", recipient(14, 1, d, delivered=t1), t1)
    put(
        rep,
        "phishing_recipient",
        recipient(14, 1, d, delivered=t1, clicked=t1 + 2 * DAY),
        late,
    )
    put(rep, "phishing_recipient", recipient(21, 2, a, clicked=t2 + DAY), late)
    put(rep, "phishing_recipient", recipient(23, 2, c, clicked=t2 + DAY), late)
    put(rep, "phishing_recipient", recipient(24, 2, d, clicked=t2 + DAY), late)
    put(rep, "training_enrollment", enrollment(1, a, "Wave 1", "Past Due"), late)
    put(rep, "training_enrollment", enrollment(2, b, "Wave 1", "In Progress"), early)
    put(
        rep,
        "training_enrollment",
        enrollment(2, b, "Wave 1", "Passed", done=late),
        late,
    )
    put(rep, "training_enrollment", enrollment(4, d, "Wave 1", "Not Started"), late)
    put(
        rep,
        "training_enrollment",
        enrollment(5, c, "Wave 2", "Passed", done=late),
        late,
    )
    put(rep, "user", user(1, a, 20), early)
    put(rep, "user", user(1, a, 35), late)
    put(rep, "user", user(2, b, 40), early)
    put(rep, "user", user(2, b, 30), late)
    put(rep, "user", user(4, d, 10), early)
    put(rep, "user", user(4, d, 12), NOW - 10 * DAY)
    put(rep, "user", user(4, d, 50.5), late)
    put(rep, "user", user(3, c, 70), late)
    return {"rep": rep, "events": events, "prod": prod}


def latest(data_type: str, since: datetime = NOW - 30 * DAY) -> list[dict]:
    """The direct count's input: every version in range, read in Python, the
    highest id kept per (source, data type, record id)."""
    newest: dict[tuple, LogMessage] = {}
    for m in LogMessage.objects.filter(data_type=data_type).order_by("pk"):
        if m.message_time >= since:
            newest[(m.source_id, m.data_type, m.event_id)] = m
    return [json.loads(m.raw) for m in newest.values()]


def first(data_type: str, since: datetime = NOW - 30 * DAY) -> dict[str, dict]:
    oldest: dict[tuple, LogMessage] = {}
    for m in LogMessage.objects.filter(data_type=data_type).order_by("-pk"):
        if m.message_time >= since:
            oldest[(m.source_id, m.data_type, m.event_id)] = m
    return {m.event_id: json.loads(m.raw) for m in oldest.values()}


def view(**params) -> overview.OverviewFilter:
    return overview.OverviewFilter.from_params(params, now=NOW)


def test_it_keeps_reporting_versions_out_of_the_user_event_panels(admin_client, data):
    events = LogMessage.objects.filter(
        data_type="events", message_time__gte=NOW - 30 * DAY
    )
    assert LogMessage.objects.exclude(data_type="events").exists()
    v = view()
    assert overview.totals(v)["messages"] == events.count() == 30
    per_day = overview.events_per_day(v)
    assert sum(sum(d["counts"]) for d in per_day["days"]) == 30
    assert sum(r["count"] for r in overview.risk_distribution(v)) == 30
    kinds = {r["event_type"] for r in overview.new_event_types(v)["rows"]}
    assert kinds <= set(events.values_list("event_type", flat=True))
    users = {r["user_email"] for r in overview.top_users(v)}
    assert users <= set(events.values_list("user_email", flat=True))
    # The headline figure's link lists exactly those events.
    query = parse_qs(urlsplit(v.events_url()).query)
    assert query["data_type"] == ["events"]


def test_it_counts_each_phishing_test_from_its_latest_version(data):
    tests = overview.phishing(view())["tests"]
    expected = sorted(latest("phishing_test"), key=lambda r: r["started_at"])
    assert [t["pst_id"] for t in tests] == [r["pst_id"] for r in expected] == [1, 2]
    for t, r in zip(tests, expected, strict=True):
        assert t["ppp"] == r["phish_prone_percentage"]
        assert t["clicked"] == r["clicked_count"]
        assert t["data_entered"] == r["data_entered_count"]
        assert t["reported"] == r["reported_count"]
    assert [t["ppp"] for t in tests] == [20.0, 30.0]  # test 2's newer version
    assert [(t["clicked"], t["data_entered"], t["reported"]) for t in tests] == [
        (3, 1, 4),
        (3, 2, 2),
    ]


def test_it_gives_the_report_rate_over_the_tests_in_range(data):
    panel = overview.phishing(view())
    rows = latest("phishing_test")
    reported = sum(r["reported_count"] for r in rows)
    delivered = sum(r["delivered_count"] for r in rows)
    assert panel["report_rate"] == round(100 * reported / delivered, 1) == 30.0
    assert [t["rate"] for t in panel["tests"]] == [40.0, 20.0]
    # the old test joins with a longer range
    wide = overview.phishing(view(range="", since="2026-09-01T00:00"))
    assert [t["pst_id"] for t in wide["tests"]] == [9, 1, 2]


def test_it_lists_repeat_clickers_from_the_latest_recipient_versions(data):
    rows = overview.people(view())["repeat"]
    tests: dict[str, set] = {}
    for r in latest("phishing_recipient"):
        if r["clicked_at"]:
            tests.setdefault(r["user"]["email"], set()).add(r["pst_id"])
    direct = sorted(e for e, ids in tests.items() if len(ids) >= 2)
    assert sorted(r["user_email"] for r in rows) == direct
    # dave clicked test 1 only in his recipient's second version
    assert direct == ["alice@example.org", "dave@example.org"]
    assert {r["tests"] for r in rows} == {2}


def test_it_lists_clickers_with_training_not_completed(data):
    rows = overview.people(view())["untrained"]
    clicked = {
        r["user"]["email"] for r in latest("phishing_recipient") if r["clicked_at"]
    }
    open_ = {
        r["user"]["email"]
        for r in latest("training_enrollment")
        if r["status"] not in ("Passed", "Completed")
    }
    assert sorted(r["user_email"] for r in rows) == sorted(clicked & open_)
    # bob's enrollment is Passed in its newest version; carol passed hers
    assert [(r["user_email"], r["incomplete"], r["past_due"]) for r in rows] == [
        ("alice@example.org", 0, 1),
        ("dave@example.org", 1, 0),
    ]


def test_it_ranks_risk_drift_between_first_and_latest_versions(data):
    rows = overview.risk_drift(view())["rows"]
    olds, news = first("user"), latest("user")
    direct = []
    for r in news:
        before = olds[str(r["id"])]["current_risk_score"]
        if r["current_risk_score"] > before:
            direct.append((r["email"], r["current_risk_score"] - before))
    direct.sort(key=lambda x: -x[1])
    assert [(r["user_email"], r["rise"]) for r in rows] == direct
    assert direct == [("dave@example.org", 40.5), ("alice@example.org", 15)]
    # from ten days back, dave's first version in range is 12
    since = (NOW - 10 * DAY - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M")
    narrow = overview.risk_drift(view(range="", since=since))["rows"]
    assert [(r["user_email"], r["from"]) for r in narrow] == [("dave@example.org", 12)]


def test_it_counts_training_completion_and_past_due_by_campaign(data):
    rows = overview.training(view())
    direct: dict[str, list[int]] = {}
    for r in latest("training_enrollment"):
        row = direct.setdefault(r["campaign_name"], [0, 0, 0])
        row[0] += 1
        row[1] += r["status"] == "Passed"
        row[2] += r["status"] == "Past Due"
    got = {r["campaign"]: [r["enrolled"], r["completed"], r["past_due"]] for r in rows}
    assert got == direct == {"Wave 1": [3, 1, 1], "Wave 2": [1, 1, 0]}
    assert [r["completion"] for r in rows] == [33.3, 100.0]


def test_it_links_each_figure_to_the_messages_behind_it(admin_client, data):
    """Following a link on the Messages page lists exactly the versions of
    that test, user or campaign (and no other test whose id begins alike)."""
    v = view()
    panel = overview.phishing(v)
    with time_machine.travel(NOW, tick=False):
        for t in panel["tests"]:
            ids = _listed(admin_client, t["recipients_url"])
            want = LogMessage.objects.filter(
                data_type="phishing_recipient",
                message_time__gte=NOW - 30 * DAY,
                raw__contains=f'"pst_id":{t["pst_id"]},',
            )
            assert ids == {m.event_id for m in want}
        assert _listed(admin_client, panel["tests"][1]["url"]) == {"2"}
        drift = overview.risk_drift(v)["rows"][0]
        assert _listed(admin_client, drift["url"]) == {"4"}
        wave2 = overview.training(v)[1]
        assert _listed(admin_client, wave2["url"]) == {"5"}
        # a repeat clicker's link: her recipient versions with a click
        alice = overview.people(v)["repeat"][0]
        assert alice["user_email"] == "alice@example.org"
        assert _listed(admin_client, alice["url"]) == {"11", "21"}
    query = parse_qs(urlsplit(alice["url"]).query)
    assert query["user_email"] == ["alice@example.org"]


@pytest.fixture
def callbacks(data):
    """A callback test (KnowBe4's `campaign_type=callback`) in range beside
    the email tests: carol clicks in it (her second test), erin too (her
    first, and her training is not started); frank does not click."""
    rep = data["rep"]
    t3 = NOW - 4 * DAY
    put(
        rep,
        "callback_test",
        test_record(
            31, "Help desk", t3, 40.0, delivered=5, clicked=2, entered=1, reported=1
        ),
        t3,
    )
    c, e, f = (f"{n}@example.org" for n in ("carol", "erin", "frank"))
    put(rep, "callback_recipient", recipient(41, 31, c, clicked=t3 + DAY), NOW - DAY)
    put(rep, "callback_recipient", recipient(42, 31, e, clicked=t3 + DAY), NOW - DAY)
    put(rep, "callback_recipient", recipient(43, 31, f, delivered=t3), NOW - DAY)
    put(rep, "training_enrollment", enrollment(6, e, "Wave 2", "Not Started"), t3)
    return data


def test_it_counts_callback_tests_beside_email_tests(admin_client, callbacks):
    v = view()
    panel = overview.phishing(v)
    kinds = [(t["data_type"], t["pst_id"], t["callback"]) for t in panel["tests"]]
    assert kinds == [
        ("phishing_test", 1, False),
        ("phishing_test", 2, False),
        ("callback_test", 31, True),
    ]
    rows = latest("phishing_test") + latest("callback_test")
    reported = sum(r["reported_count"] for r in rows)
    delivered = sum(r["delivered_count"] for r in rows)
    assert panel["report_rate"] == round(100 * reported / delivered, 1) == 28.0
    people = overview.people(v)
    assert [(r["user_email"], r["tests"]) for r in people["repeat"]] == [
        ("alice@example.org", 2),
        ("carol@example.org", 2),
        ("dave@example.org", 2),
    ]
    untrained = [r["user_email"] for r in people["untrained"]]
    assert untrained == ["alice@example.org", "dave@example.org", "erin@example.org"]
    with time_machine.travel(NOW, tick=False):
        callback = panel["tests"][2]
        assert _listed(admin_client, callback["url"]) == {"31"}
        assert _listed(admin_client, callback["recipients_url"]) == {"41", "42", "43"}
        # the report rate's link: every test's versions in range, both kinds
        assert _listed(admin_client, panel["url"]) == {"1", "2", "31"}
        carol = people["repeat"][1]
        assert _listed(admin_client, carol["url"]) == {"23", "41"}
        page = admin_client.get(reverse("overview")).content.decode()
    assert page.count('class="ppp-point"') == 3
    assert 'Help desk</a> <span class="muted">(callback)</span>' in page


def _listed(client, url: str) -> set[str]:
    """The record ids of the rows the Messages page lists for `url`."""
    resp = client.get(url)
    assert resp.status_code == 200
    return {m.event_id for m in resp.context["page"].rows}


def test_it_draws_the_reporting_panels_only_with_reporting_data(admin_client, data):
    with time_machine.travel(NOW, tick=False):
        page = admin_client.get(reverse("overview")).content.decode()
        for part in (
            "panel-phishing",
            "panel-repeat-clickers",
            "panel-clicked-untrained",
            "panel-risk-drift",
            "panel-training",
            'class="ppp-chart"',
        ):
            assert part in page
        assert page.count('class="ppp-point"') == 2
        only_events = admin_client.get(
            reverse("overview"), {"source": data["events"].pk}
        ).content.decode()
    assert "panel-phishing" not in only_events
    assert "KMSAT Reporting" not in only_events
    assert "panel-events-per-day" in only_events


def test_it_shows_only_the_panels_whose_data_types_exist(admin_client, data):
    LogMessage.objects.exclude(data_type__in=["events", "training_enrollment"]).delete()
    with time_machine.travel(NOW, tick=False):
        page = admin_client.get(reverse("overview")).content.decode()
    assert "panel-training" in page
    assert "panel-phishing" not in page
    assert "panel-risk-drift" not in page


def test_it_runs_a_constant_number_of_queries(
    admin_client, data, django_assert_num_queries
):
    """The 12 of the unfiltered events page, the Reporting data types present (1) and
    one query per Reporting aggregate (5): 18, the same with ten times the
    recipients, users and enrollments."""
    url = reverse("overview")
    with time_machine.travel(NOW, tick=False):
        admin_client.get(url)
        with django_assert_num_queries(18):
            admin_client.get(url)
        rep = data["rep"]
        for i in range(40):
            email = f"extra{i}@example.org"
            put(
                rep,
                "phishing_recipient",
                recipient(100 + i, 1, email, clicked=NOW - 14 * DAY),
                NOW - 14 * DAY,
            )
            put(
                rep,
                "phishing_recipient",
                recipient(200 + i, 2, email, clicked=NOW - 5 * DAY),
                NOW - 5 * DAY,
            )
            put(
                rep,
                "training_enrollment",
                enrollment(100 + i, email, f"Wave {i % 4}", "Past Due"),
                NOW - DAY,
            )
            put(rep, "user", user(100 + i, email, i), NOW - 9 * DAY)
            put(rep, "user", user(100 + i, email, i + 5), NOW - DAY)
        with django_assert_num_queries(18):
            resp = admin_client.get(url)
    assert resp.status_code == 200
    assert len(resp.context["panels"]["people"]["repeat"]) == overview.REPORTING_ROWS


@pytest.mark.parametrize(
    ("role", "status"),
    [("Viewer", 200), ("Analyst", 200), ("Collector manager", 200), (None, 403)],
)
def test_it_needs_view_collectors(data, role, status):
    client = Client()
    client.force_login(make_user(role))
    with time_machine.travel(NOW, tick=False):
        resp = client.get(reverse("overview"))
    assert resp.status_code == status
    assert ("panel-phishing" in resp.content.decode()) is (status == 200)


def test_it_sends_anonymous_visitors_to_sign_in(client, data):
    resp = client.get(reverse("overview"))
    assert resp.status_code == 302
    assert "login" in resp["Location"]

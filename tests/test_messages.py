"""Message search: category wildcards, filters, keyset pages and the chart."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from collectors import search as search_module
from collectors.models import LogMessage
from collectors.search import Cursor, MessageSearch, category_q, known_categories
from tests.cast import make_collector, make_source

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def msg(source, n: int, *, category=None, when=None, **kw) -> LogMessage:
    when = when or NOW - timedelta(hours=n + 1)
    raw = {
        "id": f"evt-{n}",
        "event_type": {"name": kw.get("event_type", "phish_click")},
        "user": {"email": kw.get("user_email", f"user{n}@example.org")},
        "description": kw.pop("description", f"event number {n}"),
    }
    kw.setdefault("event_type", "phish_click")
    kw.setdefault("user_email", f"user{n}@example.org")
    return LogMessage.objects.create(
        source=source,
        event_id=f"evt-{n}",
        raw=json.dumps(raw),
        message_time=when,
        source_name=source.name,
        source_category=source.category if category is None else category,
        collector_name=source.collector.name,
        **kw,
    )


def search(params) -> list[str]:
    return [m.event_id for m in MessageSearch(params, now=NOW).queryset()]


@pytest.fixture
def corpus(collector, source):
    other = make_source(make_collector("Branch"), "Branch events", category="Ops/x")
    return {
        "a": msg(source, 1, category="Security/KnowBe4"),
        "b": msg(source, 2, category="Security/Phish", risk_level=7),
        "c": msg(source, 3, category="SecurityX/KnowBe4"),
        "d": msg(other, 4, category="Ops/KnowBe4", event_type="training_done"),
        "e": msg(other, 5, category="Security", when=NOW - timedelta(days=9)),
        "f": msg(
            source, 6, category="Prod/Security/KnowBe4", user_email="CEO@Corp.com"
        ),
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    "pattern, expected",
    [
        ("Security/*", ["evt-1", "evt-2"]),
        ("Security*", ["evt-1", "evt-2", "evt-3", "evt-5"]),
        ("Security/KnowBe4", ["evt-1"]),
        ("*/KnowBe4", ["evt-1", "evt-3", "evt-4", "evt-6"]),
        ("Prod/*/KnowBe4", ["evt-6"]),
        ("*", ["evt-1", "evt-2", "evt-3", "evt-4", "evt-6", "evt-5"]),
        ("security/*", ["evt-1", "evt-2"]),
        ("SECURITY/knowbe4", ["evt-1"]),
        ("Nothing/*", []),
    ],
)
def test_it_matches_categories_with_wildcards(corpus, pattern, expected):
    assert search({"category": pattern}) == expected


@pytest.mark.django_db
def test_it_turns_a_trailing_wildcard_into_an_index_friendly_filter(corpus):
    qs = LogMessage.objects.filter(category_q("Security/*"))
    sql = str(qs.query)
    assert "REGEXP" not in sql
    assert " IN (" in sql and "LIKE" not in sql
    if connection.vendor == "sqlite":
        week = qs.filter(message_time__gte=NOW - timedelta(days=7))
        ids_sql, params = week.values_list("pk", flat=True).query.sql_with_params()
        with connection.cursor() as cur:
            cur.execute("EXPLAIN QUERY PLAN " + ids_sql, params)
            plan = " ".join(str(row) for row in cur.fetchall())
        assert "msg_category_time (source_category=? AND message_time>?)" in plan
    assert set(qs.values_list("event_id", flat=True)) == {"evt-1", "evt-2"}


@pytest.mark.django_db
def test_it_lists_the_distinct_categories_by_a_loose_index_scan(corpus):
    assert known_categories() == sorted(
        set(LogMessage.objects.values_list("source_category", flat=True))
    )


@pytest.mark.django_db
def test_it_lets_the_database_match_for_very_many_categories(
    collector, source, monkeypatch
):
    monkeypatch.setattr(search_module, "MAX_EXPANDED_CATEGORIES", 1)
    for n, category in enumerate(["Security/a", "Security/b", "Security/c"]):
        msg(source, n, category=category)
    assert " IN (" not in str(LogMessage.objects.filter(category_q("Security/*")).query)
    assert search({"category": "Security/*"}) == ["evt-0", "evt-1", "evt-2"]
    assert search({"category": "security/B"}) == ["evt-1"]
    assert search({"category": "*/c"}) == ["evt-2"]


@pytest.mark.django_db
def test_it_escapes_regex_characters_in_patterns(collector, source):
    msg(source, 1, category="a.b/c")
    msg(source, 2, category="axb/c")
    assert search({"category": "a.b*"}) == ["evt-1"]
    assert search({"category": "*.b/c"}) == ["evt-1"]


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_it_filters_by_every_field(corpus, source, collector):
    assert search({"source": source.pk}) == ["evt-1", "evt-2", "evt-3", "evt-6"]
    assert search({"collector": collector.pk}) == ["evt-1", "evt-2", "evt-3", "evt-6"]
    assert search({"event_type": "training_done"}) == ["evt-4"]
    assert search({"risk_level": "7"}) == ["evt-2"]
    assert search({"user_email": "ceo@corp.com"}) == ["evt-6"]
    assert search({"q": "NUMBER 3"}) == ["evt-3"]
    assert search({"range": "7d"}) == ["evt-1", "evt-2", "evt-3", "evt-4", "evt-6"]
    assert search({"since": "2026-11-27T08:30", "until": "2026-11-27T10:30"}) == [
        "evt-1",
        "evt-2",
    ]
    assert search({"category": "Security/*", "risk_level": "7"}) == ["evt-2"]


@pytest.mark.django_db
def test_it_shows_nothing_for_invalid_filters(admin_client, corpus):
    resp = admin_client.get(
        reverse("messages"),
        {"risk_level": "99", "since": "2026-11-27T10:00", "until": "2026-11-26T10:00"},
    )
    html = resp.content.decode()
    assert resp.status_code == 200
    assert "Ensure this value is less than or equal to 10" in html
    assert "The end of the range is before its start." in html
    assert resp.context["page"].rows == []


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_it_pages_newest_first_by_keyset(admin_client, source):
    same = NOW - timedelta(hours=1)
    for n in range(120):
        msg(source, n, when=same if n < 10 else NOW - timedelta(minutes=n + 60))
    first = admin_client.get(reverse("messages"))
    page1 = first.context["page"]
    rows = [m.pk for m in page1.rows]
    assert len(rows) == 50 and page1.newer is None and page1.older
    times = [(m.message_time, m.pk) for m in page1.rows]
    assert times == sorted(times, reverse=True)
    second = admin_client.get(reverse("messages"), {"after": page1.older.encode()})
    page2 = second.context["page"]
    assert not set(rows) & {m.pk for m in page2.rows}
    third = admin_client.get(reverse("messages"), {"after": page2.older.encode()})
    page3 = third.context["page"]
    assert len(page3.rows) == 20 and page3.older is None
    seen = rows + [m.pk for m in page2.rows] + [m.pk for m in page3.rows]
    assert sorted(seen) == sorted(LogMessage.objects.values_list("pk", flat=True))
    back = admin_client.get(reverse("messages"), {"before": page2.newer.encode()})
    assert [m.pk for m in back.context["page"].rows] == rows


@pytest.mark.django_db
def test_it_never_counts_all_messages_for_a_page(admin_client, source):
    for n in range(5):
        msg(source, n)
    with CaptureQueriesContext(connection) as ctx:
        admin_client.get(reverse("messages"), {"category": "Security/*"})
    counts = [q["sql"] for q in ctx.captured_queries if "COUNT(" in q["sql"].upper()]
    # only the chart's per-day GROUP BY, bounded by its time window
    assert len(counts) == 1 and "GROUP BY" in counts[0].upper()
    assert '"message_time" >=' in counts[0]


@pytest.mark.django_db
def test_it_ignores_a_malformed_cursor(admin_client, source):
    msg(source, 1)
    assert Cursor.decode("garbage") is None
    resp = admin_client.get(reverse("messages"), {"after": "not_a_cursor"})
    assert resp.status_code == 200 and len(resp.context["page"].rows) == 1


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_it_charts_messages_per_day_for_the_filter(admin_client, source):
    for n in range(3):
        msg(source, n, when=NOW - timedelta(days=1, hours=n))
    msg(source, 10, when=NOW - timedelta(days=3))
    msg(source, 11, when=NOW - timedelta(days=3), category="Other")
    resp = admin_client.get(
        reverse("messages"), {"category": "Security/*", "range": "7d"}
    )
    per_day = dict(resp.context["per_day"])
    assert len(per_day) == 8  # 2026-11-20 .. 2026-11-27
    assert per_day[(NOW - timedelta(days=1)).date()] == 3
    assert per_day[(NOW - timedelta(days=3)).date()] == 1
    assert sum(per_day.values()) == 4
    html = resp.content.decode()
    assert '<svg class="day-chart"' in html
    assert 'data-day="2026-11-26" data-count="3"' in html
    assert "4 messages from 2026-11-20 to 2026-11-27" in html
    assert '<script src="http' not in html


@pytest.mark.django_db
def test_it_shows_metadata_columns_and_links_the_exports(admin_client, corpus):
    resp = admin_client.get(reverse("messages"), {"category": "Security/*"})
    html = resp.content.decode()
    assert "Security/Phish" in html and "Production" in html
    assert reverse("messages-export", args=["csv"]) + "?category=Security%2F%2A" in html
    assert 'aria-current="page">Messages' in html


@pytest.mark.django_db
def test_it_escapes_names_in_the_resource_dropdowns(admin_client, collector):
    make_source(collector, '<script>alert("x")</script>')
    html = admin_client.get(reverse("messages")).content.decode()
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html


@pytest.mark.django_db
def test_it_keeps_the_chosen_source_selected(admin_client, source):
    html = admin_client.get(reverse("messages"), {"source": source.pk}).content
    assert f'<option value="{source.pk}" selected>'.encode() in html
    assert b'<select name="source" id="id_source">' in html


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_it_runs_the_same_queries_however_many_messages_match(
    admin_client, collector, source, django_assert_num_queries
):
    url = reverse("messages") + "?category=Security/*&range=7d"
    msg(source, 1)
    admin_client.get(url)
    with CaptureQueriesContext(connection) as few:
        admin_client.get(url)
    for n in range(2, 120):
        msg(source, n, when=NOW - timedelta(minutes=n))
    with django_assert_num_queries(len(few.captured_queries)):
        response = admin_client.get(url)
    assert len(response.context["page"].rows) == 50

"""Messages page benchmark: 1,000,000 collected messages on a SQLite file under
/tmp (the issue's section 6: first page filtered by category and the last 7
days in at most 300 ms median, via indexes).

    .venv/bin/python bench/bench_messages.py [--runs 20] [--rebuild]

Prints the queries and the median / p90 server time of the messages page for
several filters, the EXPLAIN QUERY PLAN of the page and chart queries, and
the throughput of the streamed CSV export. Data are built once (raw
executemany in transactions of 100,000 rows) and reused; the clock is moved
to the time the data were built, so "the last 7 days" always holds the same
rows.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_collection_page import (  # noqa: E402
    BENCH_DIR,
    measure,
    report,
    setup_django,
    signed_in_client,
    stamp,
)

MESSAGES = 1_000_000
DAYS = 365
BATCH = 100_000
CATEGORIES = [  # (category, share of messages)
    ("Security/KnowBe4", 0.30),
    ("Security/Phishing", 0.15),
    ("Security/Training", 0.10),
    ("SecurityOps/KnowBe4", 0.05),
    ("Prod/Security/KnowBe4", 0.10),
    ("IT/KnowBe4", 0.15),
    ("Compliance/Audit", 0.15),
]
EVENT_TYPES = ["phish_click", "training_completed", "password_reuse", "mfa_disabled"]


def populate_messages() -> datetime:
    """1,000,000 messages over a year, once; returns the build time ("now")."""
    from django.db import connection, transaction

    from collectors import crypto
    from collectors.models import HostedCollector, LogMessage, Source

    latest = LogMessage.objects.order_by("-message_time").first()
    if latest is not None and LogMessage.objects.count() >= MESSAGES:
        return latest.message_time + timedelta(seconds=1)
    print("populating 1,000,000 messages (about a minute) ...", flush=True)
    now = datetime.now(UTC).replace(microsecond=0)
    rng = random.Random(7)
    token = crypto.encrypt("kb4-bench-key-0000000000-abcd")
    sources = []
    for i, (category, _) in enumerate(CATEGORIES):
        collector = HostedCollector.objects.create(name=f"Collector {i}")
        sources.append(
            Source.objects.create(
                collector=collector,
                name=f"KnowBe4 {i}",
                category=category,
                base_url_key="us",
                api_key_encrypted=token,
                api_key_hint="abcd",
            )
        )
    weights = [share for _, share in CATEGORIES]
    table = LogMessage._meta.db_table
    sql = (
        f"INSERT INTO {table} (source_id, event_id, raw, message_time, "  # noqa: S608
        "receipt_time, source_name, source_category, collector_name, fields, "
        "event_type, risk_level, user_email) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
    )
    span = DAYS * 86400
    for start in range(0, MESSAGES, BATCH):
        rows = []
        for _ in range(BATCH):
            source = rng.choices(sources, weights)[0]
            when = now - timedelta(seconds=rng.randrange(span))
            event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            email = f"user{rng.randrange(5000)}@example.org"
            event_type = rng.choice(EVENT_TYPES)
            risk = rng.randint(-10, 10)
            raw = json.dumps(
                {
                    "id": event_id,
                    "account_id": 52306,
                    "user": {"email": email, "id": rng.randrange(10**8)},
                    "description": "Benchmark event",
                    "occurred_date": when.isoformat().replace("+00:00", "Z"),
                    "risk": {"level": risk, "decay_mode": 0, "expire_date": None},
                    "event_type": {"id": 1, "name": event_type},
                }
            )
            rows.append(
                (
                    source.pk,
                    event_id,
                    raw,
                    stamp(when),
                    stamp(when + timedelta(days=1)),
                    source.name,
                    source.category,
                    source.collector.name,
                    "{}",
                    event_type,
                    risk,
                    email,
                )
            )
        with transaction.atomic(), connection.cursor() as cur:
            cur.executemany(sql, rows)
        print(f"  {start + BATCH:,} rows", flush=True)
    return now


def without_statistics() -> None:
    """Drop what ANALYZE gathered, if a file built before holds any.

    The application never runs ANALYZE, so a deployment's queries are planned
    without statistics: measured with them, the benchmark would time plans
    no user gets (with them SQLite prefers `msg_type_time` over the covering
    `msg_overview` for the Overview and reads 10x more).
    """
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'")
        if cur.fetchone():
            cur.execute("DELETE FROM sqlite_stat1")
            cur.execute("ANALYZE sqlite_schema")  # reload: no statistics now


def explain(sql: str, params) -> list[str]:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("EXPLAIN QUERY PLAN " + sql, params)
        return [row[-1] for row in cur.fetchall()]


def show_plans(now: datetime) -> None:
    """The plans of the page query and of the chart query for the target filter."""
    from django.db.models import Q

    from collectors.message_stats import utc_day
    from collectors.search import Cursor, MessageSearch

    search = MessageSearch({"category": "Security/*", "range": "7d"}, now=now)
    page_qs = search.queryset().values_list("pk", flat=True)[:51]
    page_sql, page_params = page_qs.query.sql_with_params()
    from django.db.models import Count

    from collectors.models import LogMessage

    first, last = search.chart_window()
    chart_qs = (
        LogMessage.objects.filter(search.filters())
        .filter(message_time__gte=datetime.combine(first, datetime.min.time(), UTC))
        .annotate(day=utc_day())
        .values("day")
        .annotate(n=Count("id"))
        .order_by()
    )
    chart_sql, chart_params = chart_qs.query.sql_with_params()
    # A keyset page further down: the same query below a cursor.
    row = search.queryset().filter(message_time__lt=now - timedelta(days=3)).first()
    cursor = Cursor(row.message_time, row.pk)
    next_qs = search.queryset().filter(
        Q(message_time__lt=cursor.time) | Q(message_time=cursor.time, pk__lt=cursor.pk)
    )
    next_sql, next_params = next_qs.values_list("pk", flat=True)[
        :51
    ].query.sql_with_params()
    for label, sql, params in (
        ("page ids (then 50 rows by id)", page_sql, page_params),
        ("chart query", chart_sql, chart_params),
        ("keyset page further down (ids)", next_sql, next_params),
    ):
        print(f"EXPLAIN QUERY PLAN, {label}:")
        print(f"  {sql[:400]}")
        for line in explain(sql, params):
            print(f"    {line}")


def export_rate(client, url: str) -> tuple[int, float]:
    """Rows and seconds of one streamed CSV export."""
    start = time.perf_counter()
    resp = client.get(url)
    lines = sum(chunk.count(b"\n") for chunk in resp.streaming_content)
    return lines - 1, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    if args.rebuild:
        for suffix in ("", "-wal", "-shm"):
            (BENCH_DIR / f"messages.sqlite3{suffix}").unlink(missing_ok=True)
    setup_django("messages.sqlite3")
    now = populate_messages()
    without_statistics()
    import time_machine
    from django.urls import reverse

    from collectors.models import LogMessage
    from collectors.search import MessageSearch

    url = reverse("messages")
    export = reverse("messages-export", args=["csv"])
    with time_machine.travel(now, tick=False):
        client = signed_in_client()
        total = LogMessage.objects.count()
        print(f"SQLite {BENCH_DIR}/messages.sqlite3: {total:,} messages, now={now}")
        show_plans(now)
        checks = [
            ("Security/* + last 7 days (target)", "?category=Security/*&range=7d", 300),
            ("Security/* + last 7 days, page 2", None, 300),
            ("no filter (last 30 days chart)", "", None),
            ("Security/* (no time range)", "?category=Security/*", None),
            ("exact category + 24 hours", "?category=IT/KnowBe4&range=24h", None),
            ("*/KnowBe4 + 7 days (regex)", "?category=*/KnowBe4&range=7d", None),
            ("user email + 30 days", "?user_email=user42@example.org&range=30d", None),
            ("free text + 7 days (LIKE scan)", "?q=user4242&range=7d", None),
        ]
        ok = True
        for label, query, max_ms in checks:
            if query is None:  # the page after the first, by its keyset cursor
                params = {"category": "Security/*", "range": "7d"}
                first = MessageSearch(params, now=now).page(None, None)
                cursor = quote(first.older.encode())
                query = f"?category=Security/*&range=7d&after={cursor}"
            m = measure(client, url + query, args.runs)
            # session, user, 2 dropdowns, [prefix scan], ids, rows, chart
            ok &= report(label, m, max_queries=8, max_ms=max_ms)
        rows, seconds = export_rate(client, export + "?category=Security/*&range=7d")
        print(
            f"CSV export, Security/* + 7 days: {rows:,} rows in {seconds:.2f} s "
            f"({rows / seconds:,.0f} rows/s, streamed)"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Overview dashboard benchmark: 1,000,000 collected messages on a SQLite file
under /tmp (the messages benchmark's data set: a year, 7 categories, 5,000
users, risk levels -10..10).

    .venv/bin/python bench/bench_overview.py [--runs 10] [--rebuild]
    .venv/bin/python bench/bench_overview.py --reporting-users 10000

The second form measures the KMSAT Reporting panels alone, on a file of its
own: an account of N users, 4 phishing tests with every user a recipient
(one recipient in four stored in two versions), every user in two versions
(risk scores) and in 2 training campaigns: about 9 N messages.

Prints, for several time ranges and scopes, the queries and the median / p90
server time of the whole Overview page (Django's test client: middleware,
view, every aggregate, the template), then the time of each aggregate alone
and the query plan of the "new event types" query. The data are built once
by bench_messages.populate_messages and reused; the clock is moved to the
time they were built, so "the last 30 days" always holds the same rows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_collection_page import (  # noqa: E402
    BENCH_DIR,
    measure,
    report,
    setup_django,
    signed_in_client,
)
from bench_messages import (  # noqa: E402
    explain,
    populate_messages,
    without_statistics,
)

DB_NAME = "messages.sqlite3"


def time_panels(view, runs: int) -> list[tuple[str, float]]:
    """Median milliseconds of each panel function alone."""
    from collectors import overview

    out = []
    for name, panel in overview.PANELS:
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            panel(view)
            times.append((time.perf_counter() - start) * 1000)
        out.append((name, statistics.median(times)))
    return out


def populate_reporting(users: int):
    """The Reporting data set of the module docstring; returns its `now`."""
    from datetime import UTC, datetime

    from collectors.knowbe4 import records
    from collectors.models import HostedCollector, LogMessage, Source

    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    if LogMessage.objects.exists():
        return now
    collector = HostedCollector.objects.create(name="Bench")
    source = Source.objects.create(collector=collector, name="KMSAT", category="R")
    rows: list = []

    def put(data_type: str, record: dict, seen: datetime) -> None:
        v = records.version(data_type, record)
        rows.append(
            LogMessage(
                source=source,
                event_id=v.record_id,
                content_hash=v.content_hash,
                data_type=data_type,
                raw=v.raw,
                message_time=v.time or seen,
                receipt_time=seen,
                source_name=source.name,
                collector_name=collector.name,
                user_email=v.user_email,
                event_type=v.event_type,
            )
        )
        if len(rows) >= 5000:
            LogMessage.objects.bulk_create(rows)
            rows.clear()

    day = timedelta(days=1)
    for t in range(4):
        start = now - (25 - 6 * t) * day
        put(
            "phishing_test",
            {
                "pst_id": t,
                "name": f"Test {t}",
                "started_at": start.isoformat(),
                "phish_prone_percentage": 10.0 + t,
                "delivered_count": users,
                "clicked_count": users // 7,
                "data_entered_count": users // 20,
                "reported_count": users // 5,
            },
            start,
        )
        for i in range(users):
            user = {"email": f"user{i}@example.org"}
            rec = {
                "recipient_id": t * users + i,
                "pst_id": t,
                "user": user,
            }
            if i % 4 == 0:
                put("phishing_recipient", rec, start)
            rec["delivered_at"] = start.isoformat()
            if (i + t) % 7 == 0:
                rec["clicked_at"] = (start + day).isoformat()
            put("phishing_recipient", rec, start + day)
    for i in range(users):
        email = f"user{i}@example.org"
        for k in range(2):
            put(
                "user",
                {
                    "id": i,
                    "email": email,
                    "current_risk_score": 20 + k * (i % 30 - 10.5),
                },
                now - (20 - 15 * k) * day,
            )
            status = ["Passed", "Past Due", "In Progress", "Not Started"][(i + k) % 4]
            put(
                "training_enrollment",
                {
                    "enrollment_id": k * users + i,
                    "user": {"email": email},
                    "campaign_name": f"Wave {k}",
                    "status": status,
                },
                now - 3 * day,
            )
    LogMessage.objects.bulk_create(rows)
    return now


def bench_reporting(users: int, runs: int) -> int:
    """The page and each Reporting panel over `populate_reporting(users)`."""
    setup_django(f"overview-reporting-{users}.sqlite3")
    now = populate_reporting(users)
    import time_machine
    from django.http import QueryDict
    from django.urls import reverse

    from collectors import overview
    from collectors.models import LogMessage

    with time_machine.travel(now, tick=False):
        client = signed_in_client()
        url = reverse("overview")
        client.get(url)
        print(f"{LogMessage.objects.count():,} Reporting messages, {users:,} users")
        ok = report(
            "Overview, last 30 days",
            measure(client, url, runs),
            max_queries=18,
            max_ms=None,
        )
        view = overview.OverviewFilter.from_params(QueryDict(""), now=now)
        view.reporting_types()
        for name, ms in time_panels(view, max(3, runs // 2)):
            print(f"  {name:<16} {ms:8.1f} ms")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--reporting-users", type=int, default=0)
    args = parser.parse_args()
    if args.reporting_users:
        return bench_reporting(args.reporting_users, args.runs)
    if args.rebuild:
        for suffix in ("", "-wal", "-shm"):
            (BENCH_DIR / f"{DB_NAME}{suffix}").unlink(missing_ok=True)
    setup_django(DB_NAME)
    now = populate_messages()
    without_statistics()
    import time_machine
    from django.http import QueryDict
    from django.urls import reverse

    from collectors import overview
    from collectors.models import HostedCollector, LogMessage

    url = reverse("overview")
    with time_machine.travel(now, tick=False):
        client = signed_in_client()
        client.get(url)  # the session learns that messages exist
        total = LogMessage.objects.count()
        print(f"SQLite {BENCH_DIR}/{DB_NAME}: {total:,} messages, now={now}")
        collector = HostedCollector.objects.order_by("pk").first()
        year_ago = (now - timedelta(days=365)).strftime("%Y-%m-%dT%H:%M")
        # 13 queries: 12 for the user-event panels and sources, 1 for which
        # Reporting data types exist; a category pattern resolves its
        # categories in one more.
        checks = [
            ("last 30 days (the default)", "", 13, 1000),
            ("last 7 days", "?range=7d", 13, None),
            ("last 24 hours", "?range=24h", 13, None),
            ("Security/* + 30 days", "?category=Security/*", 14, None),
            (f"{collector.name} + 30 days", f"?collector={collector.pk}", 13, None),
            ("365 days (all the data)", f"?range=&since={year_ago}", 13, None),
        ]
        ok = True
        for label, query, max_queries, max_ms in checks:
            m = measure(client, url + query, args.runs)
            ok &= report(label, m, max_queries=max_queries, max_ms=max_ms)
        print("Each aggregate alone, last 30 days (median ms):")
        view = overview.OverviewFilter.from_params(QueryDict(""), now=now)
        for name, ms in time_panels(view, max(3, args.runs // 2)):
            print(f"  {name:<16} {ms:8.1f} ms")
        grouped = view.events().exclude(event_type="").values("event_type")
        sql, params = grouped.query.sql_with_params()
        print("EXPLAIN QUERY PLAN, events per day by type (30 days):")
        for line in explain(sql, params):
            print(f"    {line}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

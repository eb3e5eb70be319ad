"""Overview dashboard benchmark: 1,000,000 collected messages on a SQLite file
under /tmp (the messages benchmark's data set: a year, 7 categories, 5,000
users, risk levels -10..10).

    .venv/bin/python bench/bench_overview.py [--runs 10] [--rebuild]

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
from bench_messages import explain, populate_messages  # noqa: E402

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    if args.rebuild:
        for suffix in ("", "-wal", "-shm"):
            (BENCH_DIR / f"{DB_NAME}{suffix}").unlink(missing_ok=True)
    setup_django(DB_NAME)
    now = populate_messages()
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
        checks = [
            ("last 30 days (the default)", "", 1000),
            ("last 7 days", "?range=7d", None),
            ("last 24 hours", "?range=24h", None),
            ("Security/* + 30 days", "?category=Security/*", None),
            (f"{collector.name} + 30 days", f"?collector={collector.pk}", None),
            ("365 days (all the data)", f"?range=&since={year_ago}", None),
        ]
        ok = True
        for label, query, max_ms in checks:
            m = measure(client, url + query, args.runs)
            ok &= report(label, m, max_queries=13, max_ms=max_ms)
        print("Each aggregate alone, last 30 days (median ms):")
        view = overview.OverviewFilter.from_params(QueryDict(""), now=now)
        for name, ms in time_panels(view, max(3, args.runs // 2)):
            print(f"  {name:<16} {ms:8.1f} ms")
        grouped = view.messages().exclude(event_type="").values("event_type")
        sql, params = grouped.query.sql_with_params()
        print("EXPLAIN QUERY PLAN, events per day by type (30 days):")
        for line in explain(sql, params):
            print(f"    {line}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Health Events panel benchmark (the issue's section 6: at most 5 queries),
on the Collection benchmark's data (500 collectors x 4 sources, 100,000
health events), plus the Health Events page and a source page.

    .venv/bin/python bench/bench_panel.py [--runs 30]

Builds the data on first use (see bench_collection_page.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_collection_page import (  # noqa: E402
    BENCH_DIR,
    measure,
    populate_collection,
    report,
    setup_django,
    signed_in_client,
)


def busiest():
    """The source and the collector with the most open health events."""
    from django.db.models import Count

    from collectors.models import HealthEvent

    open_events = HealthEvent.objects.open()
    source_id = (
        open_events.exclude(source=None)
        .values("source_id")
        .annotate(n=Count("id"))
        .order_by("-n")[0]["source_id"]
    )
    collector_id = (
        open_events.exclude(source=None)
        .values("source__collector_id")
        .annotate(n=Count("id"))
        .order_by("-n")[0]["source__collector_id"]
    )
    return source_id, collector_id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--show-sql", action="store_true")
    args = parser.parse_args()
    setup_django("collection.sqlite3")
    populate_collection()
    from django.urls import reverse

    client = signed_in_client()
    source_id, collector_id = busiest()
    checks = [
        ("Source panel", reverse("source-health", args=[source_id]), 5, None),
        ("Collector panel", reverse("collector-health", args=[collector_id]), 5, None),
        ("Health Events page 1", reverse("health-events"), 7, None),
        (
            "Health Events, open errors by count",
            reverse("health-events") + "?status=open&severity=error&sort=-count",
            7,
            None,
        ),
        (
            "Health Events page 1000",
            reverse("health-events") + "?page=1000",
            7,
            None,
        ),
        ("Source page", reverse("source-detail", args=[source_id]), 12, None),
    ]
    print(f"SQLite {BENCH_DIR}/collection.sqlite3, {args.runs} timed runs each")
    ok = True
    for label, url, max_queries, max_ms in checks:
        m = measure(client, url, args.runs)
        ok &= report(label, m, max_queries=max_queries, max_ms=max_ms)
        if args.show_sql:
            for sql in m["sql"]:
                print("   ", sql[:300])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

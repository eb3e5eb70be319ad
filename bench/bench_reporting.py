"""Reporting snapshot benchmark: requests per snapshot of a 10,000-user
account in the sandbox, against the minimum `ceil(records/500)` per list.

    .venv/bin/python bench/bench_reporting.py [--users 10000] [--snapshots 2]
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/kb4_bench \\
    .venv/bin/python bench/bench_reporting.py

A Reporting source with every data type reads the sandbox (its limits off,
the engine's limiter off) through the real pipeline in this process; the
sandbox's request log gives the requests per list. It prints, per list, the
records, the requests made and ceil(records/500), then the totals, the
versions stored and the seconds taken (on a shared machine, a rough figure;
the limiter is off, so the burst limit of 50 a minute does not pace it: with
the limits on, past 50 requests it would). A bare array
has no "last page" flag: a list of exactly k x 500 records costs one more
request, the empty page that ends it.

`--snapshots N` runs N snapshots one after another and prints each one's
requests, versions stored and seconds: from the second on, each page's
records are compared with their latest stored versions (one query a page,
`VersionWriter.latest`), whose query plan is printed at the end.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--snapshots", type=int, default=1)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="kb4-bench-reporting-")
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{tmp}/bench.sqlite3")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "knowbe4sumo.settings")
    os.environ.setdefault("KNOWBE4_RATE_LIMIT", "0")
    os.environ.setdefault("DATA_DIR", tmp)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from collectors.engine import run
    from collectors.knowbe4.sandbox import SandboxServer
    from collectors.models import HostedCollector, LogMessage, Source

    call_command("migrate", verbosity=0)
    with SandboxServer(rate_limit=False, reporting={"users": args.users}) as sb:
        settings.KNOWBE4_EXTRA_BASE_URLS = [f"Sandbox|{sb.url}"]
        collector = HostedCollector.objects.create(name=f"Bench {time.time():.0f}")
        source = Source(
            collector=collector,
            name="KMSAT bench",
            base_url_key="x-sandbox",
            kind="reporting",
            reporting={
                "data_types": ["phishing", "users", "groups", "training", "account"]
            },
        )
        source.set_api_key(sb.reporting_key)
        source.save()
        runs, first = [], []
        for n in range(args.snapshots):
            if n:
                first = first or list(sb.requests)
                sb.clear_requests()
                Source.objects.filter(pk=source.pk).update(next_attempt_at=None)
            seconds, stored = _snapshot(run, source, Source)
            runs.append((len(sb.requests), stored, seconds))
        seconds = runs[0][2]
        per_path: dict[str, int] = defaultdict(int)
        for r in first or sb.requests:
            # Callback tests are the same paths asked with campaign_type.
            callback = "campaign_type=callback" in r.query
            per_path[r.path + ("?campaign_type=callback" if callback else "")] += 1
    counts = defaultdict(int)  # records (not versions) per data type
    for data_type, _ in (
        LogMessage.objects.filter(source=source)
        .order_by()
        .values_list("data_type", "event_id")
        .distinct()
    ):
        counts[data_type] += 1
    print(f"{args.users:,} users, {settings.DATABASES['default']['ENGINE']}")
    print(f"{'list':<48} {'records':>8} {'requests':>9} {'ceil/500':>9}")
    made = minimum = 0
    for path, n in sorted(per_path.items()):
        records = _records(path, counts, sb)
        least = max(1, math.ceil(records / 500)) if records is not None else 1
        made, minimum = made + n, minimum + least
        shown = "" if records is None else f"{records:,}"
        print(f"{path:<48} {shown:>8} {n:>9} {least:>9}")
    print(
        f"total requests {made} (minimum {minimum}), "
        f"{runs[0][1]:,} versions stored, {seconds:.1f} s"
    )
    for n, (requests, stored, took) in enumerate(runs[1:], start=2):
        print(f"snapshot {n}: {requests} requests, {stored:,} versions, {took:.1f} s")
    if args.snapshots > 1:
        _print_plan(source)


def _snapshot(run, source, Source) -> tuple[float, int]:
    """One whole snapshot (its runs until the plan is done): (s, versions)."""
    started, stored = time.perf_counter(), 0
    while True:
        stored += run(source.pk, budget_seconds=3600, max_pages=100_000).stored
        source.refresh_from_db()
        if not source.snapshot.get("tasks"):
            return time.perf_counter() - started, stored
        Source.objects.filter(pk=source.pk).update(next_attempt_at=None)


def _print_plan(source) -> None:
    """The plan of one page's latest-versions query (500 users)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from collectors.engine.versions import VersionWriter
    from collectors.models import LogMessage

    ids = LogMessage.objects.filter(source=source, data_type="user").values_list(
        "event_id", flat=True
    )
    ids = sorted(set(ids))[:500]
    writer = VersionWriter(source)
    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        writer.latest("user", ids)
        took = time.perf_counter() - started
    sql = queries.captured_queries[-1]["sql"]
    explain = "EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN "
    print(f"latest versions of 500 users: {len(queries)} query, {took * 1000:.1f} ms")
    with connection.cursor() as cursor:
        cursor.execute(explain + sql.replace("%", "%%"))
        for row in cursor.fetchall():
            print("   ", str(row[-1])[:160])


def _records(listed: str, counts: dict, sb) -> int | None:
    """How many records the list `listed` holds (from the stored versions
    and the sandbox's data)."""
    from collectors.knowbe4.sandbox_reporting import GROUP_BASE_ID

    data = sb.reporting.data
    now = time.time()
    path = listed.removesuffix("?campaign_type=callback")
    if path.endswith("/recipients"):
        t = int(path.split("/")[-2]) - 6_000_000_000
        return len(data.recipients_static(t))
    if path.endswith("/members"):
        return len(data.members(int(path.split("/")[-2]) - GROUP_BASE_ID, now))
    return {
        "/v1/users": counts["user"],
        "/v1/groups": counts["group"],
        "/v1/phishing/security_tests": counts["phishing_test"],
        "/v1/phishing/security_tests?campaign_type=callback": counts["callback_test"],
        "/v1/training/campaigns": counts["training_campaign"],
        "/v1/training/enrollments": counts["training_enrollment"],
    }.get(listed)


if __name__ == "__main__":
    main()

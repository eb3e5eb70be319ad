"""Collection page benchmark: 500 hosted collectors x 4 sources, 100,000 health
events, 200,000 messages received over the last 24 hours (the Messages and
Last 24 hours columns) and 200 sources in a 90-day backfill, on a SQLite file
under /tmp (or PostgreSQL with --database-url).

    .venv/bin/python bench/bench_collection_page.py [--runs 30] [--rebuild]

Prints the queries per request and the median / p90 server time of the
Collection page (first page and a filtered page) and of the refresh endpoint
that the page polls. Server time is measured in-process through Django's test
client: the whole middleware stack, the view and the template, no network.
Data are inserted once (raw executemany in big transactions) and reused.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(os.environ.get("BENCH_DIR", "/tmp/kb4-bench-ui"))  # noqa: S108
COLLECTORS = 500
SOURCES_PER_COLLECTOR = 4
HEALTH_EVENTS = 100_000
MESSAGES_24H = 200_000
BACKFILLING_EVERY = 10  # one source in ten is in a 90-day backfill
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def setup_django(db_name: str) -> None:
    """This process on its own SQLite file (never the app's or the tests')."""
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    os.environ["DATA_DIR"] = str(BENCH_DIR)
    os.environ["DATABASE_URL"] = f"sqlite:///{BENCH_DIR / db_name}"
    os.environ["ALLOWED_HOSTS"] = "testserver,127.0.0.1,localhost"
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "knowbe4sumo.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def stamp(dt: datetime) -> str:
    """A datetime as Django's SQLite backend stores it (naive UTC text)."""
    return str(dt.astimezone(UTC).replace(tzinfo=None))


def populate_collection() -> None:
    """500 collectors x 4 sources and 100,000 health events, once."""
    from django.db import connection, transaction

    from collectors import crypto
    from collectors.choices import SourceState
    from collectors.models import HealthEvent, HostedCollector, Source

    if HostedCollector.objects.count() >= COLLECTORS:
        return
    print("populating collectors, sources and health events ...", flush=True)
    rng = random.Random(42)
    token = crypto.encrypt("kb4-bench-key-0000000000-abcd")
    states = [s for s, _ in SourceState.choices]
    with transaction.atomic():
        HostedCollector.objects.bulk_create(
            HostedCollector(name=f"Collector {i:03d}", category=f"Team{i % 7}")
            for i in range(COLLECTORS)
        )
        sources = []
        for c in HostedCollector.objects.all():
            for j in range(SOURCES_PER_COLLECTOR):
                sources.append(
                    Source(
                        collector=c,
                        name=f"KnowBe4 {j}",
                        category=f"Security/KnowBe4/{c.pk % 9}",
                        base_url_key="us",
                        api_key_encrypted=token,
                        api_key_hint="abcd",
                        state=rng.choice(states),
                        last_success_at=NOW - timedelta(minutes=rng.randint(1, 900)),
                    )
                )
        Source.objects.bulk_create(sources, batch_size=1000)
    source_rows = list(
        Source.objects.values_list("pk", "collector_id", "name", "collector__name")
    )
    names = [
        "ThirdPartyConfigError",
        "ThirdPartyGenericError",
        "FirstPartyGenericError",
    ]
    rows = []
    open_taken = set()
    for i in range(HEALTH_EVENTS):
        pk, collector_id, source_name, collector_name = rng.choice(source_rows)
        name = rng.choice(names)
        first = NOW - timedelta(minutes=rng.randint(10, 60 * 24 * 90))
        last = first + timedelta(minutes=rng.randint(0, 600))
        on_collector = i % 97 == 0
        # About 1 in 50 stays open (at most one per resource and name).
        resolved = None
        resource = (on_collector, collector_id if on_collector else pk, name)
        if i % 50 or resource in open_taken:
            resolved = stamp(last + timedelta(minutes=5))
        else:
            open_taken.add(resource)
        rows.append(
            (
                "Collector" if on_collector else "Source",
                collector_id if on_collector else pk,
                collector_name if on_collector else source_name,
                collector_id,
                collector_name,
                None if on_collector else pk,
                collector_id if on_collector else None,
                name,
                name.removesuffix("Error"),
                "warning" if i % 3 == 0 else "error",
                "http_503",
                "KnowBe4 answered 503 Service Unavailable",
                "Nothing to do: the source retries for up to 90 minutes.",
                stamp(first),
                stamp(last),
                rng.randint(1, 40),
                resolved,
            )
        )
    table = HealthEvent._meta.db_table
    sql = (
        f"INSERT INTO {table} (resource_type, resource_id, resource_name, "  # noqa: S608
        "collector_ref, collector_name, source_id, collector_id, event_name, "
        "error_type, severity, error_code, message, suggested_fix, first_seen, "
        "last_seen, count, resolved_at) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
    )
    with transaction.atomic(), connection.cursor() as cur:
        cur.executemany(sql, rows)
    with connection.cursor() as cur:
        cur.execute("ANALYZE")
    print(
        f"  {HostedCollector.objects.count()} collectors, {Source.objects.count()} "
        f"sources, {HealthEvent.objects.count()} health events "
        f"({HealthEvent.objects.open().count()} open)",
        flush=True,
    )


def populate_activity() -> None:
    """200,000 messages received over the 24 hours before NOW, spread over
    every source, and one source in ten 30 days into a 90-day backfill, once."""
    from django.db import connection, transaction

    from collectors.choices import SourceState
    from collectors.models import LogMessage, Source

    if LogMessage.objects.count() >= MESSAGES_24H:
        return
    print("populating messages and backfills ...", flush=True)
    rng = random.Random(7)
    sources = list(Source.objects.select_related("collector").order_by("pk"))
    backfilling = [s.pk for s in sources[::BACKFILLING_EVERY]]
    Source.objects.filter(pk__in=backfilling).update(
        state=SourceState.COLLECTING,
        created=NOW - timedelta(hours=1),
        initial_lookback_days=90,
        last_complete_day=(NOW - timedelta(days=60)).date(),
    )
    Source.objects.exclude(pk__in=backfilling).update(
        last_complete_day=(NOW - timedelta(days=1)).date()
    )
    batch = []
    with transaction.atomic():
        for i in range(MESSAGES_24H):
            source = sources[i % len(sources)]
            received = NOW - timedelta(seconds=rng.randint(1, 24 * 3600 - 1))
            batch.append(
                LogMessage(
                    source_id=source.pk,
                    event_id=f"bench-{i}",
                    raw="{}",
                    message_time=received - timedelta(days=1),
                    receipt_time=received,
                    source_name=source.name,
                    source_category=source.category,
                    collector_name=source.collector.name,
                )
            )
            if len(batch) == 10_000:
                LogMessage.objects.bulk_create(batch)
                batch = []
        LogMessage.objects.bulk_create(batch)
    if connection.vendor == "sqlite":
        with connection.cursor() as cur:
            cur.execute("ANALYZE")
    print(f"  {LogMessage.objects.count()} messages", flush=True)


def signed_in_client():
    from django.contrib.auth import get_user_model
    from django.test import Client

    user, _ = get_user_model().objects.get_or_create(
        username="bench", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    return client


def measure(client, url: str, runs: int) -> dict:
    """Queries of one request, then median/p90 over `runs` timed requests."""
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    client.get(url)  # warm caches (templates, URL resolver, SQLite pages)
    reset_queries()  # DEBUG's query log is capped: start from empty
    with CaptureQueriesContext(connection) as ctx:
        resp = client.get(url)
        if resp.streaming:
            b"".join(resp.streaming_content)
    assert resp.status_code == 200, (url, resp.status_code)
    times, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        resp = client.get(url)
        if resp.streaming:
            b"".join(resp.streaming_content)
        times.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    times.sort()
    return {
        "url": url,
        "queries": len(ctx.captured_queries),
        "sql": [q["sql"] for q in ctx.captured_queries],
        "median": statistics.median(times),
        # CPU time of this process (SQLite runs in it): what a loaded machine
        # (other processes on the 2 CPUs) changes least.
        "cpu": statistics.median(cpu),
        "p90": times[int(len(times) * 0.9) - 1],
        "bytes": len(resp.content) if not resp.streaming else 0,
    }


def scoped_status_url(per_page: int) -> str:
    """What health.js asks for on page 1: the collectors and sources it shows."""
    from django.urls import reverse

    from collectors.models import HostedCollector, Source

    collectors = list(
        HostedCollector.objects.order_by("name", "pk").values_list("pk", flat=True)
    )[:per_page]
    sources = Source.objects.filter(collector__in=collectors).values_list(
        "pk", flat=True
    )
    return (
        reverse("collection-status")
        + "?collectors="
        + ",".join(map(str, collectors))
        + "&sources="
        + ",".join(map(str, sources))
    )


def report(label: str, m: dict, *, max_queries: int, max_ms: float | None) -> bool:
    ok = m["queries"] <= max_queries and (max_ms is None or m["median"] <= max_ms)
    target = f"<= {max_queries} queries" + (f", <= {max_ms:.0f} ms" if max_ms else "")
    print(
        f"{label:<38} {m['queries']:>3} queries  median {m['median']:7.1f} ms  "
        f"p90 {m['p90']:7.1f} ms  cpu {m['cpu']:7.1f} ms  "
        f"({target}: {'OK' if ok else 'MISSED'})"
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--show-sql", action="store_true")
    parser.add_argument(
        "--per-page",
        type=int,
        default=None,
        help="what-if: collectors per page of the Collection page (default: the "
        "view's COLLECTORS_PER_PAGE)",
    )
    args = parser.parse_args()
    if args.rebuild:
        for suffix in ("", "-wal", "-shm"):
            (BENCH_DIR / f"collection.sqlite3{suffix}").unlink(missing_ok=True)
    setup_django("collection.sqlite3")
    populate_collection()
    populate_activity()
    import time_machine

    # The data are stamped relative to NOW; the pages compute "the last 24
    # hours" from the clock, so the clock is moved there (and keeps ticking).
    traveller = time_machine.travel(NOW, tick=True)
    traveller.start()
    from django.urls import reverse

    from collectors.views import collection

    if args.per_page:
        collection.COLLECTORS_PER_PAGE = args.per_page
    per_page = collection.COLLECTORS_PER_PAGE
    client = signed_in_client()
    results = [
        (
            f"Collection page ({per_page} collectors/page)",
            measure(client, reverse("collection"), args.runs),
            15,
            150,
        ),
        (
            "Collection page, filter 'Collector 1'",
            measure(client, reverse("collection") + "?q=Collector+1", args.runs),
            15,
            150,
        ),
        (
            "Collection page, 'collector 1*', Errors",
            measure(
                client, reverse("collection") + "?q=collector+1*&show=errors", args.runs
            ),
            15,
            150,
        ),
        (
            f"Refresh endpoint, scoped ({per_page} coll.)",
            measure(
                client,
                scoped_status_url(per_page)
                + "&since="
                + (NOW - timedelta(seconds=4)).isoformat().replace("+", "%2B"),
                args.runs,
            ),
            8,
            None,
        ),
        (
            "Refresh endpoint (all 2,000 sources)",
            measure(client, reverse("collection-status"), args.runs),
            8,
            None,
        ),
    ]
    print(f"SQLite {BENCH_DIR}/collection.sqlite3, {args.runs} timed runs each")
    ok = True
    for label, m, q, ms in results:
        ok &= report(label, m, max_queries=q, max_ms=ms)
        if args.show_sql:
            for sql in m["sql"]:
                print("   ", sql[:300])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

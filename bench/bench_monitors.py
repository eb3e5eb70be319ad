"""Monitor check benchmark: one minute's check of 100 monitors over 1,000,000
stored messages (issue 12, section 5), on a SQLite file under /tmp.

    .venv/bin/python bench/bench_monitors.py [--runs 5] [--rebuild]
    .venv/bin/python bench/bench_monitors.py --database-url postgres://…/kb4_bench_mon

The messages are received over 30 days in id order, as collection stores
them (about 23 a minute, message time a day earlier). The 100 monitors: 70
log monitors (category patterns, event type, risk level, user, free text;
windows of 5 minutes to 4 hours; 15 of them per user) and 30 health monitors
(Error, open Warning, stale, quota). Prints the queries and the median / max
time of `alerts.checks.check_monitors()` (the first check, which records the
changes and their notifications, apart), and the query plan of a log
monitor's count.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_collection_page import BENCH_DIR, setup_django, stamp  # noqa: E402

MESSAGES = 1_000_000
DAYS = 30
BATCH = 100_000
DB = "monitors.sqlite3"
CATEGORIES = [
    "Security/KnowBe4",
    "Security/Phishing",
    "Security/Training",
    "SecurityOps/KnowBe4",
    "Prod/Security/KnowBe4",
    "IT/KnowBe4",
    "Compliance/Audit",
]
EVENT_TYPES = ["phish_click", "training_completed", "password_reuse", "mfa_disabled"]


def populate() -> datetime:
    """1,000,000 messages received in id order over 30 days; returns "now"."""
    from django.db import connection, transaction

    from collectors import crypto
    from collectors.models import HostedCollector, LogMessage, Source

    last = LogMessage.objects.order_by("-pk").first()
    if last is not None and LogMessage.objects.count() >= MESSAGES:
        return last.receipt_time + timedelta(seconds=30)
    print("populating 1,000,000 messages (about a minute) ...", flush=True)
    now = datetime.now(UTC).replace(microsecond=0)
    rng = random.Random(12)
    token = crypto.encrypt("kb4-bench-key-0000000000-abcd")
    sources = []
    for i, category in enumerate(CATEGORIES):
        collector = HostedCollector.objects.create(name=f"Collector {i}")
        sources.append(
            Source.objects.create(
                collector=collector,
                name=f"KnowBe4 {i}",
                category=category,
                base_url_key="us",
                api_key_encrypted=token,
                api_key_hint="abcd",
                state="collecting",
            )
        )
    table = LogMessage._meta.db_table
    sql = (
        f"INSERT INTO {table} (source_id, event_id, raw, message_time, "  # noqa: S608
        "receipt_time, source_name, source_category, collector_name, fields, "
        "event_type, risk_level, user_email) VALUES "
        "(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
    )
    start_at = now - timedelta(days=DAYS)
    step = DAYS * 86400 / MESSAGES
    for start in range(0, MESSAGES, BATCH):
        rows = []
        for i in range(start, start + BATCH):
            source = rng.choice(sources)
            received = start_at + timedelta(seconds=i * step)
            when = received - timedelta(days=1, seconds=rng.randrange(86400))
            event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            email = f"user{rng.randrange(5000)}@example.org"
            event_type = rng.choice(EVENT_TYPES)
            risk = rng.randint(-10, 10)
            raw = json.dumps(
                {
                    "id": event_id,
                    "user": {"email": email},
                    "occurred_date": when.isoformat().replace("+00:00", "Z"),
                    "risk": {"level": risk},
                    "event_type": {"name": event_type},
                }
            )
            rows.append(
                (
                    source.pk,
                    event_id,
                    raw,
                    stamp(when),
                    stamp(received),
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
    with connection.cursor() as cur:
        cur.execute("ANALYZE")
    return now


def setup_postgres(url: str, rebuild: bool) -> None:
    """This process on the PostgreSQL database `url` (dropped first with
    --rebuild), migrated."""
    import os

    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "knowbe4sumo.settings")
    os.environ.pop("REDIS_URL", None)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    if rebuild:
        with connection.cursor() as cur:
            cur.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    call_command("migrate", verbosity=0)


def make_monitors() -> None:
    """The 100 monitors (replaced on every run, so each run starts alike)."""
    from alerts.models import Connection, Monitor, MonitorKind

    Monitor.objects.all().delete()
    connection, _ = Connection.objects.get_or_create(
        name="Bench mail", defaults={"kind": "email", "recipients": "soc@example.org"}
    )
    rng = random.Random(3)
    windows = [5, 15, 60, 240]
    patterns = ["Security/*", "*/KnowBe4", "IT/KnowBe4", "", "Security/Phishing"]
    for i in range(70):
        query: dict = {}
        if patterns[i % 5]:
            query["category"] = patterns[i % 5]
        if i % 3 == 0:
            query["event_type"] = rng.choice(EVENT_TYPES)
        if i % 7 == 0:
            query["risk_level"] = 10
        if i % 11 == 0:
            query["user_email"] = f"user{rng.randrange(5000)}@example.org"
        if i % 10 == 9:
            query["q"] = "mfa"
        Monitor.objects.create(
            name=f"Log {i}",
            kind=MonitorKind.LOG,
            query=query,
            threshold=rng.choice([0, 5, 20, 100]),
            window_minutes=windows[i % 4],
            per_user=i % 5 == 4,
        ).connections.add(connection)
    conditions = ["source_error", "warning_open", "stale", "quota"]
    for i in range(30):
        Monitor.objects.create(
            name=f"Health {i}",
            kind=MonitorKind.HEALTH,
            condition=conditions[i % 4],
            stale_hours=1,
        ).connections.add(connection)


def timed_check(now: datetime) -> tuple[int, float, int]:
    """(queries, seconds, changes) of one check at `now`."""
    import time_machine
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    from alerts import checks

    reset_queries()
    with (
        time_machine.travel(now, tick=False),
        CaptureQueriesContext(connection) as ctx,
    ):
        start = time.perf_counter()
        changes = checks.check_monitors()
        seconds = time.perf_counter() - start
    return len(ctx.captured_queries), seconds, changes


def show_plan(now: datetime) -> None:
    from django.db import connection

    from alerts import conditions
    from alerts.models import Monitor

    monitor = Monitor.objects.filter(query__category="Security/*").first()
    check = conditions.Check(now)
    qs = conditions.log_window(monitor, check).values("pk")
    sql, params = qs.query.sql_with_params()
    explain = "EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN "
    with connection.cursor() as cur:
        cur.execute(explain + sql, params)
        plan = [row[-1] for row in cur.fetchall()]
    print(f"plan of '{monitor.name}' ({monitor.query}):")
    for line in plan:
        print(f"    {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--database-url", help="a PostgreSQL database to use")
    args = parser.parse_args()
    if args.database_url:
        setup_postgres(args.database_url, args.rebuild)
    else:
        if args.rebuild:
            for suffix in ("", "-wal", "-shm"):
                (BENCH_DIR / f"{DB}{suffix}").unlink(missing_ok=True)
        setup_django(DB)
    now = populate()
    make_monitors()

    from collectors.models import LogMessage

    total = LogMessage.objects.count()
    from django.db import connection

    where = connection.vendor if args.database_url else f"SQLite {BENCH_DIR}/{DB}"
    print(f"{where}: {total:,} messages, 100 monitors, now={now}")
    show_plan(now)
    queries, seconds, changes = timed_check(now)
    print(
        f"first check: {queries} queries, {seconds * 1000:.0f} ms, "
        f"{changes} monitor change(s) recorded with their notifications"
    )
    runs = [timed_check(now + timedelta(seconds=i + 1)) for i in range(args.runs)]
    times = [r[1] * 1000 for r in runs]
    print(
        f"steady check ({args.runs} runs): {runs[-1][0]} queries, median "
        f"{statistics.median(times):.0f} ms, max {max(times):.0f} ms, "
        f"{sum(r[2] for r in runs)} change(s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

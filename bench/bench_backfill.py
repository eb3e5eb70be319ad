"""Backfill benchmark: a real `manage.py collect` process against the sandbox.

    .venv/bin/python bench/bench_backfill.py                 # SQLite (temp dir)
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/kb4_bench \\
    REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python bench/bench_backfill.py

What it measures (the issue's section 9):
1. limits off on both sides (sandbox `--no-rate-limit --no-quota`, engine
   KNOWBE4_RATE_LIMIT=0): events/s of a backfill of 100,000 events, and the
   collection process's peak memory (ru_maxrss from wait4), also for 20,000
   events to show that memory does not grow with the number of events;
   In the same run, against the same sandbox, a bare `requests` + `json`
   loop fetches and parses the very same pages (no database, no engine),
   just before and just after the engine: the engine's rate is printed as a
   ratio to it, so the figure says how close the pipeline comes to what
   this machine can fetch and parse (and a low bare rate says the sandbox,
   not the engine, is the limit). A first, untimed pass has the sandbox
   build its days, which it then serves from memory, so that neither side
   pays for generating them;
2. limits on (sandbox 4 requests/s per key, the shared limiter on): the
   fraction of the bound 4 requests/s x 100 events/page reached over a
   `--limited-seconds` window, and the number of 429s (must be 0).

The sandbox runs as its own process; each measurement uses a new source and
starts from an empty messages table (`empty_messages`), and the 100,000
events are also backfilled into a table already holding `--preload`
messages (300,000), since what a page costs grows with the table. The
figures replace this database's section of bench/RESULTS-engine.md (`--results`).
The machine is usually shared, so each size is run `--repeat` times (best kept)
and the collect process's CPU time is reported as a load-independent figure.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
DAYS = 10
PER_PAGE = 100
RATE = 4  # requests per second per key
PROFILE: list[str] = []  # ["-m", "cProfile", "-o", FILE] with --profile FILE


@dataclass
class Backfill:
    """One collection process's figures."""

    events: int
    seconds: float
    maxrss_mb: float
    requests: int = 0
    throttled: int = 0
    cpu_seconds: float = 0.0  # user + system time of the collect process
    load: float = 0.0  # 1-minute load average when the run started
    bare_per_second: float = 0.0  # the bare HTTP + JSON loop, same pages
    wall_seconds: float = 0.0  # the collect process, start-up included
    ratios: tuple[float, ...] = ()  # every run's ratio (`best_of`)
    preloaded: int = 0  # messages in the table before the run

    @property
    def per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def ratio(self) -> float:
        """The engine's rate over the bare loop's on the same pages."""
        return self.per_second / self.bare_per_second if self.bare_per_second else 0


def bare_loop(url: str, api_key: str) -> tuple[int, float]:
    """Fetch and parse every page of the sandbox's window as the engine would
    ask for it, with nothing else: (events, seconds). What this machine can
    fetch and parse, the ceiling of any collector of this API."""
    import json
    from datetime import UTC, datetime, timedelta

    import requests

    today = datetime.now(UTC).date()
    days = [today - timedelta(days=n) for n in range(DAYS, 0, -1)]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {api_key}"
    events = 0
    start = time.perf_counter()
    for day in days:
        page = 1
        while page:
            params = {
                "occurred_date": day.isoformat(),
                "page": page,
                "per_page": PER_PAGE,
                "order_by": "occurred_date",
                "order_direction": "asc",
            }
            resp = session.get(url + "/events", params=params, timeout=(5, 30))
            resp.raise_for_status()
            doc = json.loads(resp.content)
            events += len(doc["data"])
            page = doc["meta"].get("next_page") if doc["data"] else None
    seconds = time.perf_counter() - start
    session.close()
    return events, seconds


def setup_django(env: dict[str, str], fresh: bool = False) -> None:
    """Configure this process like the collector (same database and secrets)."""
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "knowbe4sumo.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    ensure_postgres_database(os.environ.get("DATABASE_URL", ""), fresh)
    call_command("migrate", verbosity=0)


def ensure_postgres_database(url: str, fresh: bool) -> None:
    """Create the PostgreSQL database named in DATABASE_URL if it is missing
    (with `fresh`, drop it first: every run then starts from an empty table)."""
    if not url.startswith(("postgres://", "postgresql://")):
        return
    import psycopg
    from django.conf import settings

    cfg = settings.DATABASES["default"]
    with psycopg.connect(
        dbname="postgres",
        user=cfg["USER"],
        password=cfg["PASSWORD"] or None,
        host=cfg["HOST"] or None,
        port=cfg["PORT"] or None,
        autocommit=True,
    ) as conn:
        name = cfg["NAME"]
        if fresh:
            if name in ("postgres", "template0", "template1"):
                raise SystemExit(f"--fresh will not drop the database {name!r}")
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        found = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [name]
        ).fetchone()
        if not found:
            conn.execute(f'CREATE DATABASE "{name}"')


class Sandbox:
    """`manage.py knowbe4_sandbox` in its own process, on an ephemeral port."""

    def __init__(self, total: int, *, limits: bool, env: dict[str, str]) -> None:
        cmd = [
            sys.executable, "manage.py", "knowbe4_sandbox", "--port", "0",
            "--api-key", "kb4-bench-key-0123456789-AbCdEf", "--days", str(DAYS),
            "--total-events", str(total), "--seed", "bench", "--allow-production",
        ]  # fmt: skip
        if not limits:
            cmd += ["--no-rate-limit", "--no-quota"]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        line = self.proc.stdout.readline()
        match = re.search(r"listening on (http://\S+?),", line)
        if not match:
            self.proc.kill()
            raise SystemExit(f"the sandbox did not start: {line!r}")
        self.url = match.group(1)
        self.api_key = "kb4-bench-key-0123456789-AbCdEf"

    def requests(self) -> list[dict]:
        import json
        import urllib.request

        with urllib.request.urlopen(self.url + "/_sandbox/requests", timeout=30) as r:
            return [x for x in json.load(r)["data"] if x["path"].startswith("/events")]

    def cpu_seconds(self) -> float:
        """The sandbox process's CPU time so far (user + system, Linux)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1]
        utime, stime = fields.split()[11:13]
        return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def new_source(sandbox: Sandbox, label: str) -> int:
    """A fresh source reading the sandbox's whole window of days."""
    from collectors.models import HostedCollector, Source

    collector, _ = HostedCollector.objects.get_or_create(name="Benchmark")
    source = Source(
        collector=collector,
        name=f"{label} {time.time_ns()}",
        category="Bench/KnowBe4",
        base_url_key="x-sandbox",
        initial_lookback_days=DAYS,
    )
    source.set_api_key(sandbox.api_key)
    source.save()
    return source.pk


def stored(source_id: int) -> int:
    from collectors.models import LogMessage

    return LogMessage.objects.filter(source_id=source_id).count()


def run_collector(
    source_id: int, env: dict[str, str], stop_after: float | None = None
) -> tuple[float, float, float, float]:
    """Run `collect --until-idle` for one source: (start, end, peak RSS in MB,
    CPU seconds)."""
    cmd = [
        sys.executable, *PROFILE, "manage.py", "collect", "--source", str(source_id),
        "--until-idle",
    ]  # fmt: skip
    start = time.time()
    # Run as deployed: DEBUG off (see bench/collect_settings.py).
    env = {**env, "DJANGO_SETTINGS_MODULE": "bench.collect_settings"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    if stop_after is not None:
        time.sleep(stop_after)
        proc.send_signal(signal.SIGTERM)
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    end = time.time()
    if stop_after is None and proc.returncode != 0:
        raise SystemExit(f"collect failed with exit code {proc.returncode}")
    cpu = usage.ru_utime + usage.ru_stime
    return start, end, usage.ru_maxrss / 1024, cpu  # Linux: ru_maxrss in KB


def empty_messages() -> None:
    """Start a measurement from an empty messages table.

    What a page costs grows with the unique index it writes into: a random
    event id lands on a leaf of its own, so the more leaves, the more pages
    each commit writes. Runs that each added to one table were measured on
    ever bigger tables (the third 100,000-event run after three of 20,000
    wrote into 260,000 rows), and their order decided the figures. Now every
    run starts alike, and `preload` measures a table that already holds
    messages, on purpose."""
    from django.db import connection

    from collectors.models import LogMessage

    table = connection.ops.quote_name(LogMessage._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {table}")
        else:
            cursor.execute(f"DELETE FROM {table}")  # noqa: S608
            cursor.execute("VACUUM")


def preload(rows: int) -> None:
    """Fill the messages table with `rows` messages of another source, dated
    in the 20 days before the benchmark's window, with random ids (as
    KnowBe4's UUIDs are) and pages of JSON as long as the sandbox's."""
    from django.db import connection

    from collectors.models import HostedCollector, LogMessage, Source

    collector, _ = HostedCollector.objects.get_or_create(name="Benchmark")
    source = Source.objects.create(
        collector=collector, name=f"preloaded {time.time_ns()}", category="Old/Data"
    )
    table = connection.ops.quote_name(LogMessage._meta.db_table)
    columns = (
        "source_id, event_id, raw, message_time, receipt_time, source_name, "
        "source_category, collector_name, fields, event_type, risk_level, "
        "user_email, data_type, content_hash"
    )
    if connection.vendor == "postgresql":
        numbers = "generate_series(1, %s) AS n(i)"
        event_id, raw = "md5(random()::text || i)", "repeat('x', 600)"
        when = "now() - interval '10 days' - (i %% 1728000) * interval '1 second'"
    else:
        numbers = (
            "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
            "WHERE i < %s) SELECT i FROM n)"
        )
        event_id = "lower(hex(randomblob(16)))"
        raw = "replace(hex(zeroblob(300)), '0', 'x')"
        when = "datetime('now', '-10 days', '-' || (i %% 1728000) || ' seconds')"
    sql = (
        f"INSERT INTO {table} ({columns}) SELECT %s, {event_id}, {raw}, {when}, "  # noqa: S608
        f"{when}, 'preloaded', 'Old/Data', 'Benchmark', '{{}}', "
        f"'event_type_' || (i %% 40), i %% 11, 'user' || (i %% 500) || '@example.com', "
        f"'events', '' FROM {numbers}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [source.pk, rows])


def unlimited(total: int, env: dict[str, str], preloaded: int = 0) -> Backfill:
    """Backfill `total` events with every limit off: throughput and memory.
    The messages table starts empty, or holding `preloaded` messages."""
    empty_messages()
    if preloaded:
        preload(preloaded)
    started_on = time.gmtime().tm_yday
    sandbox = Sandbox(total, limits=False, env=env)
    try:
        child = {**env, "KNOWBE4_EXTRA_BASE_URLS": f"Sandbox|{sandbox.url}"}
        child["KNOWBE4_RATE_LIMIT"] = "0"
        from django.conf import settings

        settings.KNOWBE4_EXTRA_BASE_URLS = [f"Sandbox|{sandbox.url}"]
        source_id = new_source(sandbox, f"unlimited-{total}")
        # The sandbox builds a day's events on its first request for the day
        # and then serves them from memory: a first pass, timed by nobody,
        # so that neither side pays for it (a simulator serves data it holds).
        bare_loop(sandbox.url, sandbox.api_key)
        before = bare_loop(sandbox.url, sandbox.api_key)
        load = os.getloadavg()[0]
        served = sandbox.cpu_seconds()
        logged = len(sandbox.requests())
        start, end, rss, cpu = run_collector(source_id, child)
        served = sandbox.cpu_seconds() - served
        log = sandbox.requests()[logged:]
        after = bare_loop(sandbox.url, sandbox.api_key)
    finally:
        sandbox.stop()
    # The sandbox's window and the source's look-back are days before "today".
    day_changed = time.gmtime().tm_yday != started_on
    count = stored(source_id)
    if count != total:
        moved = " (the UTC day changed meanwhile: run it again)" if day_changed else ""
        raise SystemExit(f"stored {count} events, the sandbox has {total}{moved}")
    # Time from the first request to the last (the process start-up excluded).
    first, last = log[0]["time"], log[-1]["time"]
    seconds = max(last - first, 1e-6)
    result = Backfill(count, seconds, rss, len(log), cpu_seconds=cpu, load=load)
    result.preloaded = preloaded
    # The machine's speed moves from one minute to the next: the bare loop
    # runs just before and just after the engine, and the ratio is to both.
    for bare_events, _seconds in (before, after):
        if bare_events != total:
            raise SystemExit(f"the bare loop read {bare_events} events, not {total}")
    bare_seconds = before[1] + after[1]
    result.bare_per_second = 2 * total / bare_seconds if bare_seconds else 0.0
    result.wall_seconds = end - start
    into = f" into {preloaded:,} stored messages" if preloaded else ""
    print(
        f"  limits off, {total:,} events{into}: {result.per_second:,.0f} events/s "
        f"({len(log)} requests in {seconds:.1f} s; process wall {end - start:.1f} s, "
        f"CPU {cpu:.1f} s; sandbox CPU {served:.1f} s), peak RSS {rss:.0f} MB, "
        f"load average {load:.1f}; "
        f"bare HTTP + JSON loop {result.bare_per_second:,.0f} events/s "
        f"({total / before[1]:,.0f} before, {total / after[1]:,.0f} after), "
        f"ratio {result.ratio:.2f}"
    )
    return result


def limited(seconds: float, env: dict[str, str]) -> Backfill:
    """Collect with both limits on for `seconds`: the share of 4 req/s reached."""
    sandbox = Sandbox(100_000, limits=True, env=env)
    try:
        child = {**env, "KNOWBE4_EXTRA_BASE_URLS": f"Sandbox|{sandbox.url}"}
        child["KNOWBE4_RATE_LIMIT"] = "1"
        from django.conf import settings

        settings.KNOWBE4_EXTRA_BASE_URLS = [f"Sandbox|{sandbox.url}"]
        source_id = new_source(sandbox, "limited")
        # Django's start-up comes first: stop `seconds` after the first request.
        load = os.getloadavg()[0]
        _start, _end, rss, cpu = run_collector(source_id, child, stop_after=seconds + 2)
        log = sandbox.requests()
    finally:
        sandbox.stop()
    ok = [r["time"] for r in log if r["status"] == 200]
    throttled = sum(1 for r in log if r["status"] == 429)
    # Requests go in bursts of up to 4; measure from the first request to the
    # first of a later burst (a multiple of 4 requests later) inside the window,
    # so that neither end of the window flatters or penalises the figure.
    m = max(i for i in range(0, len(ok), RATE) if ok[i] <= ok[0] + seconds)
    span = ok[m] - ok[0]
    result = Backfill(m * PER_PAGE, span, rss, m, throttled, cpu, load)
    share = result.per_second / (RATE * PER_PAGE)
    print(
        f"  limits on: {m} pages in {span:.2f} s = "
        f"{result.per_second:,.1f} events/s = {share:.1%} of the bound "
        f"{RATE * PER_PAGE} events/s; 429 responses: {throttled}"
    )
    return result


def best_of(times: int, measure) -> Backfill:
    """The fastest of `times` runs (and the highest peak memory among them)."""
    runs = [measure() for _ in range(max(1, times))]
    best = max(runs, key=lambda r: r.per_second)
    best.maxrss_mb = max(r.maxrss_mb for r in runs)
    # The fastest run is not the one of the best ratio: the ratio of each.
    best.ratios = tuple(sorted(r.ratio for r in runs))
    return best


def describe_database() -> str:
    from django.db import connection

    if connection.vendor == "sqlite":
        return "SQLite (WAL)"
    version = connection.cursor().connection.info.server_version
    return f"PostgreSQL {version // 10000}"


def write_results(path: Path, label: str, lines: list[str]) -> None:
    """Replace (or add) this database's section of the results file."""
    head = "# Collection engine benchmark\n\nWritten by `bench/bench_backfill.py`.\n"
    text = path.read_text() if path.exists() else head
    section = f"## {label}\n\n" + "\n".join(lines) + "\n"
    pattern = re.compile(rf"^## {re.escape(label)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--small-events", type=int, default=20_000)
    parser.add_argument("--limited-seconds", type=float, default=30.0)
    parser.add_argument("--skip-limited", action="store_true")
    parser.add_argument(
        "--preload",
        type=int,
        default=300_000,
        help="also back the big size up into a table holding this many (0: not)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="PostgreSQL: drop and re-create the DATABASE_URL database first",
    )
    parser.add_argument(
        "--repeat", type=int, default=2, help="best of N runs (shared machines)"
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=ROOT / "bench" / "RESULTS-engine.md",
        help="replace this database's section of FILE ('' to skip)",
    )
    parser.add_argument(
        "--profile", help="cProfile the collect process into this file (slower)"
    )
    args = parser.parse_args()
    if args.profile:
        PROFILE.extend(["-m", "cProfile", "-o", args.profile])

    env = dict(os.environ)
    if not env.get("DATABASE_URL"):
        env["DATA_DIR"] = tempfile.mkdtemp(prefix="kb4-bench-")
    # DEBUG on: the sandbox's plain-http loopback Base URL is refused with
    # DEBUG off (the key travels in a header). The collect process turns it
    # off once its settings are checked (bench/collect_settings.py).
    env["DEBUG"] = "1"
    env.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    env.setdefault("FIELD_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    env.setdefault("ALLOWED_HOSTS", "127.0.0.1")
    env["LOG_LEVEL"] = "WARNING"
    # The sandbox's closed days never change once served: nothing to settle,
    # so yesterday is read at once, also in the first minutes after midnight.
    env["COLLECTION_SETTLE_DELAY_MINUTES"] = "0"
    setup_django(env, args.fresh)
    database = describe_database()
    limiter = "Redis" if env.get("REDIS_URL") else "database"
    prefix = [f"{k}={env[k]}" for k in ("DATABASE_URL", "REDIS_URL") if env.get(k)]
    script = ".venv/bin/python bench/bench_backfill.py"
    command = " ".join([*prefix, script, *sys.argv[1:]])
    print(f"{database}, limiter state in the {limiter}; {platform.processor() or ''}")
    print(f"command: {command}")

    small = best_of(args.repeat, lambda: unlimited(args.small_events, env))
    big = best_of(args.repeat, lambda: unlimited(args.events, env))
    full = None
    if args.preload:
        full = best_of(
            args.repeat, lambda: unlimited(args.events, env, preloaded=args.preload)
        )
    lines = [
        f"Command: `{command}`  ",
        f"Machine: {os.cpu_count()} CPUs (shared; 1-minute load average "
        f"{big.load:.1f} at the start of the best run), Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}  ",
        f"Limiter state: {limiter}; best of {args.repeat} run(s) per size",
        "",
        "| Measurement | Result | Target |",
        "|---|---|---|",
        f"| Backfill of {big.events:,} events, limits off | "
        f"**{big.per_second:,.0f} events/s** ({big.requests} requests in "
        f"{big.seconds:.1f} s) | >= 5,000 events/s |",
        f"| The same pages fetched and parsed by a bare `requests` + `json` "
        f"loop | {big.bare_per_second:,.0f} events/s | |",
        f"| **Ratio** engine / bare loop, {big.events:,} events | "
        f"**{big.ratio:.2f}** (whole process, start-up included: "
        f"{big.events / big.wall_seconds / big.bare_per_second:.2f}; every run: "
        f"{', '.join(f'{r:.2f}' for r in big.ratios)}) | >= 0.6 |",
        *(
            [
                f"| The same backfill into a table already holding "
                f"{full.preloaded:,} messages | {full.per_second:,.0f} events/s, "
                f"ratio {full.ratio:.2f} (every run: "
                f"{', '.join(f'{r:.2f}' for r in full.ratios)}) | |"
            ]
            if full
            else []
        ),
        f"| CPU time of the collect process for it | {big.cpu_seconds:.1f} s = "
        f"{big.events / big.cpu_seconds:,.0f} events per CPU-second | |",
        f"| Peak memory of the collect process, {big.events:,} events | "
        f"**{big.maxrss_mb:.0f} MB** | < 200 MB |",
        f"| Peak memory, {small.events:,} events | {small.maxrss_mb:.0f} MB "
        f"({small.per_second:,.0f} events/s) | the same (no growth) |",
    ]
    if not args.skip_limited:
        lim = limited(args.limited_seconds, env)
        share = lim.per_second / (RATE * PER_PAGE)
        lines.append(
            f"| Limits on, {lim.requests} pages in {lim.seconds:.1f} s | "
            f"**{share:.1%} of the bound** ({lim.per_second:,.1f} of "
            f"{RATE * PER_PAGE} events/s), {lim.throttled} x 429 | >= 95%, no 429 |"
        )
    print("\n".join(lines))
    if str(args.results) not in ("", "."):
        write_results(args.results, database, lines)
        print(f"written to {args.results}")


if __name__ == "__main__":
    main()

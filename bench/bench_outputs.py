"""Output delivery rate: messages/s from the store to a local receiver, gzip on.

    .venv/bin/python bench/bench_outputs.py [--messages 100000] [--formats sumo,hec]
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/kb4_bench_outputs \\
        .venv/bin/python bench/bench_outputs.py --fresh

For each format: N stored messages (shaped like collected KnowBe4 events, two
sources and categories), one output with its defaults (1,000 messages or
1,000,000 bytes a batch, gzip), and a real `manage.py deliver --output ID
--until-idle` process sending to `manage.py output_receiver` (another
process, on 127.0.0.1). Messages/s counts from the receiver's first accepted
request to its last, so Django's start-up is not in it; every message must
arrive. Also printed: requests, bytes on the wire, the compression ratio and
the deliver process's CPU time (wait4) and peak RSS (VmHWM). Production
settings (DEBUG off). The receiver parses and counts every record in Python
on the same 2 CPUs, so the end-to-end rate is partly its own; the deliver
process's CPU time per message is the sender's cost alone.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_backfill import ROOT, setup_django  # noqa: E402

BENCH_TOKEN = "bench-hec-token-0001"  # noqa: S105 - the local receiver ignores it


def populate(total: int) -> list[int]:
    """`total` messages over two sources; returns (first id, last id)."""
    from collectors.models import HostedCollector, LogMessage, Source
    from outputs.models import Output
    from tests.cast import make_collector, make_messages, make_source

    Output.objects.all().delete()
    LogMessage.objects.all().delete()
    Source.objects.all().delete()
    HostedCollector.objects.all().delete()
    collector = make_collector("Bench")
    half = total // 2
    a = make_source(collector, "Phishing", category="Security/KnowBe4/Phish")
    b = make_source(collector, "Training", category="Security/KnowBe4/Training")
    ids = make_messages(a, half) + make_messages(b, total - half)
    return [min(ids), max(ids)]


def start_receiver(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "manage.py", "output_receiver", "--port", "0", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    match = re.search(r"listening on (http://\S+?),", line)
    if not match:
        proc.kill()
        raise SystemExit(f"the receiver did not start: {line!r}")
    return proc, match.group(1)


def stats(url: str) -> dict:
    with urllib.request.urlopen(url + "/_receiver/stats", timeout=30) as resp:
        return json.load(resp)


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM of a running process: its peak RSS since exec (wait4's
    ru_maxrss would count the pages inherited from this large parent)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def deliver(output_id: int, env: dict[str, str]) -> tuple[float, float]:
    """Run `deliver --until-idle`: (CPU seconds, peak RSS in MB)."""
    cmd = [
        sys.executable, "manage.py", "deliver", "--output", str(output_id),
        "--until-idle",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    peak = 0.0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, peak_rss_mb(proc.pid) or 0.0)
        time.sleep(0.1)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit("deliver failed")
    return usage.ru_utime + usage.ru_stime, peak


def run_format(fmt: str, first: int, total: int, env: dict[str, str]) -> dict:
    from outputs.models import Output
    from tests.cast import make_output

    receiver, url = start_receiver(env)
    try:
        path = "/services/collector/event" if fmt == "hec" else "/receiver"
        Output.objects.all().delete()
        output = make_output(
            url + path, f"bench {fmt}", format=fmt, token=BENCH_TOKEN,
            checkpoint=first - 1,
        )  # fmt: skip
        cpu, rss = deliver(output.pk, env)
        got = stats(url)
    finally:
        receiver.terminate()
        receiver.wait(10)
    output.refresh_from_db()
    if got["distinct"] != total or output.delivered != total:
        raise SystemExit(f"{fmt}: {got['distinct']} of {total} messages arrived")
    seconds = got["last_at"] - got["first_at"]
    raw = sum(len(r) for r in output_raw_sizes(fmt, output))
    return {
        "format": fmt,
        "messages": total,
        "requests": got["requests"],
        "seconds": seconds,
        "rate": total / seconds if seconds else 0.0,
        "wire_mb": got["bytes"] / 1e6,
        "ratio": raw / got["bytes"] if got["bytes"] else 0.0,
        "cpu": cpu,
        "rss": rss,
    }


def output_raw_sizes(fmt: str, output):
    """Each record's size before compression (for the compression ratio)."""
    from collectors.models import LogMessage
    from outputs import formats

    make = formats.RECORD[fmt]
    rows = LogMessage.objects.order_by("pk").values_list(*formats.ROW_COLUMNS)
    for values in rows.iterator(chunk_size=2000):
        yield make(output, formats.Row(*values)).encode() + b"\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--formats", default="sumo,hec,ndjson")
    parser.add_argument("--fresh", action="store_true", help="PostgreSQL: drop first")
    args = parser.parse_args()
    env = dict(os.environ)
    if not env.get("DATABASE_URL"):
        env["DATA_DIR"] = tempfile.mkdtemp(prefix="kb4-bench-outputs-")
    env["DEBUG"] = "0"
    env.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    env.setdefault("FIELD_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    env.setdefault("ALLOWED_HOSTS", "127.0.0.1")
    env["EGRESS_ALLOW_PRIVATE"] = "1"  # the receiver is on 127.0.0.1
    env["LOG_LEVEL"] = "WARNING"
    setup_django(env, args.fresh)
    from django.db import connection

    prefix = "DATABASE_URL=... " if env.get("DATABASE_URL") else ""
    load = os.getloadavg()[0]
    print(f"database: {connection.vendor}; {os.cpu_count()} CPUs, load {load:.1f}")
    print(f"command: {prefix}.venv/bin/python bench/bench_outputs.py "
          + " ".join(sys.argv[1:]))  # fmt: skip
    print(f"populating {args.messages:,} messages ...", flush=True)
    started = time.monotonic()
    first, _last = populate(args.messages)
    print(f"  done in {time.monotonic() - started:.1f} s", flush=True)
    print(
        f"{'format':8} {'messages':>9} {'requests':>8} {'seconds':>8} "
        f"{'msg/s':>8} {'wire MB':>8} {'gzip x':>7} {'CPU s':>6} {'msg/CPU s':>9} "
        f"{'RSS MB':>7}"
    )
    for fmt in args.formats.split(","):
        r = run_format(fmt.strip(), first, args.messages, env)
        print(
            f"{r['format']:8} {r['messages']:>9,} {r['requests']:>8} "
            f"{r['seconds']:>8.2f} {r['rate']:>8,.0f} {r['wire_mb']:>8.2f} "
            f"{r['ratio']:>7.1f} {r['cpu']:>6.1f} {r['messages'] / r['cpu']:>9,.0f} "
            f"{r['rss']:>7.0f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

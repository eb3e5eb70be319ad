"""At least once, through SIGKILLs: an output delivers every message of a
20,000-message store to a local receiver that fails 10% of its requests,
while the `manage.py deliver` process is killed at progress points.

The kill points are counted in accepted batches, never timed: at each one the
receiver holds its answer until the test has killed the process. At an
"after" point the receiver has taken the batch (the process dies before it
hears the 2xx: the batch must come again, a duplicate); at a "before" point
it has not (nothing duplicated, but the process cannot know). Sumo and HEC
bodies are checked against their documented formats as they arrive.
"""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from collectors.models import LogMessage
from outputs.models import Output
from tests.cast import make_collector, make_messages, make_output, make_source
from tests.receiver_support import running_receiver
from tests.sandbox_support import db_env

ROOT = Path(__file__).resolve().parent.parent
TOTAL = 20_000
BATCH = 200
FAIL_EVERY = 10  # every 10th request answers 503: 10% of them
KILLS = {5: "after", 17: "before", 30: "after", 44: "before", 61: "after"}
HEC_TOKEN = "8d0c1b52-hec-token-0001"
_DECODER = json.JSONDecoder()


def records(body: bytes) -> list[dict]:
    """JSON objects one per line or concatenated (HEC allows both)."""
    text, at, out = body.decode("utf-8"), 0, []
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return out
        record, at = _DECODER.raw_decode(text, at)
        out.append(record)


def check_sumo(req, truth: dict) -> list[int]:
    """Sumo HTTP Logs Source: POST of newline-delimited log lines, gzip with
    Content-Encoding, at most 1 MB before compression, metadata headers."""
    assert req.method == "POST"
    assert req.headers["Content-Encoding"] == "gzip"
    body = gzip.decompress(req.body)
    assert len(body) <= 1_000_000
    lines = body.decode("utf-8").splitlines()
    assert lines and all(line.strip() for line in lines)
    ids = []
    for line in lines:
        event = json.loads(line)  # one raw event per line
        known = truth[event["message_id"]]
        assert event["id"] == known["event_id"]
        assert event["occurred_date"] == known["occurred_date"]
        assert req.headers["X-Sumo-Category"] == known["category"]
        assert req.headers["X-Sumo-Name"] == known["source"]
        ids.append(event["message_id"])
    assert req.headers["X-Sumo-Host"]
    return ids


def check_hec(req, truth: dict) -> list[int]:
    """Splunk HEC /services/collector/event: `Authorization: Splunk <token>`,
    event objects with `event`, `time` (epoch seconds), `source`,
    `sourcetype` and `fields` (string values), one after another."""
    assert req.path == "/services/collector/event"
    assert req.headers["Authorization"] == f"Splunk {HEC_TOKEN}"
    body = req.body
    if req.headers.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    ids = []
    for record in records(body):
        assert set(record) <= {"time", "host", "source", "sourcetype", "index"} | {
            "fields",
            "event",
        }
        fields = record["fields"]
        assert all(isinstance(v, str) for v in fields.values())
        known = truth[int(fields["message_id"])]
        assert record["event"]["id"] == known["event_id"]
        assert isinstance(record["time"], int | float)
        assert abs(record["time"] - known["epoch"]) < 0.001
        assert record["source"] == known["source"]
        assert record["sourcetype"] == "knowbe4:user_event"
        assert fields["_sourceCategory"] == known["category"]
        ids.append(int(fields["message_id"]))
    return ids


CHECKS = {"sumo": check_sumo, "hec": check_hec}


class FlakyReceiver:
    """Answers 503 to every FAIL_EVERY-th request, checks every other body,
    and at each kill point holds its answer until the test has killed the
    process (an "after" point takes the batch first, a "before" one not)."""

    def __init__(self, rx, fmt: str, truth: dict) -> None:
        self.rx, self.check, self.truth = rx, CHECKS[fmt], truth
        self.lock = threading.Lock()
        self.points = dict(KILLS)  # each is used once
        self.accepted: list[list[int]] = []  # the ids of each taken batch
        self.dropped: list[int] = []  # sizes of the batches held "before"
        self.problems: list[str] = []
        self.at_kill = threading.Event()
        self.release = threading.Event()
        rx.respond = self.answer

    def answer(self, req):
        with self.lock:
            n = len(self.rx.requests)
            if n % FAIL_EVERY == 0:
                return 503, {}, b"failing on purpose"
            try:
                ids = self.check(req, self.truth)
            except Exception as exc:  # noqa: BLE001 - reported by the test
                self.problems.append(f"request {n}: {exc!r}")
                return 400, {}, b"bad body"
            point = self.points.pop(len(self.accepted) + 1, None)
            if point == "before":
                self.dropped.append(len(ids))
            else:
                self.accepted.append(ids)
            release = self.release
        if point is None:
            return 200, {}, b"ok"
        self.at_kill.set()
        release.wait(60)
        return 500, {}, b"the process was killed meanwhile"


def start_deliver(output_id: int, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "deliver",
            "--output",
            str(output_id),
            "--until-idle",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def ground_truth() -> dict[int, dict]:
    truth = {}
    for pk, raw, category, source, when in LogMessage.objects.values_list(
        "pk", "raw", "source_category", "source_name", "message_time"
    ):
        event = json.loads(raw)
        truth[pk] = {
            "event_id": event["id"],
            "occurred_date": event["occurred_date"],
            "category": category,
            "source": source,
            "epoch": when.timestamp(),
        }
    return truth


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["sumo", "hec"])
def test_it_delivers_every_message_at_least_once_through_sigkills(
    transactional_db, fmt
):
    collector = make_collector()
    a = make_source(collector, "Phishing", category="Security/KnowBe4/Phish")
    b = make_source(collector, "Training", category="Security/KnowBe4/Training")
    ids = make_messages(a, TOTAL // 2) + make_messages(b, TOTAL // 2)
    truth = ground_truth()
    env = {
        **db_env(),
        "EGRESS_ALLOW_PRIVATE": "1",
        "OUTPUT_INLINE_RETRY_SECONDS": "0",
        "LOG_LEVEL": "WARNING",
    }
    with running_receiver() as rx:
        flaky = FlakyReceiver(rx, fmt, truth)
        output = make_output(
            rx.url("/services/collector/event" if fmt == "hec" else "/receiver"),
            format=fmt,
            token=HEC_TOKEN if fmt == "hec" else "",
            max_batch_count=BATCH,
            checkpoint=min(ids) - 1,
        )
        kills = 0
        deadline = time.monotonic() + 900  # a hang, not a speed limit
        while True:
            proc = start_deliver(output.pk, env)
            while proc.poll() is None and not flaky.at_kill.wait(0.05):
                assert time.monotonic() < deadline, "delivery hung"
            if flaky.at_kill.is_set():
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
                kills += 1
                with flaky.lock:
                    flaky.at_kill.clear()
                    flaky.release.set()
                    flaky.release = threading.Event()
                continue
            _out, err = proc.communicate()
            assert proc.returncode == 0, err[-2000:]
            break

    assert flaky.problems == []
    assert kills == len(KILLS) and not flaky.points
    received = [pk for batch in flaky.accepted for pk in batch]
    duplicates = len(received) - len(set(received))
    after_sizes = [len(flaky.accepted[n - 1]) for n, k in KILLS.items() if k == "after"]
    print(
        f"{fmt}: {len(set(received))} distinct messages in {len(received)} "
        f"records, {duplicates} duplicates from {kills} SIGKILLs; "
        f"{len(rx.requests)} requests"
    )
    assert set(received) == set(ids)  # every message id at least once
    assert duplicates == sum(after_sizes)  # each taken-but-unacknowledged batch
    output.refresh_from_db()
    assert output.checkpoint == max(ids)
    assert output.delivered == TOTAL
    assert output.replays == len(KILLS)
    assert output.replayed_messages == duplicates + sum(flaky.dropped)
    assert output.inflight_until is None and output.lease_owner == ""
    assert Output.objects.count() == 1

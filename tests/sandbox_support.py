"""Run the KnowBe4 sandbox for tests: in-process (fixture or context manager)
or as a separate process through the management command (crash tests).

    def test_it_collects(sandbox):          # a fixture: SandboxServer, started
        client = KnowBe4Client(sandbox.url, sandbox.api_key)

    with running_sandbox(events_per_day=10, rate_limit=False) as sb: ...

    with sandbox_process(days=20, events_per_day=1000) as proc:
        proc.url, proc.api_key, proc.control("GET", "/_sandbox/requests")
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from collectors.knowbe4.sandbox import SandboxServer

SANDBOX_KEY = "kb4-sandbox-key-0123456789-AbCdEfGh"
REPORTING_KEY = "kb4-sandbox-reporting-key-9876543210-XyZ"
ROOT = Path(__file__).resolve().parent.parent
DEFAULTS: dict[str, Any] = {
    "api_keys": [SANDBOX_KEY],
    "reporting_keys": [REPORTING_KEY],
    "seed": 1,
    "days": 10,
    "events_per_day": 50,
    "seats": 1000,
    "rate_limit": True,
    "quota": True,
}


def db_env() -> dict[str, str]:
    """The environment for a subprocess that must use this test's database."""
    from django.db import connection

    cfg = connection.settings_dict
    env = dict(os.environ)
    if cfg["ENGINE"].endswith("sqlite3"):
        env["DATABASE_URL"] = f"sqlite:///{cfg['NAME']}"
    else:
        auth = cfg["USER"] + (f":{cfg['PASSWORD']}" if cfg["PASSWORD"] else "")
        host = f"{cfg['HOST'] or '127.0.0.1'}:{cfg['PORT'] or 5432}"
        env["DATABASE_URL"] = f"postgres://{auth}@{host}/{cfg['NAME']}"
    return env


@contextmanager
def running_sandbox(**options: Any) -> Iterator[SandboxServer]:
    """A started in-process sandbox on an ephemeral port; stopped on exit."""
    merged = {**DEFAULTS, **options}
    if "api_key" in merged:
        merged["api_keys"] = [merged.pop("api_key")]
    server = SandboxServer(host="127.0.0.1", port=0, **merged)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    """A started sandbox (both limits on, key SANDBOX_KEY), stopped after."""
    with running_sandbox() as server:
        yield server


@dataclass
class SandboxProcess:
    """A sandbox running as `manage.py knowbe4_sandbox` in its own process."""

    proc: subprocess.Popen
    url: str
    api_key: str

    def control(self, method: str, path: str, body: dict | None = None) -> Any:
        """Call the `/_sandbox/` control API; the decoded JSON (None for 204)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def event_ids(self, start, end) -> set[str]:
        doc = self.control("GET", f"/_sandbox/event_ids?start={start}&end={end}")
        return set(doc["data"])

    def requests(self) -> list[dict]:
        return self.control("GET", "/_sandbox/requests")["data"]

    def gate(self, allow: int | None) -> dict:
        """Answer only the first `allow` API requests (None: all)."""
        return self.control("POST", "/_sandbox/gate", {"allow": allow})["data"]

    def gate_status(self) -> dict:
        return self.control("GET", "/_sandbox/gate")["data"]

    def wait_at_gate(self, timeout: float = 120.0) -> dict:
        """Block until a client is held at the gate (synchronising on its
        progress, not on time); the timeout only stops a hung test."""
        deadline = time.monotonic() + timeout
        while (status := self.gate_status())["waiting"] == 0:
            if self.proc.poll() is not None:
                raise RuntimeError("the sandbox exited")
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing reached the gate: {status}")
            time.sleep(0.02)
        return status

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_sandbox_process(
    *,
    api_key: str = SANDBOX_KEY,
    seed: int = 1,
    days: int = 10,
    events_per_day: int = 50,
    seats: int | None = None,
    total_events: int | None = None,
    rate_limit: bool = True,
    quota: bool = True,
    port: int = 0,
    env: dict[str, str] | None = None,
) -> SandboxProcess:
    """Start the management command on `port` (0: ephemeral) and wait for it."""
    cmd = [
        sys.executable, "manage.py", "knowbe4_sandbox",
        "--host", "127.0.0.1", "--port", str(port), "--api-key", api_key,
        "--seed", str(seed), "--days", str(days),
        "--events-per-day", str(events_per_day),
    ]  # fmt: skip
    if seats is not None:
        cmd += ["--seats", str(seats)]
    if total_events is not None:
        cmd += ["--total-events", str(total_events)]
    if not rate_limit:
        cmd.append("--no-rate-limit")
    if not quota:
        cmd.append("--no-quota")
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    match = re.search(r"listening on (http://\S+?),", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"the sandbox did not start: {line!r}")
    return SandboxProcess(proc=proc, url=match.group(1), api_key=api_key)


@contextmanager
def sandbox_process(**options: Any) -> Iterator[SandboxProcess]:
    """`start_sandbox_process` as a context manager that always stops it."""
    handle = start_sandbox_process(**options)
    try:
        yield handle
    finally:
        handle.stop()

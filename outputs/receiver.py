"""A local receiver for outputs: what `manage.py output_receiver` serves.

It accepts what the three formats send (gzip or not), counts the records and
the distinct message ids (so repeats of an at-least-once delivery show), and
prints one line per request. It lets a newcomer watch an output deliver the
sandbox's messages without a Sumo or Splunk account, and the benchmark
measures delivery against it. It is a lab tool: it keeps the ids it saw in
memory and trusts whoever connects (it listens on 127.0.0.1 by default).

    GET  /_receiver/stats   {"requests", "records", "distinct", "repeats", ...}
    POST <any path>         records, NDJSON or concatenated JSON objects
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_DECODER = json.JSONDecoder()


def parse_records(body: bytes, encoding: str = "") -> list[dict]:
    """The JSON objects of a request body: one per line (Sumo, NDJSON) or
    concatenated (Splunk HEC allows both)."""
    if encoding.lower() == "gzip":
        body = gzip.decompress(body)
    text = body.decode("utf-8")
    records, at = [], 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text):
            return records
        record, at = _DECODER.raw_decode(text, at)
        if not isinstance(record, dict):
            raise ValueError("a record is not a JSON object")
        records.append(record)


def message_id(record: dict) -> str | None:
    """The stable message id a record carries, in any of the three formats."""
    if "message_id" in record:
        return str(record["message_id"])
    fields = record.get("fields")
    if isinstance(fields, dict) and "message_id" in fields:
        return str(fields["message_id"])
    return None


class ReceiverServer(ThreadingHTTPServer):
    """The receiver: counts under a lock; `fail_every` answers every Nth
    request with 503 (a flaky endpoint, to watch retries)."""

    daemon_threads = True

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        fail_every: int = 0,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__((host, port), _Handler)
        self.fail_every = fail_every
        self.echo = echo
        self.lock = threading.Lock()
        self.seen: set[str] = set()
        self.stats = {
            "requests": 0,
            "failed": 0,
            "records": 0,
            "distinct": 0,
            "repeats": 0,
            "bytes": 0,  # request bodies as sent (compressed or not)
            "first_at": None,  # wall-clock times of the first and last
            "last_at": None,  # accepted request, for a delivery rate
        }
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def take(self, path: str, headers, body: bytes) -> tuple[int, str]:
        """Count one request; (status, answer text)."""
        with self.lock:
            self.stats["requests"] += 1
            if self.fail_every and self.stats["requests"] % self.fail_every == 0:
                self.stats["failed"] += 1
                return 503, "failing on purpose (--fail-every)"
        try:
            records = parse_records(body, headers.get("Content-Encoding", ""))
        except (OSError, EOFError, UnicodeDecodeError, ValueError) as exc:
            return 400, f"unreadable body: {type(exc).__name__}"
        ids = [message_id(r) for r in records]
        with self.lock:
            now = time.time()
            self.stats["first_at"] = self.stats["first_at"] or now
            self.stats["last_at"] = now
            self.stats["bytes"] += len(body)
            new = {i for i in ids if i is not None} - self.seen
            self.seen |= new
            repeats = sum(1 for i in ids if i is not None) - len(new)
            self.stats["records"] += len(records)
            self.stats["distinct"] = len(self.seen)
            self.stats["repeats"] += repeats
            total = self.stats["distinct"]
        if self.echo:
            category = headers.get("X-Sumo-Category", "")
            where = f" [{category}]" if category else ""
            self.echo(
                f"POST {path}{where}: {len(records)} record(s), {len(new)} new, "
                f"{repeats} repeat(s); {total} distinct message(s) so far"
            )
        return 200, "ok"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: ReceiverServer

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        status, text = self.server.take(self.path, self.headers, body)
        self._answer(status, text.encode())

    def do_GET(self) -> None:  # noqa: N802
        if self.path.rstrip("/") != "/_receiver/stats":
            self._answer(404, b"not found")
            return
        with self.server.lock:
            body = json.dumps(self.server.stats).encode()
        self._answer(200, body, "application/json")

    def _answer(self, status: int, body: bytes, kind: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass

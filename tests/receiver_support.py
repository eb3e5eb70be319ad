"""A local HTTP receiver for outbound deliveries (webhooks, outputs).

    with running_receiver() as rx:            # every request answered 200
        egress.post(rx.url("/hook"), data=b"{}", headers={})
        rx.requests[0].json()

    rx.statuses = [500, 500]   # the next two requests get 500, then 200 again
    rx.respond = lambda req: (302, {"Location": "http://example.com/"}, b"")

It records every request (path, headers, body) under a lock, so tests wait on
`rx.wait_for(n)` (progress) instead of sleeping.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    """One request the receiver got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class Receiver:
    """The running receiver's address, what it got and how it answers."""

    server: ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    respond: Callable[[Received], tuple[int, dict[str, str], bytes]] | None = None
    lock: threading.Condition = field(default_factory=threading.Condition)

    def url(self, path: str = "/") -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def answer(self, received: Received) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            self.requests.append(received)
            status = self.statuses.pop(0) if self.statuses else None
            self.lock.notify_all()
        if status is not None:
            return status, {}, b"scripted"
        if self.respond is not None:
            return self.respond(received)
        return 200, {}, b"ok"

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """Block until `count` requests arrived (or fail after `timeout`)."""
        with self.lock:
            if not self.lock.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(f"{len(self.requests)} of {count} requests")
            return list(self.requests)


def _handler(receiver_box: list[Receiver]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            received = Received(
                "POST", self.path, {k: v for k, v in self.headers.items()}, body
            )
            status, headers, payload = receiver_box[0].answer(received)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args) -> None:
            pass

    return Handler


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    """A receiver on 127.0.0.1 and an ephemeral port, stopped on exit."""
    box: list[Receiver] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(box))
    server.daemon_threads = True
    receiver = Receiver(server)
    box.append(receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()

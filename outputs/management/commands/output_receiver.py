"""Run a local receiver for outputs (the demo's stand-in for Sumo or Splunk).

manage.py output_receiver                      127.0.0.1:8766
manage.py output_receiver --port 9000 --fail-every 10
manage.py output_receiver --port 0 --quiet     an ephemeral port, no line per request
"""

from __future__ import annotations

import signal

from django.core.management.base import BaseCommand

from outputs.receiver import ReceiverServer

DEFAULT_PORT = 8766


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = "Receive output deliveries on a local port and count what arrives."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=DEFAULT_PORT)
        parser.add_argument(
            "--fail-every",
            type=int,
            default=0,
            help="Answer every Nth request with 503 (to watch retries).",
        )
        parser.add_argument("--quiet", action="store_true", help="No line per request.")

    def handle(self, *args, host: str, port: int, fail_every: int, **options):
        echo = None if options["quiet"] else self.stdout.write
        server = ReceiverServer(host, port, fail_every=fail_every, echo=echo)
        self.stdout.write(
            f"Output receiver listening on {server.url}, stats at "
            f"{server.url}/_receiver/stats",
        )
        self.stdout.flush()
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()

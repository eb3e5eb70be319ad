"""`python manage.py knowbe4_sandbox`: run the KnowBe4 Events API simulator.

`make run` starts it on 127.0.0.1:8765 with the key in KNOWBE4_SANDBOX_API_KEY;
the defaults make a new source reach Collecting within a minute (10 days of
200 events, a quota generous enough for a demo). Tests start it with
`--port 0` and read the real port from the first line it prints.

It accepts well-known test keys and serves made-up data, so it refuses to start
with DEBUG off (unless `--allow-production`) and binds only to loopback.
"""

from __future__ import annotations

import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from collectors.knowbe4.sandbox import (
    SandboxServer,
    default_api_key,
    is_loopback_host,
)


class Command(BaseCommand):
    help = "Run a local simulator of the KnowBe4 User Event API."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--host",
            default="127.0.0.1",
            help="A loopback address (default 127.0.0.1).",
        )
        parser.add_argument(
            "--allow-production",
            action="store_true",
            help="Start even though DEBUG is off (a staging lab, a benchmark).",
        )
        parser.add_argument("--port", type=int, default=8765)
        parser.add_argument(
            "--api-key",
            action="append",
            dest="api_keys",
            help="A valid key (repeatable). Default: env KNOWBE4_SANDBOX_API_KEY, "
            "else a generated one.",
        )
        parser.add_argument("--seed", default="1")
        parser.add_argument("--days", type=int, default=10)
        parser.add_argument("--events-per-day", type=int, default=200)
        parser.add_argument(
            "--total-events",
            type=int,
            default=None,
            help="Spread this many events over the closed days (backfills).",
        )
        parser.add_argument("--seats", type=int, default=100_000)
        parser.add_argument("--no-rate-limit", action="store_true")
        parser.add_argument("--no-quota", action="store_true")

    def handle(self, *args, **opts) -> None:
        if not settings.DEBUG and not opts["allow_production"]:
            raise CommandError(
                "The KnowBe4 sandbox is for development and refuses to start with "
                "DEBUG off; pass --allow-production to start it anyway."
            )
        if not is_loopback_host(opts["host"]):
            raise CommandError(
                f"--host {opts['host']!r}: the sandbox binds only to a loopback "
                "address (127.0.0.1, ::1 or localhost)."
            )
        keys = opts["api_keys"] or [default_api_key()]
        server = SandboxServer(
            host=opts["host"],
            port=opts["port"],
            api_keys=keys,
            seed=opts["seed"],
            days=opts["days"],
            events_per_day=opts["events_per_day"],
            total_events=opts["total_events"],
            seats=opts["seats"],
            rate_limit=not opts["no_rate_limit"],
            quota=not opts["no_quota"],
        )
        total = server.state.warm()
        limits = []
        if opts["no_rate_limit"]:
            limits.append("rate limit off")
        if opts["no_quota"]:
            limits.append("quota off")
        self.stdout.write(
            f"Sandbox listening on {server.url}, API key {keys[0]}"
            f" ({total} events over {opts['days']} days + today"
            + "".join(f", {limit}" for limit in limits)
            + ")"
        )
        self.stdout.flush()
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit))
        try:
            server.serve_forever()
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            server.httpd.server_close()

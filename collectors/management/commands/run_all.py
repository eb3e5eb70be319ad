"""Run the web app, a django-q2 cluster and the KnowBe4 sandbox together.

`make run` calls this. One Ctrl-C (or SIGTERM) stops all of them; if one
of them dies, the others are stopped too, so nothing is left half-running.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand

SANDBOX_ADDR = ("127.0.0.1", 8765)
SANDBOX_ENTRY = "Sandbox (local)|http://127.0.0.1:8765"


def sandbox_api_key() -> str:
    """The sandbox's key: generated once into data/, so it survives restarts."""
    path = settings.DATA_DIR / "sandbox_api_key"
    if not path.exists():
        settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def _interrupt(signum, frame) -> None:
    """Treat SIGTERM like Ctrl-C, so both stop every child the same way."""
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = "Start the web app on 127.0.0.1:8000, a qcluster and the sandbox."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--addr", default="127.0.0.1:8000")
        parser.add_argument(
            "--no-sandbox", action="store_true", help="Do not start the sandbox."
        )

    def handle(self, *args, addr: str, no_sandbox: bool, **options) -> None:
        env = dict(os.environ)
        py = [sys.executable, "manage.py"]
        commands = [
            [*py, "runserver", addr, "--noreload"],
            [*py, "qcluster"],
        ]
        if not no_sandbox:
            key = sandbox_api_key()
            extra = [e for e in env.get("KNOWBE4_EXTRA_BASE_URLS", "").split(",") if e]
            env["KNOWBE4_EXTRA_BASE_URLS"] = ",".join([*extra, SANDBOX_ENTRY])
            env["KNOWBE4_SANDBOX_API_KEY"] = key
            host, port = SANDBOX_ADDR
            commands.append(
                [*py, "knowbe4_sandbox", "--host", host, "--port", str(port)]
            )
            self.stdout.write(
                self.style.SUCCESS(
                    f"Sandbox: choose Base URL 'Sandbox (local)' and API key {key}"
                )
            )
        self.stdout.write(f"Open http://{addr}/ (Ctrl-C stops everything).")
        procs = [subprocess.Popen(cmd, env=env) for cmd in commands]  # noqa: S603
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            while all(p.poll() is None for p in procs):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 15
            for p in procs:
                try:
                    p.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()

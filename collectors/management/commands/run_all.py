"""Run the web app, a django-q2 cluster, the KnowBe4 sandbox and a local
output receiver together.

`make run` calls this. It makes sure the `admin` account exists, starts the
processes, waits until the web app answers and then prints what the
user needs (the URL, the one-time admin password, the sandbox key) LAST, in
one block, so it is not buried under the children's start-up output.

Each child runs in its own process group, so only this command receives the
terminal's Ctrl-C; it then stops every group with SIGTERM and, after a short
grace period, SIGKILL (django-q2's workers included), so one Ctrl-C (or
SIGTERM) ends everything within a few seconds. If one child dies, the others
are stopped too, so nothing is left half-running.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from alerts.demo import ensure_demo
from collectors.management.commands.ensure_admin import AdminAccount, ensure_admin
from outputs.demo import ensure_demo_output

SANDBOX_HOST = "127.0.0.1"
SANDBOX_PORT = 8765
# `manage.py output_receiver`: where the demo output delivers.
RECEIVER_PORT = 8766
# SIGTERM, then SIGKILL after this: Ctrl-C must end everything within 5 s.
STOP_GRACE_SECONDS = 2.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
READY_TIMEOUT_SECONDS = 120.0


def sandbox_api_key(name: str = "sandbox_api_key") -> str:
    """A sandbox key (the events one, or `sandbox_reporting_api_key`, the
    Reporting API's own): generated once into data/, so it survives restarts."""
    path = settings.DATA_DIR / name
    if not path.exists():
        settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def sandbox_entry(port: int) -> str:
    """The KNOWBE4_EXTRA_BASE_URLS entry that offers the local sandbox."""
    return f"Sandbox (local)|http://{SANDBOX_HOST}:{port}"


def parse_addr(addr: str) -> tuple[str, int]:
    """'host:port' or 'port' -> (host, port), refusing anything else clearly."""
    host, _, port = addr.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise CommandError(f"--addr {addr!r}: expected host:port, e.g. 127.0.0.1:8000")
    return host or "127.0.0.1", int(port)


def banner(
    url: str,
    admin: AdminAccount,
    sandbox_key: str | None,
    demo: list[str] = (),
    reporting_key: str | None = None,
) -> str:
    """The start-up block: where to go, how to sign in, which keys to use."""
    lines = [f"knowbe4sumo is running at {url}", *admin.lines()]
    if sandbox_key:
        lines += [
            "KnowBe4 sandbox: add a source with Base URL 'Sandbox (local)'",
            f"  and API key {sandbox_key}",
        ]
        if reporting_key:
            lines += [
                "KnowBe4 KMSAT Reporting sandbox: Region 'Sandbox (local)'",
                f"  and API key {reporting_key}",
            ]
        lines += list(demo)
    lines.append("Ctrl-C stops everything.")
    rule = "=" * max(len(line) for line in lines)
    return "\n".join([rule, *lines, rule])


def _interrupt(signum, frame) -> None:
    """Treat SIGTERM like Ctrl-C, so both stop every child the same way."""
    raise KeyboardInterrupt


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until_listening(procs, host: str, port: int, timeout: float) -> bool:
    """Wait until host:port accepts connections; False if a child died first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            return False
        if _listening(host, port):
            return True
        time.sleep(0.2)
    return False


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


@contextlib.contextmanager
def _uninterruptible():
    """Ignore SIGINT and SIGTERM for the duration (the previous handlers come
    back after), so a second signal cannot abort the stopping half-way."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_all(procs, grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM every child's process group, SIGKILL what is left after `grace`.

    Killing the group, not only the child, also ends django-q2's worker
    processes, which would otherwise outlive their cluster. A second signal
    while stopping is ignored: `kill -- -PGID` of `make run` sends SIGTERM to
    make and to this command, and make forwards its own to this command, so
    it came twice; the second one's KeyboardInterrupt ended this function
    after the first child and left the qcluster, the sandbox and the output
    receiver running, still holding their ports.
    """
    with _uninterruptible():
        _stop(procs, grace)


def _stop(procs, grace: float) -> None:
    for p in procs:
        _signal_group(p, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(0.05, deadline - time.monotonic()))
    for p in procs:
        _signal_group(p, signal.SIGKILL)  # the group may outlive its leader
        if p.poll() is None:
            p.wait()


class Command(BaseCommand):
    help = "Start the web app (127.0.0.1:8000 or --addr), a qcluster and the sandbox."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--addr", default="127.0.0.1:8000")
        parser.add_argument(
            "--no-sandbox",
            action="store_true",
            help="Do not start the sandbox, the output receiver or the demo.",
        )
        parser.add_argument(
            "--receiver-port",
            type=int,
            default=int(os.environ.get("OUTPUT_RECEIVER_PORT", RECEIVER_PORT)),
            help=f"Port of the demo's output receiver (default {RECEIVER_PORT}).",
        )
        parser.add_argument(
            "--sandbox-port",
            type=int,
            default=int(os.environ.get("SANDBOX_PORT", SANDBOX_PORT)),
            help=f"Port of the local sandbox (default {SANDBOX_PORT}).",
        )

    def handle(
        self,
        *args,
        addr: str,
        no_sandbox: bool,
        sandbox_port: int,
        receiver_port: int,
        **options,
    ) -> None:
        if not settings.DEBUG:
            raise CommandError(
                "run_all (make run) is for local development and refuses to run "
                "with DEBUG off: in production run a WSGI server and "
                "manage.py qcluster (see the README)."
            )
        host, port = parse_addr(addr)
        admin = ensure_admin()
        env = dict(os.environ)
        # Links in notifications point at this web app unless told otherwise.
        env.setdefault("SITE_URL", f"http://{host}:{port}")
        py = [sys.executable, "manage.py"]
        commands = [
            [*py, "runserver", f"{host}:{port}", "--noreload"],
            [*py, "qcluster"],
        ]
        key = reporting_key = None
        demo: list[str] = []
        if not no_sandbox:
            key = sandbox_api_key()
            reporting_key = sandbox_api_key("sandbox_reporting_api_key")
            env["KNOWBE4_SANDBOX_REPORTING_API_KEY"] = reporting_key
            extra = [e for e in env.get("KNOWBE4_EXTRA_BASE_URLS", "").split(",") if e]
            env["KNOWBE4_EXTRA_BASE_URLS"] = ",".join(
                [*extra, sandbox_entry(sandbox_port)]
            )
            env["KNOWBE4_SANDBOX_API_KEY"] = key
            # The demo's webhook connection posts to the sandbox on loopback.
            env["EGRESS_ALLOW_PRIVATE"] = "1"
            demo = ensure_demo(f"http://{SANDBOX_HOST}:{sandbox_port}")
            # The demo output delivers the collected messages to a local
            # receiver, which prints a line per request it takes.
            receiver = f"http://{SANDBOX_HOST}:{receiver_port}"
            demo += ensure_demo_output(receiver)
            commands.append(
                [
                    *py,
                    "knowbe4_sandbox",
                    "--host",
                    SANDBOX_HOST,
                    "--port",
                    str(sandbox_port),
                ]
            )
            commands.append(
                [
                    *py,
                    "output_receiver",
                    "--host",
                    SANDBOX_HOST,
                    "--port",
                    str(receiver_port),
                ]
            )
        signal.signal(signal.SIGTERM, _interrupt)
        procs = []
        try:
            procs = [
                subprocess.Popen(cmd, env=env, start_new_session=True)  # noqa: S603
                for cmd in commands
            ]
            if wait_until_listening(procs, host, port, READY_TIMEOUT_SECONDS):
                url = f"http://{host}:{port}/"
                self.stdout.write(
                    self.style.SUCCESS(banner(url, admin, key, demo, reporting_key))
                )
            else:  # Still say how to sign in: a generated password is shown once.
                self.stderr.write("The web app did not start; see the output above.")
                self.stdout.write("\n".join(admin.lines()))
            while all(p.poll() is None for p in procs):
                time.sleep(0.5)
            self.stderr.write("A process stopped; stopping the others.")
        except KeyboardInterrupt:
            self.stdout.write("Stopping…")
        finally:
            stop_all(procs)

"""A calm `make run`: the start-up block, the admin account lines, quiet
request logging and a stop that leaves no process behind."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from collectors.management.commands import run_all
from collectors.management.commands.ensure_admin import AdminAccount, ensure_admin
from knowbe4sumo.logfilters import QuietRequests


def test_it_prints_a_generated_password_once_then_says_how_to_reset_it(db, monkeypatch):
    monkeypatch.delenv("ADMIN_PASSWORD", raising=False)
    first = ensure_admin()
    assert first.created and first.password
    assert get_user_model().objects.get(username="admin").check_password(first.password)
    assert first.password in "\n".join(first.lines())
    second = ensure_admin()
    text = "\n".join(second.lines())
    assert second.password is None and first.password not in text
    assert "manage.py changepassword admin" in text


def test_it_never_prints_a_password_taken_from_the_environment(db, monkeypatch):
    monkeypatch.setenv("ADMIN_PASSWORD", "from-the-env-123")
    account = ensure_admin()
    assert "from-the-env-123" not in "\n".join(account.lines())
    assert "ADMIN_PASSWORD" in "\n".join(account.lines())


def test_it_the_command_form_prints_the_same_lines(db, capsys, monkeypatch):
    monkeypatch.delenv("ADMIN_PASSWORD", raising=False)
    ensure_admin()
    call_command("ensure_admin")
    assert "changepassword admin" in capsys.readouterr().out


def test_it_ends_the_banner_with_url_password_and_sandbox_key():
    text = run_all.banner(
        "http://127.0.0.1:8001/",
        AdminAccount(created=True, password="pw-once"),
        "sandbox-key-xyz",
    )
    lines = text.splitlines()
    assert lines[0] == lines[-1] and set(lines[0]) == {"="}
    body = "\n".join(lines[1:-1])
    for needle in ("http://127.0.0.1:8001/", "pw-once", "sandbox-key-xyz", "Ctrl-C"):
        assert needle in body


def test_it_prints_the_reporting_sandbox_key_with_its_region():
    text = run_all.banner(
        "http://127.0.0.1:8001/",
        AdminAccount(created=True, password="pw-once"),
        "sandbox-key-xyz",
        reporting_key="reporting-key-abc",
    )
    assert "Region 'Sandbox (local)'" in text and "reporting-key-abc" in text


@pytest.mark.parametrize(
    ("addr", "expected"),
    [("127.0.0.1:8001", ("127.0.0.1", 8001)), ("8002", ("127.0.0.1", 8002))],
)
def test_it_reads_the_port_of_make_run(addr, expected):
    assert run_all.parse_addr(addr) == expected


@pytest.mark.parametrize("addr", ["127.0.0.1:", "host:abc", "127.0.0.1:70000", ""])
def test_it_refuses_a_bad_address_clearly(addr):
    with pytest.raises(CommandError, match="expected host:port"):
        run_all.parse_addr(addr)


def test_it_points_the_sandbox_base_url_at_the_chosen_port():
    assert run_all.sandbox_entry(9123) == "Sandbox (local)|http://127.0.0.1:9123"


def _server_record(line: str, status: int) -> logging.LogRecord:
    record = logging.LogRecord(
        "django.server",
        logging.INFO,
        __file__,
        1,
        '"%s" %s %s',
        (line, str(status), "12"),
        None,
    )
    record.status_code = status
    return record


@pytest.mark.parametrize(
    ("line", "status", "shown"),
    [
        ("GET /static/css/app.css HTTP/1.1", 200, False),
        ("GET /collection/status/?sources=1 HTTP/1.1", 200, False),
        ("GET /collection/status/ HTTP/1.1", 500, True),
        ("GET /static/missing.css HTTP/1.1", 404, True),
        ("GET / HTTP/1.1", 200, True),
        ("POST /sources/1/restart/ HTTP/1.1", 302, True),
    ],
)
def test_it_logs_requests_quietly_at_the_default_level(line, status, shown):
    logger = logging.getLogger("django.server")
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        assert QuietRequests().filter(_server_record(line, status)) is shown
        logger.setLevel(logging.DEBUG)
        assert QuietRequests().filter(_server_record(line, status)) is True
    finally:
        logger.setLevel(old)


def test_it_stops_a_child_that_ignores_sigterm_and_its_own_children(tmp_path):
    """stop_all ends the whole process group even when SIGTERM is ignored (as a
    busy worker may): nothing survives it."""
    pidfile = tmp_path / "grandchild.pid"
    code = textwrap.dedent(
        f"""
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stubborn = (
            "import signal, time; "
            "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
        )
        child = subprocess.Popen([sys.executable, "-c", stubborn])
        open({str(pidfile)!r}, "w").write(str(child.pid))
        time.sleep(600)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        for _ in range(600):  # wait (on progress, not time) for the grandchild
            if pidfile.exists() and pidfile.read_text():
                break
            proc.poll()
            assert proc.returncode is None
            time.sleep(0.05)
        grandchild = int(pidfile.read_text())
        run_all.stop_all([proc], grace=0.2)
        assert proc.poll() is not None
        with pytest.raises(ProcessLookupError):
            for _ in range(200):  # the kernel reaps the orphan asynchronously
                os.kill(grandchild, 0)
                time.sleep(0.05)
            os.kill(grandchild, 0)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_it_refuses_to_run_with_debug_off(settings, db, monkeypatch):
    settings.DEBUG = False
    started = []
    monkeypatch.setattr(run_all.subprocess, "Popen", lambda *a, **k: started.append(a))
    with pytest.raises(CommandError, match="refuses to run with DEBUG off"):
        call_command("run_all", "--addr", "127.0.0.1:0")
    assert started == []
    assert not get_user_model().objects.exists()


def test_it_stops_every_child_when_a_second_sigterm_comes_while_stopping(
    monkeypatch,
):
    """`kill -- -PGID` of `make run` signals this command and make, which
    forwards its SIGTERM: the second one, arriving while the children were
    being stopped, raised KeyboardInterrupt out of stop_all and the children
    after the first kept running."""
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    procs = [subprocess.Popen(sleeper, start_new_session=True) for _ in range(3)]
    before = signal.signal(signal.SIGTERM, run_all._interrupt)
    real = run_all._signal_group
    sent = []

    def second_sigterm_on_first_call(proc, sig):
        if not sent:
            sent.append(sig)
            os.kill(os.getpid(), signal.SIGTERM)  # make's forwarded SIGTERM
        real(proc, sig)

    monkeypatch.setattr(run_all, "_signal_group", second_sigterm_on_first_call)
    try:
        try:
            run_all.stop_all(procs, grace=0.2)
        except KeyboardInterrupt:
            pytest.fail("the second SIGTERM aborted stop_all")
        assert sent and [p.poll() is not None for p in procs] == [True] * 3
        assert signal.getsignal(signal.SIGTERM) is run_all._interrupt  # restored
    finally:
        signal.signal(signal.SIGTERM, before)
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

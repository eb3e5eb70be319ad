"""A web request that finds SQLite busy past its timeout answers 503 with a
plain "The database is busy; try again" page, never a 500."""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager

import pytest
from django.db import OperationalError, connection
from django.test import Client, RequestFactory
from django.urls import reverse

from collectors import busy
from collectors.models import HostedCollector

sqlite_only = pytest.mark.skipif(
    connection.vendor != "sqlite", reason="SQLite's write lock"
)


@contextmanager
def short_busy_timeout(seconds: float):
    """Reconnect with a short busy timeout (the real one is 20 s)."""
    options = connection.settings_dict["OPTIONS"]
    saved = options.get("timeout")
    connection.close()
    options["timeout"] = seconds
    try:
        yield
    finally:
        connection.close()
        options["timeout"] = saved


@contextmanager
def write_lock_held():
    """Another connection holds SQLite's write lock for the whole block."""
    other = sqlite3.connect(connection.settings_dict["NAME"], timeout=5)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.rollback()
        other.close()


@sqlite_only
def test_it_answers_503_when_sqlite_stays_locked(transactional_db, admin_user):
    client = Client()
    client.force_login(admin_user)
    with short_busy_timeout(0.2), write_lock_held():
        resp = client.post(reverse("collector-add"), {"name": "Production"})
    assert resp.status_code == 503
    assert "The database is busy; try again" in resp.content.decode()
    assert resp["Retry-After"] == str(busy.RETRY_AFTER_SECONDS)
    assert not HostedCollector.objects.exists()
    # Once the lock is gone the same request works.
    assert (
        client.post(reverse("collector-add"), {"name": "Production"}).status_code == 302
    )
    assert HostedCollector.objects.filter(name="Production").exists()


def test_it_keeps_other_database_errors_as_errors():
    middleware = busy.DatabaseBusyMiddleware(lambda request: None)
    request = RequestFactory().get("/")
    locked = OperationalError("database is locked")
    assert middleware.process_exception(request, locked).status_code == 503
    assert (
        middleware.process_exception(request, OperationalError("no such table")) is None
    )
    assert middleware.process_exception(request, ValueError("x")) is None


def test_the_error_handler_answers_503_for_a_busy_database_outside_a_view():
    request = RequestFactory().get("/")
    try:
        raise OperationalError("database is locked")
    except OperationalError:
        resp = busy.server_error(request)
    assert resp.status_code == 503
    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        assert busy.server_error(request).status_code == 500

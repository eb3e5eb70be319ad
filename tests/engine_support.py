"""Helpers shared by the collection-engine tests (C1's test files).

Time is frozen (ticking) at a fixed noon UTC so that "yesterday" and the
settle delay never depend on when the suite runs; the sandbox is started
inside that time so its window of days is the same on every run.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future
from datetime import UTC, date, datetime, timedelta

import pytest
import time_machine

from collectors.engine import store as engine_store
from collectors.knowbe4.sandbox import SandboxServer
from collectors.models import LogMessage, Source
from tests.cast import make_source
from tests.sandbox_support import running_sandbox

NOON = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
TODAY = NOON.date()
YESTERDAY = TODAY - timedelta(days=1)


@pytest.fixture
def clock() -> Iterator[time_machine.Coordinates]:
    """Time at NOON, ticking (the limiter and the sandbox need time to pass)."""
    with time_machine.travel(NOON, tick=True) as traveller:
        yield traveller


@pytest.fixture
def sb(clock) -> Iterator[SandboxServer]:
    """A sandbox with both limits on, 10 days of 50 events, started at NOON."""
    with running_sandbox(days=10, events_per_day=50) as server:
        yield server


def use_sandbox(settings, server: SandboxServer) -> str:
    """Allow the sandbox as a Base URL; return its key for `Source.base_url_key`."""
    settings.KNOWBE4_EXTRA_BASE_URLS = [f"Sandbox|{server.url}"]
    return "x-sandbox"


def sandbox_source(settings, server: SandboxServer, collector, **kw) -> Source:
    kw.setdefault("api_key", server.api_key)
    return make_source(collector, base_url_key=use_sandbox(settings, server), **kw)


def api_requests(server: SandboxServer) -> list:
    """The sandbox's log of /events requests (the control API is not logged)."""
    return [r for r in server.requests if r.path.startswith("/events")]


def stored_ids(source: Source | int) -> list[str]:
    pk = source if isinstance(source, int) else source.pk
    return list(
        LogMessage.objects.filter(source_id=pk).values_list("event_id", flat=True)
    )


def lookback(days: int = 7, last: date = YESTERDAY) -> tuple[date, date]:
    """The first run's window: `days` closed days ending `last`."""
    return last - timedelta(days=days - 1), last


class InlinePool:
    """Stands in for the fetch thread's pool: each page is fetched when it
    is asked for ahead, so it has always arrived when the run wants it (a
    backfill whose database, not KnowBe4, is the slow side)."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __enter__(self) -> InlinePool:
        return self

    def __exit__(self, *exc) -> bool:
        return False

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the run as is
            future.set_exception(exc)
        return future


class _LateFuture(Future):
    """A page that has not arrived when the run asks for it: fetched only
    once the run waits for it (`result`)."""

    def __init__(self, fn, args) -> None:
        super().__init__()
        self._call = (fn, args)

    def result(self, timeout=None):
        if not self.done():
            fn, args = self._call
            try:
                self.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001
                self.set_exception(exc)
        return super().result(timeout)


class LatePool(InlinePool):
    """Stands in for the fetch thread's pool: every page must be waited for
    (KnowBe4, not the database, is the slow side)."""

    def submit(self, fn, *args) -> Future:
        return _LateFuture(fn, args)


THIEF = "thief:1:x"


def steal_lease_before_each_page(monkeypatch, source: Source) -> None:
    """Another worker takes the source's lease while each page is read, so
    the run's checkpoint UPDATE finds it is no longer the owner."""
    real = engine_store.store_page

    def store(ctx, *args, **kw):
        Source.objects.filter(pk=source.pk).update(lease_owner=THIEF)
        return real(ctx, *args, **kw)

    monkeypatch.setattr(engine_store, "store_page", store)

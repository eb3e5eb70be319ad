"""Pages committed together (`engine.store.Batch`): pages that arrived while
the one before was stored share a transaction with the checkpoint after the
last of them; a page the run must wait for (KnowBe4's answer, the rate
limiter) commits the others first. Whatever ends a batch, every event is
stored once and every request sent stays counted."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection

from collectors import crypto, engine, ledger, lifecycle, ratelimit
from collectors.choices import ErrorType
from collectors.engine import daypages
from collectors.engine import store as engine_store
from collectors.models import ApiKeyUsage, HealthEvent, LogMessage
from tests import engine_support as es
from tests.sandbox_support import running_sandbox

clock, sb = es.clock, es.sb


@pytest.fixture
def fast(clock):
    """A sandbox with its limits off (10 days of 50 events: a page a day)."""
    with running_sandbox(days=10, events_per_day=50, rate_limit=False) as server:
        yield server


@pytest.fixture
def commits(monkeypatch) -> list:
    """The cursor day of each checkpoint UPDATE, one per commit."""
    seen, real = [], lifecycle.commit_page

    def spy(source, owner, **kw):
        seen.append(kw["cursor_day"])
        return real(source, owner, **kw)

    monkeypatch.setattr(lifecycle, "commit_page", spy)
    return seen


def test_it_commits_pages_that_have_arrived_together(
    settings, fast, collector, commits, monkeypatch
):
    settings.KNOWBE4_RATE_LIMIT = False
    settings.COLLECTION_BATCH_PAGES = 3
    monkeypatch.setattr(daypages, "ThreadPoolExecutor", es.InlinePool)
    source = es.sandbox_source(settings, fast, collector)

    result = engine.run(source.pk)

    assert (result.outcome, result.pages, result.stored) == ("caught_up", 7, 350)
    first, last = es.lookback()
    # Pages 3, 6 and 7 end the three transactions (7 days, a page each).
    assert commits == [first + timedelta(days=n) for n in (3, 6)] + [None]
    assert sorted(es.stored_ids(source)) == sorted(fast.event_ids(first, last))
    source.refresh_from_db()
    assert source.last_complete_day == last and source.cursor_day is None


def test_it_commits_each_page_alone_when_it_waits_for_the_next(
    settings, fast, collector, commits, monkeypatch
):
    settings.KNOWBE4_RATE_LIMIT = False
    monkeypatch.setattr(daypages, "ThreadPoolExecutor", es.LatePool)
    source = es.sandbox_source(settings, fast, collector)

    result = engine.run(source.pk)

    assert (result.pages, result.stored) == (7, 350)
    assert len(commits) == 7


class SlowTurns:
    """A limiter backend outside the database (as Redis is) that makes every
    second request wait its turn once, whatever the machine's speed."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.waited_with_pages: list[bool] = []  # was a batch open then?
        self.batches: list[engine_store.Batch] = []

    def try_acquire(self, key_hash, token, stale, api="events") -> float:
        if token not in self.tokens:
            self.tokens.append(token)
            if len(self.tokens) % 2 == 0:
                self.waited_with_pages.append(any(b.open for b in self.batches))
                return 0.01
        return 0.0

    def release(self, key_hash, token, ago=0.0, api="events") -> None:
        pass


@pytest.fixture
def watched(monkeypatch) -> list:
    """Every Batch the runs open, to look at while they wait."""
    batches, real_enter = [], engine_store.Batch.__enter__

    def enter(batch):
        batches.append(batch)
        return real_enter(batch)

    monkeypatch.setattr(engine_store.Batch, "__enter__", enter)
    return batches


def test_it_commits_before_the_rate_limiter_makes_it_wait(
    settings, fast, collector, monkeypatch, watched
):
    settings.KNOWBE4_RATE_LIMIT = True
    monkeypatch.setattr(daypages, "ThreadPoolExecutor", es.InlinePool)
    backend = SlowTurns()
    backend.batches = watched
    monkeypatch.setattr(ratelimit, "default_backend", lambda: backend)
    waits, real_sleep = [], ratelimit.time.sleep

    def sleep(seconds):
        waits.append([b for b in watched if b.open])
        real_sleep(seconds)

    monkeypatch.setattr(ratelimit.time, "sleep", sleep)
    source = es.sandbox_source(settings, fast, collector)

    result = engine.run(source.pk)

    assert (result.outcome, result.stored) == ("caught_up", 350)
    assert any(backend.waited_with_pages), "a wait came with pages uncommitted"
    assert waits and all(open_batches == [] for open_batches in waits)


def test_it_keeps_the_database_limiters_slots_out_of_a_batch(
    settings, fast, collector, monkeypatch, watched
):
    settings.KNOWBE4_RATE_LIMIT = True
    settings.REDIS_URL = ""  # The limiter's slots are rows of this database.
    monkeypatch.setattr(daypages, "ThreadPoolExecutor", es.InlinePool)
    backend = type(ratelimit.default_backend())
    assert backend is ratelimit.DatabaseBackend
    real_try, during = backend.try_acquire, []

    def try_acquire(self, *args, **kw):
        during.append([b for b in watched if b.open])
        return real_try(self, *args, **kw)

    monkeypatch.setattr(backend, "try_acquire", try_acquire)
    source = es.sandbox_source(settings, fast, collector)

    result = engine.run(source.pk)

    assert (result.outcome, result.stored) == ("caught_up", 350)
    assert len(during) >= 7 and all(open_batches == [] for open_batches in during)


def test_it_keeps_the_pages_stored_before_knowbe4_fails(
    settings, fast, collector, monkeypatch
):
    settings.KNOWBE4_RATE_LIMIT = False
    monkeypatch.setattr(daypages, "ThreadPoolExecutor", es.InlinePool)
    source = es.sandbox_source(settings, fast, collector)
    real, calls = engine_store.store_page, []

    def store(ctx, *args, **kw):
        calls.append(1)
        if len(calls) == 2:  # Requests 1-3 are sent; the 4th one fails.
            fast.inject("status", count=20, status=503)
        return real(ctx, *args, **kw)

    monkeypatch.setattr(engine_store, "store_page", store)

    result = engine.run(source.pk)

    assert result.pages == 3
    assert LogMessage.objects.filter(source=source).count() == 150
    source.refresh_from_db()
    first, _ = es.lookback()
    assert source.cursor_day == first + timedelta(days=3)
    assert HealthEvent.objects.filter(
        source=source, error_type=ErrorType.THIRD_PARTY_GENERIC
    ).exists()


def test_it_rolls_back_a_batch_whose_lease_was_lost_and_still_counts_its_requests(
    settings, fast, collector, monkeypatch
):
    settings.KNOWBE4_RATE_LIMIT = False
    settings.COLLECTION_BATCH_PAGES = 3
    monkeypatch.setattr(daypages, "ThreadPoolExecutor", es.InlinePool)
    source = es.sandbox_source(settings, fast, collector)
    es.steal_lease_before_each_page(monkeypatch, source)

    result = engine.run(source.pk)

    assert result.outcome == "lease_lost" and result.pages == 0
    assert LogMessage.objects.count() == 0
    source.refresh_from_db()
    assert source.cursor_day is None and source.lease_owner == es.THIEF
    # Four requests went out (pages 1-3 and page 4 ahead), two of them while the
    # batch was open: their counts, rolled back with it, were taken again.
    sent = len(es.api_requests(fast))
    assert sent == 4
    key = crypto.key_fingerprint(fast.api_key)
    assert ledger.window("events", key).used == sent


def test_it_frees_the_limiter_slot_of_the_answer_it_was_waiting_for_when_abandoned(
    settings, fast, collector, monkeypatch
):
    settings.KNOWBE4_RATE_LIMIT = True
    settings.REDIS_URL = ""  # The slots are rows: they can be looked at.
    monkeypatch.setattr(daypages, "ThreadPoolExecutor", es.LatePool)
    source = es.sandbox_source(settings, fast, collector)
    # Taken while page 1 was read: the commit before waiting for page 2 fails.
    es.steal_lease_before_each_page(monkeypatch, source)

    result = engine.run(source.pk)

    assert result.outcome == "lease_lost" and result.requests == 2
    usage = ApiKeyUsage.objects.get(key_hash=crypto.key_fingerprint(fast.api_key))
    assert len(usage.recent) == 2
    assert all(done for _at, _token, done in usage.recent)  # none left in flight


def test_it_counts_a_batchs_requests_exactly_in_a_few_updates(
    settings, clock, collector, monkeypatch
):
    settings.KNOWBE4_RATE_LIMIT = False
    settings.COLLECTION_BATCH_PAGES = 10
    monkeypatch.setattr(daypages, "ThreadPoolExecutor", es.InlinePool)
    table = connection.ops.quote_name(ApiKeyUsage._meta.db_table)
    updates = []

    def spy(execute, sql, params, many, context):
        if sql.startswith(f"UPDATE {table}"):
            updates.append(sql)
        return execute(sql, params, many, context)

    # Five pages a day: a batch takes ten pages that have all arrived.
    with running_sandbox(days=10, events_per_day=500, rate_limit=False) as server:
        source = es.sandbox_source(settings, server, collector)
        with connection.execute_wrapper(spy):
            result = engine.run(source.pk)
        sent = len(es.api_requests(server))

    assert result.outcome == "caught_up" and result.stored == 3500
    assert sent == result.requests == 35
    key = crypto.key_fingerprint(server.api_key)
    assert ledger.window("events", key).used == sent
    # The requests sent while a batch was open share its block's UPDATE (and
    # the one that gives back what was not sent), not one UPDATE each: 18
    # UPDATEs for 35 requests, where there were 36 (the key's first request
    # tries the UPDATE twice).
    assert len(updates) < sent * 0.6

"""SQLite during a run (`engine.sqlite`): the WAL is checkpointed by a thread
of its own instead of in the run's commits, the run's connection keeps a
bigger page cache, and its own settings come back after the run. A clean
page goes in without a savepoint; a page with something to quarantine keeps
one, so that it is stored whole or not at all."""

from __future__ import annotations

import os
import sqlite3
import time

import pytest
from django.db import OperationalError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from collectors import engine
from collectors.engine import sqlite as engine_sqlite
from collectors.engine import store as engine_store
from collectors.models import LogMessage, QuarantinedEvent
from tests import engine_support as es
from tests.cast import make_messages
from tests.sandbox_support import running_sandbox

clock, sb = es.clock, es.sb

sqlite_only = pytest.mark.skipif(
    connection.vendor != "sqlite", reason="SQLite's WAL and page cache"
)


def pragma(name: str) -> int:
    return connection.connection.execute(f"PRAGMA {name}").fetchone()[0]


def wal_pages(path: str) -> int:
    """The WAL's length in pages, read by a PASSIVE checkpoint of another
    connection (it copies back what it can and changes nothing else)."""
    db = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        return db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
    finally:
        db.close()


@sqlite_only
@pytest.mark.django_db
def test_it_tunes_the_run_connection_and_puts_its_settings_back(settings):
    settings.COLLECTION_SQLITE_WAL_PAGES = 5000
    settings.COLLECTION_SQLITE_CACHE_KB = 8192
    connection.ensure_connection()
    usual = pragma("wal_autocheckpoint"), pragma("cache_size")

    with engine_sqlite.tuned() as checkpointer:
        assert pragma("wal_autocheckpoint") == 5000
        assert pragma("cache_size") == -8192
        assert checkpointer.is_alive()
        assert os.path.samefile(checkpointer.path, connection.settings_dict["NAME"])

    assert not checkpointer.is_alive()
    assert (pragma("wal_autocheckpoint"), pragma("cache_size")) == usual


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_it_checkpoints_what_the_run_committed_in_its_own_thread(settings, source):
    settings.COLLECTION_SQLITE_CHECKPOINT_SECONDS = 0.01
    with engine_sqlite.tuned() as checkpointer:
        make_messages(source, 200)
        seen = checkpointer.checkpoints
        # Progress, not a sleep: a whole checkpoint begun after the commit.
        deadline = time.monotonic() + 60
        while checkpointer.checkpoints < seen + 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        busy, pages, copied = checkpointer.last

    assert checkpointer.checkpoints > seen + 1
    assert busy == 0 and pages > 0
    assert copied == pages  # All of it back in the database file.


def write_pages(source, commits: int, first: int) -> None:
    """`commits` transactions of 1,000 messages each."""
    for n in range(commits):
        with transaction.atomic():
            make_messages(source, 1000, first=first + 1000 * n)


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_it_the_run_commits_never_stop_for_a_checkpoint_below_the_bound(
    settings, source
):
    # The thread never comes round (an hour's interval): only the run's own
    # connection could checkpoint, and below the bound it does not.
    settings.COLLECTION_SQLITE_CHECKPOINT_SECONDS = 3600
    settings.COLLECTION_SQLITE_WAL_PAGES = 100_000
    with engine_sqlite.tuned() as checkpointer:
        wal_pages(checkpointer.path)  # All copied back: the WAL starts over.
        write_pages(source, 8, first=0)
        tuned = wal_pages(checkpointer.path)
    assert checkpointer.checkpoints == 0

    # The same writes untuned: the connection checkpoints past 1,000 pages
    # and the WAL starts over.
    wal_pages(checkpointer.path)
    write_pages(source, 8, first=8000)
    untuned = wal_pages(checkpointer.path)

    assert tuned > 1000
    assert untuned < tuned


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_it_a_collection_run_is_checkpointed_beside_it(
    settings, collector, monkeypatch
):
    settings.COLLECTION_SQLITE_CHECKPOINT_SECONDS = 0.001
    started = []
    real = engine_sqlite.Checkpointer.start

    def start(self):
        started.append(self)
        real(self)

    monkeypatch.setattr(engine_sqlite.Checkpointer, "start", start)
    with running_sandbox(days=3, events_per_day=250, rate_limit=False) as server:
        source = es.sandbox_source(settings, server, collector)
        assert engine.run(source.pk).outcome == "caught_up"

    assert LogMessage.objects.filter(source=source).count() == 750
    [checkpointer] = started
    assert not checkpointer.is_alive()
    assert pragma("wal_autocheckpoint") == 1000  # SQLite's default, back


@pytest.mark.skipif(connection.vendor == "sqlite", reason="PostgreSQL only")
@pytest.mark.django_db
def test_it_leaves_postgresql_alone():
    with engine_sqlite.tuned() as checkpointer:
        assert checkpointer is None


@sqlite_only
@pytest.mark.django_db
def test_it_a_clean_page_goes_in_without_a_savepoint(source):
    writer = engine_store.MessageWriter(source)
    rows = writer.rows(events_of(3), timezone.now())

    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        stored, refused = writer.insert(rows, [], keep=lambda items: None)

    assert (stored, refused) == (3, [])
    assert not [q for q in queries if "SAVEPOINT" in q["sql"]]


@pytest.mark.django_db
def test_it_a_page_with_a_reject_keeps_it_in_one_savepoint_with_its_rows(
    source, monkeypatch
):
    writer = engine_store.MessageWriter(source)
    rows = writer.rows(events_of(3), timezone.now())
    rejected = [engine_store.events.Rejected(b"{}", "missing_id", "No id.")]

    def keep(items):
        assert [i.code for i in items] == ["missing_id"]
        raise RuntimeError("the quarantine could not be written")

    with transaction.atomic():
        with pytest.raises(RuntimeError):
            writer.insert(rows, rejected, keep=keep)
        # Neither the rows nor the reject: the page's savepoint rolled back.
        assert LogMessage.objects.filter(source=source).count() == 0
        assert QuarantinedEvent.objects.count() == 0


@sqlite_only
@pytest.mark.django_db
def test_it_a_refused_clean_page_still_goes_row_by_row(source, monkeypatch):
    """SQLite undoes the failed page statement by itself; the rows then go
    one by one in savepoints and only the refused one comes back."""
    writer = engine_store.MessageWriter(source)
    rows = writer.rows(events_of(3), timezone.now())
    poison = rows[1][1]
    real = engine_store.MessageWriter._insert

    def insert(batch):
        if any(row[1] == poison for row in batch):
            raise engine_store.DataError("value refused")
        return real(batch)

    monkeypatch.setattr(engine_store.MessageWriter, "_insert", staticmethod(insert))
    kept = []
    with transaction.atomic():
        stored, refused = writer.insert(rows, [], keep=kept.extend)

    assert stored == 2
    assert [r.event_id for r in refused] == [poison] == [r.event_id for r in kept]
    assert poison not in set(
        LogMessage.objects.filter(source=source).values_list("event_id", flat=True)
    )


def events_of(count: int) -> list[dict]:
    """Storable KnowBe4 events, each with its own id."""
    return [
        {
            "id": f"00000000-0000-4000-8000-{n:012d}",
            "occurred_date": f"2026-03-0{1 + n % 9}T10:00:00.000Z",
            "event_type": {"name": "training_completed"},
            "risk": {"level": 2},
            "user": {"email": f"user{n}@example.com"},
        }
        for n in range(count)
    ]


@sqlite_only
@pytest.mark.django_db
def test_it_runs_untuned_when_the_database_cannot_say_its_settings(monkeypatch):
    def broken():
        raise OperationalError("unable to open database file")

    monkeypatch.setattr(connection, "ensure_connection", broken)
    ran = []
    with engine_sqlite.tuned() as checkpointer:
        ran.append(True)

    assert checkpointer is None and ran == [True]

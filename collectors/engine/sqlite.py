"""SQLite: how a run's connection is tuned for the length of the run.

Two costs of a backfill's commits are moved out of the run's way:

- **WAL checkpoints.** In WAL mode a commit appends the pages it changed to
  the `-wal` file; a *checkpoint* later copies them back into the database
  file and, with synchronous=NORMAL, ends in two fsyncs. By default the
  connection whose commit takes the WAL past 1,000 pages runs that
  checkpoint itself, then and there. A page of 100 events changes about 100
  database pages (the unique index on random event ids), so the run stopped
  every few pages for the fsyncs: up to half of its wall time on this
  project's virtual disks. During a run, a thread with a connection of its
  own checkpoints what has been committed every COLLECTION_SQLITE_
  CHECKPOINT_SECONDS, PASSIVE (it never waits for or blocks the run, and
  sqlite3 releases the GIL while it copies and syncs). The run's connection
  checkpoints only once the WAL reaches COLLECTION_SQLITE_WAL_PAGES, so the
  WAL stays bounded and then starts over.
- **The page cache.** The default 2 MB holds a small part of the indexes a
  page's rows go into; the run's connection keeps COLLECTION_SQLITE_CACHE_KB.

Durability is unchanged: a commit is in the WAL either way; a checkpoint only
moves it. Should the thread fail, the run's connection still checkpoints at
the bound, and every other connection (web, workers) at 1,000 pages as ever.
After the run the connection's own settings are put back.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import DatabaseError, connection

logger = logging.getLogger(__name__)


@contextmanager
def tuned() -> Iterator[Checkpointer | None]:
    """The run's connection tuned, and its WAL checkpointed by a thread, while
    the block runs (SQLite in WAL mode on a file; elsewhere nothing changes).
    Yields the checkpointer, or None."""
    found = _wal_database()
    if found is None:
        yield None
        return
    path, usual = found
    _pragmas(
        wal_autocheckpoint=settings.COLLECTION_SQLITE_WAL_PAGES,
        cache_size=-settings.COLLECTION_SQLITE_CACHE_KB,
    )
    checkpointer = Checkpointer(path, settings.COLLECTION_SQLITE_CHECKPOINT_SECONDS)
    checkpointer.start()
    try:
        yield checkpointer
    finally:
        checkpointer.stop()
        _pragmas(**usual)


def _wal_database() -> tuple[str, dict[str, int]] | None:
    """(the database file, the connection's own settings) when the run's
    connection is SQLite in WAL mode on a file, else None."""
    if connection.vendor != "sqlite":
        return None
    try:
        connection.ensure_connection()
        raw = connection.connection
        if raw.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            return None
        path = next(
            (row[2] for row in raw.execute("PRAGMA database_list") if row[1] == "main"),
            "",
        )
        usual = {
            name: raw.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("wal_autocheckpoint", "cache_size")
        }
    except (sqlite3.Error, DatabaseError):  # The run reports its own failures.
        logger.warning("could not read the database's WAL settings", exc_info=True)
        return None
    return (path, usual) if path else None


def _pragmas(**values: int) -> None:
    """Set integer PRAGMAs on the run's connection. Nothing when it has gone
    (a new connection starts with the defaults)."""
    try:
        if connection.connection is not None:
            for name, value in values.items():
                connection.connection.execute(f"PRAGMA {name}={int(value)}")
    except (sqlite3.Error, DatabaseError):
        logger.warning("could not set %s", ", ".join(values), exc_info=True)


class Checkpointer(threading.Thread):
    """PASSIVE checkpoints of one database file on a fixed interval, on a
    connection of its own, until stopped. There is no last one at the stop:
    the run's connection, its usual setting back, checkpoints at its next
    commit if the WAL is over it, as any connection does (so a short run
    pays no fsync more)."""

    def __init__(self, path: str, interval: float) -> None:
        super().__init__(name="kb4-wal-checkpoint", daemon=True)
        self.path = path
        self.interval = interval
        # (busy, WAL pages, pages copied back) of the last checkpoint, and
        # how many ran and failed: for tests and the logs.
        self.last: tuple[int, int, int] | None = None
        self.checkpoints = 0
        self.failures = 0
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        self.join()

    def run(self) -> None:
        try:
            # timeout=0: a PASSIVE checkpoint takes no lock a writer holds,
            # and stop() must never wait on one.
            db = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        except sqlite3.Error:
            logger.warning("WAL checkpointer: cannot open the database", exc_info=True)
            return
        try:
            while not self._stopping.wait(self.interval):
                self.checkpoint(db)
        finally:
            db.close()
        if self.failures and not self.checkpoints:
            logger.warning("WAL checkpointer: no checkpoint succeeded during the run")

    def checkpoint(self, db: sqlite3.Connection) -> None:
        """One PASSIVE checkpoint: copies back what no reader still needs in
        the WAL. One that fails (another connection checkpointing, say) is
        counted, and the next interval tries again."""
        try:
            self.last = tuple(db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())
        except sqlite3.Error:
            self.failures += 1
            logger.debug("WAL checkpoint failed", exc_info=True)
            return
        self.checkpoints += 1

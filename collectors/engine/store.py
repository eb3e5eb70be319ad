"""Storing pages: event -> row, the raw INSERT, pages and checkpoint together.

A page's new messages, its quarantine rows and the checkpoint after it commit
in ONE transaction (with the pages fetched meanwhile: `Batch`) whose
checkpoint UPDATE (`lifecycle.commit_page`) also checks that the lease is
still ours and the source is not being deleted; otherwise the pages are
rolled back. (source, event id) is unique in the database, so a page
read twice (after a crash, in the re-scan window, or today's last page read
again) adds only the events not stored yet. Column widths come from
`LogMessage._meta`, never repeated here.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from django.conf import settings
from django.db import DataError, IntegrityError, connection, transaction
from django.utils import timezone

from collectors import ledger, lifecycle, quarantine
from collectors.engine.context import Abandon, RunContext
from collectors.knowbe4 import events
from collectors.knowbe4.client import EventsPage
from collectors.models import FieldDefinition, LogMessage, Source

logger = logging.getLogger(__name__)

# LogMessage columns in the order `_Run._row` builds them.
COLUMNS = (
    "source_id",
    "event_id",
    "raw",
    "message_time",
    "receipt_time",
    "source_name",
    "source_category",
    "collector_name",
    "fields",
    "event_type",
    "risk_level",
    "user_email",
)


def time_adapter():
    """A fast datetime -> database value function (what Django's would give).

    SQLite stores naive UTC text; Django's own adapter costs as much as the
    rest of a page's work, so it is done directly here.
    """
    if connection.vendor == "sqlite" and settings.USE_TZ:
        # The UTC time's ISO text less its "+00:00": what str() of the naive
        # time gives, in a fifth of the time (replace(tzinfo=None) alone
        # costs 1 us, and a page has 100 times to write).
        return lambda when: when.astimezone(UTC).isoformat(" ")[:-6]
    return connection.ops.adapt_datetimefield_value


def occurred_adapter() -> Callable[[object], object]:
    """An event's `occurred_date` -> its `message_time` database value,
    raising UnreadableDate as `events.parse_occurred` does.

    On SQLite, KnowBe4's own spelling (`2026-11-21T00:00:15.056Z`, UTC to the
    millisecond) is already the stored text but for a space and the
    microseconds: a slice of it, once the value has parsed (isoformat() was
    1.7 us an event, a third of building its row). Any other spelling goes
    the long way, so both give Django's text.
    """
    adapt = time_adapter()
    if connection.vendor != "sqlite" or not settings.USE_TZ:
        return lambda value: adapt(events.parse_occurred(value))

    def occurred(value: object) -> str:
        when = events.parse_occurred(value)
        if (
            len(value) == 24
            and value[10] == "T"
            and value[19] == "."
            and value[23] == "Z"
            and value[11:13] != "24"  # Should a parser read T24:00 as next day.
        ):
            millis = value[20:23]
            text = value[:10] + " " + value[11:19]
            return text if millis == "000" else text + "." + millis + "000"
        return adapt(when)

    return occurred


# --- the page INSERT -----------------------------------------------------------


def _insert_head(columns: tuple[str, ...]) -> str:
    """`INSERT INTO logmessage (columns)`: only quoted names, no values."""
    quote = connection.ops.quote_name
    names = ", ".join(quote(c) for c in columns)
    return f"INSERT INTO {quote(LogMessage._meta.db_table)} ({names})"


def _insert_tail() -> str:
    """Duplicates are skipped by the unique constraint. No RETURNING: the
    cursor's rowcount is the number of rows inserted (a skipped duplicate is
    not a change), and on SQLite each RETURNING row is one more step of the
    statement, each giving up and taking back the GIL, which the fetch thread
    holds while it parses the next page."""
    return " ON CONFLICT DO NOTHING"


def insert_rows(rows: list[tuple], columns: tuple[str, ...] = COLUMNS) -> int:
    """INSERT LogMessage rows (values in `columns` order), skipping those the
    unique constraint already holds; return how many were new. In the
    caller's transaction. One statement: `unnest` arrays on PostgreSQL, a
    VALUES list on SQLite. Used for events pages and Reporting versions."""
    if not rows:
        return 0
    if connection.vendor == "postgresql":
        return _insert_unnest(rows, columns)
    return _insert_values(rows, columns)


@functools.lru_cache(maxsize=16)
def _values_sql(count: int, columns: tuple[str, ...]) -> str:
    """`INSERT ... VALUES (?, ...), ...` for `count` rows (SQLite's own
    placeholders: the statement goes to sqlite3 as is, see `_insert_values`)."""
    one = "(" + ", ".join(["?"] * len(columns)) + ")"
    # Only quoted names and placeholders: the values go as parameters.
    head = _insert_head(columns)
    return head + " VALUES " + ", ".join([one] * count) + _insert_tail()


def _insert_values(rows: list[tuple], columns: tuple[str, ...]) -> int:
    """SQLite: one `VALUES (...), (...)` statement on the sqlite3 cursor.

    Django's cursor wrapper rewrites every `%s` of the 1,200-placeholder text
    into `?` with a regex on each page, and with DEBUG on formats the whole
    statement for the query log: together a fifth of a page's time. The
    statement is the same for every full page, so sqlite3 caches it compiled.
    Errors are still Django's (`wrap_database_errors`), and the statement
    runs in the caller's transaction (same connection).
    """
    connection.ensure_connection()
    with connection.wrap_database_errors:
        cursor = connection.connection.cursor()
        try:
            sql = _values_sql(len(rows), columns)
            cursor.execute(sql, [v for row in rows for v in row])
            return cursor.rowcount
        finally:
            cursor.close()


def _element_type(column: str) -> str:
    """The column's type without a length: `varchar(64)` -> `varchar`, so an
    over-long value fails on the INSERT as in the VALUES form instead of being
    cut short by the cast."""
    db_type = LogMessage._meta.get_field(column).db_type(connection)
    return re.sub(r"\(\d+\)", "", db_type)


@functools.lru_cache(maxsize=4)
def _unnest_sql(columns: tuple[str, ...]) -> str:
    """PostgreSQL: `INSERT ... SELECT * FROM unnest(%b::type[], ...)`.

    One array per column, so the SQL text is the same short string on every
    page. The 1,200-placeholder VALUES form is over psycopg's 4 kB limit for
    its parsed-query cache: psycopg re-parsed it on each page, and that was a
    third of the collect process's time.
    """
    arrays = ", ".join(f"%b::{_element_type(c)}[]" for c in columns)
    # Only quoted names, column types and placeholders: the values go as arrays.
    select = f" SELECT * FROM unnest({arrays})"  # noqa: S608
    return _insert_head(columns) + select + _insert_tail()


def _insert_unnest(rows: list[tuple], columns: tuple[str, ...]) -> int:
    """INSERT the rows as one binary array per column (`columns` order).

    Django's cursor binds values client-side, into the SQL text: an array of
    100 JSON texts would be escaped character by character in Python, which
    costs more than the parsing saved. A psycopg cursor with server-side
    binding on the same connection (so in the same transaction) sends the
    arrays in binary, with no escaping. `prepare=False`: no server-side
    prepared statement, so a transaction-mode connection pooler still works.
    """
    import psycopg  # Only installed where PostgreSQL is used.

    arrays = [list(column) for column in zip(*rows, strict=True)]
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cur:
        cur.execute(_unnest_sql(columns), arrays, prepare=False)
        return cur.rowcount


# --- building and storing rows ------------------------------------------------


def _width(column: str) -> int:
    """A LogMessage column's width, from the model (never repeated here)."""
    return LogMessage._meta.get_field(column).max_length


def _raw_json(event: dict, native: bool = False) -> str:
    """`raw`: the event as received, compact, key order kept, non-ASCII as is;
    \\u escapes for what UTF-8 cannot encode (a lone surrogate sent as
    \\ud800), so the database can hold it. `native`: see `events.dumps`."""
    raw = events.dumps(event, native)
    if not native and not raw.isascii():
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError:
            raw = json.dumps(event, separators=(",", ":"))
    return raw


def _text(value: object, width: int) -> str:
    """A display column: text the database can hold, cut to its width."""
    text = value if isinstance(value, str) else str(value or "")
    return events.storable(text)[:width]


@dataclass(frozen=True)
class Prepared:
    """A page made ready to store: its rows built, its rejects set apart.

    Made on the fetch thread as soon as the page arrives (`MessageWriter.
    prepare`), so building the next page's rows (Python, under the GIL)
    overlaps the INSERT and COMMIT of this one (SQLite and psycopg release
    the GIL while the database works).
    """

    page: EventsPage
    rows: list[tuple]
    rejected: list[events.Rejected]


class MessageWriter:
    """Turns one source's events into LogMessage rows and INSERTs them.

    The metadata (source, category, collector, the fields the schema keeps)
    is read once, when the writer is made. Used by a collection run for each
    page and by Reprocess for quarantined events.
    """

    def __init__(self, source: Source, checker=None) -> None:
        self.source = source
        self.source_id = source.pk
        self.checker = checker
        self.adapt_time = time_adapter()
        self.adapt_occurred = occurred_adapter()
        self.id_max = _width("event_id")
        self.type_max = _width("event_type")
        self.email_max = _width("user_email")
        self.fields: dict[str, str] = {}
        self.dropped: list[str] = []
        enabled = {
            name.lower(): name
            for name in FieldDefinition.objects.filter(enabled=True).values_list(
                "name", flat=True
            )
        }
        for key, value in source.fields.values_list("key", "value"):
            if key.lower() in enabled:
                self.fields[enabled[key.lower()]] = value
            else:
                self.dropped.append(key)
        field = LogMessage._meta.get_field("fields")
        self.metadata = (
            _text(source.name, _width("source_name")),
            _text(source.category, _width("source_category")),
            _text(source.collector.name, _width("collector_name")),
            field.get_db_prep_save(self.fields, connection),
        )

    def split_entries(
        self, data: list, body: bytes
    ) -> tuple[list[dict], list[events.Rejected]]:
        """(storable events, rejected entries) of a list of page entries."""
        return events.split(data, body, self.id_max, self.checker)

    def prepare(self, page: EventsPage) -> Prepared:
        """The page's rows and rejects. No database access: safe on the fetch
        thread (the metadata was read when the writer was made)."""
        if page.unreadable:
            good, rejected = [], [events.whole_page(page.body, page.unreadable)]
        else:
            good, rejected = self.split_entries(page.events, page.body)
        rows = self.rows(good, timezone.now(), native=page.native)
        return Prepared(page, rows, rejected)

    def row(self, event: dict, received, native: bool = False) -> tuple:
        """One LogMessage row (COLUMNS order) of a storable event: the raw JSON
        as received and the metadata, already adapted for the database.
        `native`: the event was parsed by orjson (`events.loads`)."""
        event_type = event.get("event_type")
        risk = event.get("risk")
        user = event.get("user")
        level = risk.get("level") if isinstance(risk, dict) else None
        email = user.get("email") if isinstance(user, dict) else None
        return (
            self.source_id,
            event["id"],
            _raw_json(event, native),
            self.adapt_occurred(event["occurred_date"]),
            received,
            *self.metadata,
            _text(event_type.get("name"), self.type_max)
            if isinstance(event_type, dict)
            else "",
            level
            if isinstance(level, int)
            and not isinstance(level, bool)
            and -32768 <= level <= 32767
            else None,
            _text(email, self.email_max),
        )

    def rows(
        self, good: list[dict], received: datetime, native: bool = False
    ) -> list[tuple]:
        """The rows of storable events, each id once (a page may repeat one)."""
        by_id: dict[str, dict] = {}
        for event in good:
            by_id.setdefault(event["id"], event)
        at = self.adapt_time(received)
        return [self.row(e, at, native) for e in by_id.values()]

    def insert(
        self,
        rows: list[tuple],
        rejected: Sequence[events.Rejected] = (),
        keep: Callable[[list[events.Rejected]], object] | None = None,
    ) -> tuple[int, list[events.Rejected]]:
        """INSERT the rows, skipping (source, event id) already stored; return
        (how many were new, rows the database refused). Inside a transaction.

        One statement per page, no model instances: the benchmark's 5,000
        events/s leaves no room for the ORM's per-field work. Should the
        database refuse the page for what a row holds (a DataError, say), the
        rows go again one by one, each in a savepoint, and only those it
        still refuses come back, to be quarantined.

        `keep(items)` stores what the page cannot (its quarantine rows: the
        `rejected` entries and the refused rows) in one savepoint with the
        rows, so a page is stored whole or not at all. A page with nothing to
        keep needs no savepoint on SQLite, where a statement that fails undoes
        itself and leaves the transaction usable: each savepoint is two more
        statements, and on SQLite each statement hands the GIL to the fetch
        thread and waits to take it back.
        """
        if not rejected and connection.vendor == "sqlite":
            try:
                return self._insert(rows), []
            except (DataError, IntegrityError, ValueError):
                pass  # Undone by SQLite: the rows go again one by one.
        else:
            try:
                with transaction.atomic():
                    stored = self._insert(rows)
                    if keep is not None:
                        keep(list(rejected))
                    return stored, []
            except (DataError, IntegrityError, ValueError):
                pass
        with transaction.atomic():
            stored, refused = self._insert_each(rows)
            if keep is not None:
                keep([*rejected, *refused])
            return stored, refused

    def _insert_each(self, rows: list[tuple]) -> tuple[int, list[events.Rejected]]:
        """The rows one by one, each in a savepoint: (new, refused)."""
        if len(rows) == 1:  # Already refused as a page of one.
            return 0, [self._refused(rows[0])]
        stored, refused = 0, []
        for row in rows:
            try:
                with transaction.atomic():
                    stored += self._insert([row])
            except (DataError, IntegrityError, ValueError):
                refused.append(self._refused(row))
        return stored, refused

    @staticmethod
    def _insert(rows: list[tuple]) -> int:
        return insert_rows(rows)

    @staticmethod
    def _refused(row: tuple) -> events.Rejected:
        """A row the database refused, as a quarantine item (its raw JSON)."""
        logger.warning("source %s: the database refused event %r", row[0], row[1])
        return events.Rejected(
            row[2].encode("utf-8", "surrogatepass"),
            "refused_by_database",
            "The database refused the event as it is.",
            row[1],
        )


def store_page(
    ctx: RunContext,
    writer: MessageWriter,
    prepared: Prepared,
    at: tuple[date, int],
    following: tuple[date | None, int, date | None],
    **progress,
) -> None:
    """Store the page's new messages and move the checkpoint past it, in the
    reader's open `Batch` (committed with it), else in a transaction of its own.

    `prepared` is the page with its rows (`MessageWriter.prepare`), `at` where
    it was read (day, page), `following` the checkpoint after it (next day,
    next page, last complete day) and `progress` a reader's own bookkeeping
    of the same moment. Entries that cannot be stored go to quarantine with
    the page; they never fail it (see `quarantine`). Raises Abandon when the
    pages were rolled back.
    """
    if ctx.batch is not None:
        ctx.batch.add(writer, prepared, at, following, progress)
        return
    with Batch(ctx) as alone:
        alone.add(writer, prepared, at, following, progress)


class Batch:
    """Consecutive pages of a reader's loop, committed in ONE transaction
    with the checkpoint after the last of them.

    Why: on SQLite a COMMIT costs about as much as the INSERT of a page, so
    a backfill whose pages arrive faster than they are stored spends half its
    time committing. Pages join the open batch only while the run has nothing
    to wait for: before waiting for KnowBe4's answer or for the rate limiter
    (`fetch.Fetcher`), and after COLLECTION_BATCH_PAGES pages or
    COLLECTION_BATCH_SECONDS, the batch commits. So no transaction stays open
    while KnowBe4 answers, a crash re-reads at most one batch (its events are
    skipped by the unique constraint, never stored twice), and at 4 requests
    a second each page commits on its own, as before.

    The checkpoint UPDATE checks the lease and the stopping flag at the
    commit; when it fails, every page of the batch rolls back (Abandon). The
    requests sent meanwhile were counted in the key's quota ledger inside the
    transaction (a block at a time, `ledger.Reservation`, settled before the
    COMMIT), so a rollback counts them again: a sent request always counts.
    """

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self._atomic: transaction.Atomic | None = None
        self.reservation = ledger.Reservation(ctx.api, ctx.key_hash, ctx.budget)
        self._clear()

    def _clear(self) -> None:
        self._opened_at = 0.0
        # ctx.result's requests, pages and stored when the batch opened.
        self._counts_at = (0, 0, 0)
        self._checkpoint: tuple | None = None
        self._progress: dict = {}
        self._dropped: dict[str, int] = {}

    @property
    def open(self) -> bool:
        return self._atomic is not None

    def __enter__(self) -> Batch:
        self.ctx.batch = self
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        """Commit what is stored, also when the loop ended on a failure of its
        own (KnowBe4's answer, the budget): those pages are whole, and each
        would have been committed alone. Only a page that failed is lost,
        already undone (`MessageWriter.insert`: its savepoint, or on SQLite
        its one statement)."""
        self.ctx.batch = None
        if exc_type is None:
            self.commit()
        elif self.open:
            try:
                self.commit()
            except Exception:  # The loop's own failure is the one to report.
                logger.warning(
                    "source %s: the pages stored before a failure were not committed",
                    self.ctx.source_id,
                    exc_info=True,
                )
        return False

    def take_request(self) -> bool:
        """Count a request sent while the batch is open (`fetch.Fetcher`): in
        its transaction, from a block as large as the pages the batch still
        has room for (about one request each), settled before the COMMIT."""
        room = settings.COLLECTION_BATCH_PAGES - (
            self.ctx.result.pages - self._counts_at[1]
        )
        return self.reservation.take(block=max(room, 1))

    def add(
        self,
        writer: MessageWriter,
        prepared: Prepared,
        at: tuple[date, int],
        following: tuple[date | None, int, date | None],
        progress: dict,
    ) -> None:
        """Store one page in the batch (whole or not at all, see
        `MessageWriter.insert`: a page that fails leaves the others whole),
        then commit if the batch is full or old enough."""
        ctx = self.ctx
        if self._atomic is None:
            self._atomic = transaction.atomic()
            self._atomic.__enter__()
            self._opened_at = time.monotonic()
            result = ctx.result
            self._counts_at = (result.requests, result.pages, result.stored)
            self._dropped = dict(ctx.dropped_counts)
        stored, _refused = writer.insert(
            prepared.rows,
            prepared.rejected,
            keep=lambda items: quarantine.add(ctx.source, at[0], at[1], items),
        )
        for key in writer.dropped:
            self._dropped[key] = self._dropped.get(key, 0) + stored
        self._checkpoint = following
        self._progress.update(progress)
        ctx.result.pages += 1  # Counted now: the run's page budget sees it.
        ctx.result.stored += stored
        # With DEBUG on (make run) Django logs every query of a long-lived
        # worker connection; a backfill should not carry thousands of them.
        # Only this connection's log, only when it keeps one: reset_queries()
        # walks every connection alias, on each page.
        if connection.queries_logged:
            connection.queries_log.clear()
        if (
            ctx.result.pages - self._counts_at[1] >= settings.COLLECTION_BATCH_PAGES
            or time.monotonic() - self._opened_at >= settings.COLLECTION_BATCH_SECONDS
        ):
            self.commit()

    def commit(self) -> None:
        """Move the checkpoint past the last page and COMMIT (nothing to do
        when no batch is open). Abandon, all rolled back, when the lease is no
        longer ours or the source is being deleted."""
        if self._atomic is None:
            return
        ctx = self.ctx
        if self._checkpoint is None:  # No page completed: nothing to keep.
            self._rollback()
            return
        next_day, next_page, complete = self._checkpoint
        try:
            self.reservation.settle()
            moved = lifecycle.commit_page(
                ctx.source,
                ctx.owner,
                cursor_day=next_day,
                cursor_page=next_page,
                last_complete_day=complete,
                dropped_fields=self._dropped,
                now=timezone.now(),
                **self._progress,
            )
        except BaseException:
            self._rollback()
            raise
        if not moved:
            self._rollback()
            raise Abandon
        atomic, self._atomic = self._atomic, None
        try:
            atomic.__exit__(None, None, None)  # COMMIT (rolled back if it fails)
        except BaseException:
            self._uncount()
            raise
        ctx.dropped_counts = self._dropped
        self._clear()

    def _rollback(self) -> None:
        """Undo the open transaction, then count its requests again."""
        atomic, self._atomic = self._atomic, None
        atomic.__exit__(Abandon, Abandon(), None)
        self._uncount()

    def _uncount(self) -> None:
        """After a rollback: the batch's pages were not stored after all, and
        the requests sent while it was open are counted again in the key's
        quota ledger (their first count was rolled back with it)."""
        self.reservation.forget()
        result = self.ctx.result
        requests_at, result.pages, result.stored = self._counts_at
        if result.requests > requests_at:
            ledger.take(
                self.ctx.api,
                self.ctx.key_hash,
                None,
                count=result.requests - requests_at,
            )
        self._clear()

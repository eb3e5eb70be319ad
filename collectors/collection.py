"""One collection run of one source: lease, states, pages, checkpoint, errors.

`run(source_id)` is what the django-q2 task and `manage.py collect` call. It
never raises: every failure is classified (the seed's error types), recorded
as a health event and turned into a next attempt time, and the run returns a
`RunResult` that says what happened (ids and counts only, never the key).

Why it cannot lose or duplicate an event:
- a per-source lease (one conditional UPDATE) keeps a second delivery of the
  same task from running at the same time;
- each page's new messages and the checkpoint move in ONE transaction whose
  checkpoint UPDATE also checks that the lease is still ours and the source is
  not being deleted (otherwise the page is rolled back), and no transaction is
  open while an HTTP request is in flight;
- (source, event id) is unique in the database, so a page read twice (after a
  crash, or in the re-scan window) adds only the events not stored yet.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import time
import traceback
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime

from django.conf import settings
from django.db import DataError, IntegrityError, connection, reset_queries, transaction
from django.db.models import Q
from django.utils import timezone

from collectors import crypto, health, quarantine, retry
from collectors.choices import ErrorType, Severity, SourceState
from collectors.knowbe4 import events
from collectors.knowbe4.client import (
    ConfigError,
    EventsPage,
    KnowBe4Client,
    QuotaExceeded,
    TooManyRequests,
    TransientError,
)
from collectors.knowbe4.client import scrub as client_scrub
from collectors.models import FieldDefinition, LogMessage, Source

logger = logging.getLogger(__name__)

# The lease is shorter than Q_CLUSTER["retry"] (so a lost worker's task is
# redelivered only after the lease is free) and longer than one run's budget;
# every stored page renews it.
LEASE = timedelta(seconds=240)
RUN_BUDGET_SECONDS = 120.0
MAX_PAGES_PER_RUN = 2000
# A closed day is read once its next day is this old: late writes settle.
SETTLE_DELAY = timedelta(minutes=10)
# A 429 Too Many Requests with a Retry-After this short is waited out in the run.
INLINE_RETRY_AFTER = 5.0

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

# `raw`: the event as received, compact, key order kept, non-ASCII as is.
RAW_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

COLLECTING_STATES = (
    SourceState.STARTED,
    SourceState.INITIALIZED,
    SourceState.AUTHENTICATED,
    SourceState.COLLECTING,
)

sleep = time.sleep  # Replaced by tests that must not really wait.


def _setting(name: str, default):
    return getattr(settings, name, default)


def lease_duration() -> timedelta:
    return _setting("COLLECTION_LEASE", LEASE)


def settle_delay() -> timedelta:
    return _setting("COLLECTION_SETTLE_DELAY", SETTLE_DELAY)


# --- days -------------------------------------------------------------------


def last_collectable_day(now: datetime) -> date:
    """The newest closed UTC day: day D once now >= D+1 00:00 UTC + settle."""
    return (now.astimezone(UTC) - settle_delay()).date() - timedelta(days=1)


def collectable_at(day: date) -> datetime:
    """When `day` becomes collectable (the moment a caught-up source is due)."""
    midnight = datetime.combine(day + timedelta(days=1), dtime.min, tzinfo=UTC)
    return midnight + settle_delay()


def start_point(source: Source, last: date) -> tuple[date, int] | None:
    """Where this run reads first: the checkpoint, or the start of a new pass.

    A pass starts when a day closed after `last_complete_day`; it re-reads the
    `rescan_days` days before it to catch backdated events. The first pass
    reads the initial look-back. None means there is nothing to read yet.
    """
    if source.cursor_day is not None:
        return source.cursor_day, max(1, source.cursor_page)
    if source.last_complete_day is None:
        return last - timedelta(days=source.initial_lookback_days - 1), 1
    if source.last_complete_day < last:
        first_new = source.last_complete_day + timedelta(days=1)
        return first_new - timedelta(days=source.rescan_days), 1
    return None


def time_adapter():
    """A fast datetime -> database value function (what Django's would give).

    SQLite stores naive UTC text; Django's own adapter costs as much as the
    rest of a page's work, so it is done directly here.
    """
    if connection.vendor == "sqlite" and settings.USE_TZ:
        return lambda when: str(when.astimezone(UTC).replace(tzinfo=None))
    return connection.ops.adapt_datetimefield_value


# --- the page INSERT -----------------------------------------------------------


def _insert_head() -> str:
    """`INSERT INTO logmessage (COLUMNS)`: only quoted names, no values."""
    quote = connection.ops.quote_name
    columns = ", ".join(quote(c) for c in COLUMNS)
    return f"INSERT INTO {quote(LogMessage._meta.db_table)} ({columns})"


def _insert_tail() -> str:
    """Duplicates are skipped by the unique constraint; RETURNING counts the
    rows that were new."""
    return f" ON CONFLICT DO NOTHING RETURNING {connection.ops.quote_name('event_id')}"


def _values_insert(rows: list[tuple]) -> tuple[str, list]:
    """One `VALUES (...), (...)` statement (SQLite): a placeholder per value."""
    one = "(" + ", ".join(["%s"] * len(COLUMNS)) + ")"
    # Only quoted names and placeholders: the values go as parameters.
    sql = _insert_head() + " VALUES " + ", ".join([one] * len(rows)) + _insert_tail()
    return sql, [value for row in rows for value in row]


def _element_type(column: str) -> str:
    """The column's type without a length: `varchar(64)` -> `varchar`, so an
    over-long value fails on the INSERT as in the VALUES form instead of being
    cut short by the cast."""
    db_type = LogMessage._meta.get_field(column).db_type(connection)
    return re.sub(r"\(\d+\)", "", db_type)


def _unnest_sql() -> str:
    """PostgreSQL: `INSERT ... SELECT * FROM unnest(%b::type[], ...)`.

    One array per column, so the SQL text is the same short string on every
    page. The 1,200-placeholder VALUES form is over psycopg's 4 kB limit for
    its parsed-query cache: psycopg re-parsed it on each page, and that was a
    third of the collect process's time.
    """
    arrays = ", ".join(f"%b::{_element_type(c)}[]" for c in COLUMNS)
    # Only quoted names, column types and placeholders: the values go as arrays.
    select = f" SELECT * FROM unnest({arrays})"  # noqa: S608
    return _insert_head() + select + _insert_tail()


def _insert_unnest(rows: list[tuple]) -> int:
    """INSERT the rows as one binary array per column (COLUMNS order).

    Django's cursor binds values client-side, into the SQL text: an array of
    100 JSON texts would be escaped character by character in Python, which
    costs more than the parsing saved. A psycopg cursor with server-side
    binding on the same connection (so in the same transaction) sends the
    arrays in binary, with no escaping. `prepare=False`: no server-side
    prepared statement, so a transaction-mode connection pooler still works.
    """
    import psycopg  # Only installed where PostgreSQL is used.

    columns = [list(column) for column in zip(*rows, strict=True)]
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cur:
        cur.execute(_unnest_sql(), columns, prepare=False)
        return len(cur.fetchall())


# --- building and storing rows ------------------------------------------------


def _width(column: str) -> int:
    """A LogMessage column's width, from the model (never repeated here)."""
    return LogMessage._meta.get_field(column).max_length


def _raw_json(event: dict) -> str:
    """`raw`: the event as received; \\u escapes for what UTF-8 cannot encode
    (a lone surrogate sent as \\ud800), so the database can hold it."""
    raw = RAW_JSON.encode(event)
    if not raw.isascii():
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError:
            raw = json.dumps(event, separators=(",", ":"))
    return raw


def _text(value: object, width: int) -> str:
    """A display column: text the database can hold, cut to its width."""
    return events.storable(str(value or ""))[:width]


class MessageWriter:
    """Turns one source's events into LogMessage rows and INSERTs them.

    The metadata (source, category, collector, the fields the schema keeps)
    is read once, when the writer is made. Used by a collection run for each
    page and by Reprocess for quarantined events.
    """

    def __init__(self, source: Source, checker=None) -> None:
        self.source = source
        self.checker = checker
        self.adapt_time = time_adapter()
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

    def row(self, event: dict, received) -> tuple:
        """One LogMessage row (COLUMNS order) of a storable event: the raw JSON
        as received and the metadata, already adapted for the database."""
        event_type = event.get("event_type")
        risk = event.get("risk")
        user = event.get("user")
        level = risk.get("level") if isinstance(risk, dict) else None
        email = user.get("email") if isinstance(user, dict) else None
        return (
            self.source.pk,
            event["id"],
            _raw_json(event),
            self.adapt_time(events.parse_occurred(event["occurred_date"])),
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

    def rows(self, good: list[dict], received: datetime) -> list[tuple]:
        """The rows of storable events, each id once (a page may repeat one)."""
        by_id: dict[str, dict] = {}
        for event in good:
            by_id.setdefault(event["id"], event)
        at = self.adapt_time(received)
        return [self.row(e, at) for e in by_id.values()]

    def insert(self, rows: list[tuple]) -> tuple[int, list[events.Rejected]]:
        """INSERT the rows, skipping (source, event id) already stored; return
        (how many were new, rows the database refused). Inside a transaction.

        One statement per page, no model instances: the benchmark's 5,000
        events/s leaves no room for the ORM's per-field work. Should the
        database refuse the page for what a row holds (a DataError, say), the
        rows go again one by one, each in a savepoint, and only those it
        still refuses come back, to be quarantined.
        """
        if not rows:
            return 0, []
        try:
            with transaction.atomic():
                return self._insert(rows), []
        except (DataError, IntegrityError, ValueError):
            if len(rows) == 1:
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
        if connection.vendor == "postgresql":
            return _insert_unnest(rows)
        sql, params = _values_insert(rows)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return len(cursor.fetchall())

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


# --- the lease ----------------------------------------------------------------


def new_owner() -> str:
    """host:pid:random, so a lease left by a killed process can be recognised."""
    return f"{socket.gethostname()[:36]}:{os.getpid()}:{uuid.uuid4().hex[:16]}"


def owner_is_dead(owner: str) -> bool:
    """Whether `owner` is a process of this host that no longer runs."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname()[:36] or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # A killed child not yet reaped by its parent is a zombie: dead too.
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def take_lease(source_id: int, owner: str) -> bool:
    """Take the source's lease with one conditional UPDATE; False if held.

    A lease whose holder was a process of this host that has died (SIGKILL,
    OOM) is taken over at once rather than after it expires.
    """
    now = timezone.now()
    values = {"lease_owner": owner, "lease_expires": now + lease_duration()}
    free = Q(lease_expires__isnull=True) | Q(lease_expires__lt=now)
    if Source.objects.filter(free, pk=source_id).update(**values):
        return True
    held = (
        Source.objects.filter(pk=source_id)
        .values_list("lease_owner", flat=True)
        .first()
    )
    if held and owner_is_dead(held):
        logger.info("source %s: taking over the lease of a dead worker", source_id)
        return bool(
            Source.objects.filter(pk=source_id, lease_owner=held).update(**values)
        )
    return False


def _dead_holders() -> list[tuple[int, str]]:
    """(source id, owner) of unexpired leases held by dead processes of this
    host: only sources being collected right now are looked at."""
    held = Source.objects.filter(lease_expires__gte=timezone.now()).exclude(
        lease_owner=""
    )
    return [
        (pk, owner)
        for pk, owner in held.values_list("pk", "lease_owner")
        if owner_is_dead(owner)
    ]


def dead_leases() -> list[int]:
    """Ids of sources whose lease is held by a dead process of this host."""
    return [pk for pk, _ in _dead_holders()]


def free_dead_leases() -> list[int]:
    """Give back the leases (and dispatch marks) held by dead processes of
    this host, so the dispatcher queues those sources at once instead of after
    the lease and DISPATCH_GRACE run out. Conditional on the dead owner: a
    live worker that took the lease meanwhile keeps it. Returns the ids."""
    freed = []
    for pk, owner in _dead_holders():
        if Source.objects.filter(pk=pk, lease_owner=owner).update(
            lease_owner="", lease_expires=None, dispatched_at=None
        ):
            logger.info("source %s: freed the lease of a dead worker", pk)
            freed.append(pk)
    return freed


def release_lease(source_id: int, owner: str) -> None:
    """Give the lease back (and the dispatch mark) if it is still ours."""
    Source.objects.filter(pk=source_id, lease_owner=owner).update(
        lease_owner="", lease_expires=None, dispatched_at=None
    )


def mark_started(source: Source, reason: str = "Collection task created") -> bool:
    """Pending -> Started: a collection task now exists for the source."""
    if source.state != SourceState.PENDING:
        return source.state in COLLECTING_STATES
    return source.transition(SourceState.STARTED, reason, expect=SourceState.PENDING)


# --- results and internal signals -------------------------------------------


@dataclass
class RunResult:
    """What one run did; safe to store as a task result (no secrets)."""

    source_id: int
    outcome: str
    requests: int = 0
    pages: int = 0
    stored: int = 0
    more: bool = False  # Stopped by its budget with work left: due again now.

    def __str__(self) -> str:
        return (
            f"source {self.source_id}: {self.outcome}, {self.requests} request(s), "
            f"{self.pages} page(s), {self.stored} new message(s)"
        )


class _Abandon(Exception):
    """The page could not be committed: lease lost, source stopping or gone."""


class _Stopping(Exception):
    """The source was deleted by a user: finish its removal."""


class _QuotaBlocked(Exception):
    """Another run already found the key's daily quota spent."""

    def __init__(self, until: datetime) -> None:
        super().__init__("quota blocked")
        self.until = until


# --- the run ----------------------------------------------------------------


def run(
    source_id: int,
    *,
    budget_seconds: float | None = None,
    max_pages: int | None = None,
) -> RunResult:
    """Collect what is due for one source; never raises.

    Takes the lease or returns at once ("lease_held") without a request.
    `budget_seconds`/`max_pages` bound the work (defaults from settings
    COLLECTION_RUN_BUDGET_SECONDS/COLLECTION_MAX_PAGES_PER_RUN); a run cut
    short sets `more` and leaves the source due at once.
    """
    owner = new_owner()
    try:
        if not take_lease(source_id, owner):
            exists = Source.objects.filter(pk=source_id).exists()
            return RunResult(source_id, "lease_held" if exists else "gone")
    except Exception:  # The database itself is unavailable: nothing to record.
        logger.exception("source %s: could not take the lease", source_id)
        return RunResult(source_id, "failed")
    budget = budget_seconds or _setting(
        "COLLECTION_RUN_BUDGET_SECONDS", RUN_BUDGET_SECONDS
    )
    pages = max_pages or _setting("COLLECTION_MAX_PAGES_PER_RUN", MAX_PAGES_PER_RUN)
    collection_run = _Run(source_id, owner, time.monotonic() + budget, pages)
    try:
        result = collection_run.execute()
    except Exception:  # Even recording the outcome failed (database gone).
        logger.error(
            "source %s: run failed\n%s",
            source_id,
            collection_run._scrub(traceback.format_exc()),
        )
        result = collection_run.result
        result.outcome = "failed"
    finally:
        try:
            release_lease(source_id, owner)
        except Exception:
            logger.exception("source %s: could not release the lease", source_id)
    logger.info("%s", result)
    return result


class _Fetcher:
    """Sends page requests on a helper thread, one ahead at most.

    `limiter.acquire()` runs before a request is handed to the thread and
    `release()` once its answer is taken, both in the run's thread (the
    limiter's bookkeeping is per thread and may use the database). A short
    Retry-After on 429 Too Many Requests is waited out here.
    """

    def __init__(self, run: _Run, pool, client: KnowBe4Client, limiter) -> None:
        self.run, self.pool, self.client, self.limiter = run, pool, client, limiter
        self.pending: tuple[tuple[date, int], Future] | None = None
        self.finished_at: float | None = None  # Of the one request in flight.

    def _send(self, day: date, page: int) -> Future:
        self.limiter.acquire()
        self.run.result.requests += 1
        return self.pool.submit(self._timed, day, page)

    def _timed(self, day: date, page: int) -> EventsPage:
        """On the helper thread: the request, noting when its answer arrived."""
        try:
            return self.client.list_events(day, page)
        finally:
            self.finished_at = time.monotonic()

    def _receive(self, future: Future) -> EventsPage:
        try:
            return future.result()
        finally:
            # The limiter counts the next second from the answer's arrival, not
            # from now (after the previous page was stored): safe and faster.
            self.limiter.release(finished_at=self.finished_at)

    def ahead(self, day: date, page: int) -> None:
        """Start fetching the page after the current one."""
        self.drain()
        self.pending = ((day, page), self._send(day, page))

    def page(self, day: date, page: int) -> EventsPage:
        """The page's events: from the request sent ahead, or a new one."""
        if self.pending and self.pending[0] == (day, page):
            future = self.pending[1]
            self.pending = None
        else:
            self.drain()
            future = self._send(day, page)
        for attempt in range(3):
            try:
                return self._receive(future)
            except TooManyRequests as exc:
                wait = exc.retry_after
                if attempt == 2 or wait is None or wait > INLINE_RETRY_AFTER:
                    raise
                if time.monotonic() + wait >= self.run.deadline:
                    raise
                logger.debug("source %s: 429, waiting %.1fs", self.run.source_id, wait)
                sleep(wait)
                future = self._send(day, page)
        raise AssertionError("unreachable")  # pragma: no cover

    def drain(self) -> None:
        """Wait for a request sent ahead that will not be used; drop it."""
        if self.pending is None:
            return
        _, future = self.pending
        self.pending = None
        with contextlib.suppress(Exception):  # Its page is read again later.
            self._receive(future)


class _Run:
    """The state of one run; `execute` is the whole of it."""

    def __init__(
        self, source_id: int, owner: str, deadline: float, max_pages: int
    ) -> None:
        self.source_id = source_id
        self.owner = owner
        self.deadline = deadline
        self.max_pages = max_pages
        self.source: Source | None = None
        self.secret = ""
        self.key_hash = ""
        self.result = RunResult(source_id, "collected")
        self.writer: MessageWriter | None = None
        self.dropped_counts: dict[str, int] = {}

    # The outer frame: classify whatever happens.
    def execute(self) -> RunResult:
        try:
            self._collect()
        except _Stopping:
            self._delete_source()
        except _Abandon:
            self._after_abandon()
        except Source.DoesNotExist:
            self.result.outcome = "gone"
        except (ConfigError, crypto.KeyUnreadable) as exc:
            self._guard(self._config_error, exc)
        except _QuotaBlocked as exc:
            self._guard(self._quota, exc.until, None)
        except QuotaExceeded as exc:
            self._guard(self._quota, None, exc)
        except TooManyRequests as exc:
            self._guard(self._throttled, exc)
        except TransientError as exc:
            self._guard(
                self._generic_error,
                ErrorType.THIRD_PARTY_GENERIC,
                exc.code,
                exc.message,
            )
        except Exception as exc:
            logger.error(
                "source %s: internal error\n%s",
                self.source_id,
                self._scrub(traceback.format_exc()),
            )
            self._guard(
                self._generic_error,
                ErrorType.FIRST_PARTY_GENERIC,
                type(exc).__name__,
                f"Internal error while collecting ({type(exc).__name__}: "
                f"{self._scrub(str(exc))[:300]}).",
            )
        return self.result

    def _guard(self, handler, *args) -> None:
        """Run a failure handler; if even that fails (database down), log it."""
        try:
            handler(*args)
        except _Stopping:
            self._delete_source()
        except Exception:
            self.result.outcome = "failed"
            logger.error(
                "source %s: could not record a failure\n%s",
                self.source_id,
                self._scrub(traceback.format_exc()),
            )

    def _scrub(self, text: str) -> str:
        """The key, also URL-encoded or in base64, out of a message or log."""
        return client_scrub(text, self.secret, "[redacted]") if self.secret else text

    # The happy path.
    def _collect(self) -> None:
        source = Source.objects.select_related("collector").get(pk=self.source_id)
        self.source = source
        now = timezone.now()
        if source.state == SourceState.STOPPING:
            raise _Stopping
        if source.state == SourceState.ERROR:
            self.result.outcome = "error_state"
            return
        if source.next_attempt_at and source.next_attempt_at > now:
            self.result.outcome = "not_due"
            return
        if source.state == SourceState.PENDING:
            mark_started(source, "Collection run started")
            self._check_moved(SourceState.STARTED)
        base = source.base_url
        if base is None:
            raise ConfigError(
                "unknown_base_url",
                f"The Base URL '{source.base_url_key}' is no longer allowed.",
            )
        api_key = source.get_api_key()
        self.secret = api_key
        self.key_hash = crypto.key_fingerprint(api_key)
        self.writer = MessageWriter(source)
        self.dropped_counts = dict(source.dropped_fields or {})
        self._advance(
            SourceState.INITIALIZED,
            (SourceState.STARTED,),
            "Configuration loaded and API key decrypted",
        )
        from collectors import ratelimit

        blocked = ratelimit.quota_blocked_until(self.key_hash)
        if blocked and blocked > now:
            raise _QuotaBlocked(blocked)
        limiter = ratelimit.limiter_for(self.key_hash)
        with KnowBe4Client(base.url, api_key) as client:
            self._read_pages(client, limiter, now)

    def _read_pages(self, client: KnowBe4Client, limiter, now: datetime) -> None:
        """Read and store page after page until caught up or out of budget.

        The next page is fetched by a helper thread while this one stores the
        current page, so KnowBe4's latency and our writes overlap. The helper
        only does HTTP (no database), and the page transaction never waits on
        it; the limiter is acquired and released here, in this thread.
        """
        last = last_collectable_day(now)
        point = start_point(self.source, last)
        day, page = point if point else (None, 1)
        if point is None and self.source.state in (
            SourceState.STARTED,
            SourceState.INITIALIZED,
        ):
            self._authenticate(client, limiter, last)
        with ThreadPoolExecutor(1, thread_name_prefix="kb4-fetch") as pool:
            fetch = _Fetcher(self, pool, client, limiter)
            try:
                while day is not None and day <= last:
                    if self._out_of_budget():
                        self.result.more = True
                        break
                    events_page = fetch.page(day, page)
                    self._advance(
                        SourceState.AUTHENTICATED,
                        (SourceState.STARTED, SourceState.INITIALIZED),
                        "First successful call to KnowBe4",
                    )
                    following = self._next(events_page, day, last)
                    if following[0] is not None and not self._out_of_budget(1):
                        fetch.ahead(following[0], following[1])
                    day, page = self._store(events_page, day, page, following)
                    self._advance(
                        SourceState.COLLECTING,
                        (
                            SourceState.STARTED,
                            SourceState.INITIALIZED,
                            SourceState.AUTHENTICATED,
                        ),
                        "First page stored",
                    )
            finally:
                fetch.drain()
        self._finish(last)

    def _authenticate(self, client: KnowBe4Client, limiter, last: date) -> None:
        """Prove the key of a source that has nothing to read yet (caught up,
        then given a new key or Base URL, or restarted): one `/events` page of
        one item for the newest closed day. A wrong key thus shows red now,
        not when the next day closes."""
        limiter.acquire()
        self.result.requests += 1
        try:
            client.list_events(last, 1, per_page=1)
        finally:
            limiter.release()
        self._advance(
            SourceState.AUTHENTICATED,
            (SourceState.STARTED, SourceState.INITIALIZED),
            "First successful call to KnowBe4",
        )
        self._advance(
            SourceState.COLLECTING,
            (SourceState.AUTHENTICATED,),
            "Caught up: the next day is collected once it closes",
        )

    def _out_of_budget(self, extra: int = 0) -> bool:
        return (
            self.result.pages + extra >= self.max_pages
            or time.monotonic() >= self.deadline
        )

    def _next(
        self, events_page: EventsPage, day: date, last: date
    ) -> tuple[date | None, int, date | None]:
        """(next day, next page, last complete day) after this page."""
        if events_page.next_page is not None and (
            events_page.events or events_page.unreadable
        ):
            return day, events_page.next_page, self.source.last_complete_day
        following = day + timedelta(days=1) if day < last else None
        return following, 1, max(filter(None, (self.source.last_complete_day, day)))

    def _store(
        self, events_page: EventsPage, day: date, page: int, following: tuple
    ) -> tuple[date | None, int]:
        """Commit the page's new messages and the checkpoint in one transaction.

        Entries that cannot be stored go to quarantine in that transaction;
        they never fail the page (see `quarantine`).
        """
        source = self.source
        writer = self.writer
        received = timezone.now()
        next_day, next_page, complete = following
        if events_page.unreadable:
            good, rejected = (
                [],
                [events.whole_page(events_page.body, events_page.unreadable)],
            )
        else:
            good, rejected = writer.split_entries(events_page.events, events_page.body)
        rows = writer.rows(good, received)
        with transaction.atomic():
            stored, refused = writer.insert(rows)
            quarantine.add(source, day, page, rejected + refused)
            dropped = dict(self.dropped_counts)
            for key in writer.dropped:
                dropped[key] = dropped.get(key, 0) + stored
            moved = (
                Source.objects.filter(pk=source.pk, lease_owner=self.owner)
                .exclude(state=SourceState.STOPPING)
                .update(
                    cursor_day=next_day,
                    cursor_page=next_page,
                    last_complete_day=complete,
                    dropped_fields=dropped,
                    lease_expires=received + lease_duration(),
                    error_streak_started=None,
                    last_success_at=received,
                )
            )
            if not moved:
                raise _Abandon
        self.dropped_counts = dropped
        # With DEBUG on (make run) Django logs every query of a long-lived
        # worker connection; a backfill should not carry thousands of them.
        reset_queries()
        source.cursor_day, source.cursor_page = next_day, next_page
        source.last_complete_day = complete
        source.error_streak_started = None
        self.result.pages += 1
        self.result.stored += stored
        return next_day, next_page

    def _finish(self, last: date) -> None:
        """A clean end: due again now (budget) or when the next day closes.

        A source saved or restarted during the run is left due at once, so
        its new settings are used (and authenticated) without waiting a day.
        """
        if self._reconfigured_meanwhile():
            return
        source = self.source
        now = timezone.now()
        values = {
            "next_attempt_at": now
            if self.result.more
            else collectable_at(last + timedelta(days=1)),
            "error_streak_started": None,
        }
        if (
            not self.result.more
            and source.last_complete_day is None
            and source.cursor_day is None
        ):
            values["last_complete_day"] = last  # A look-back of 0 days.
        if self.result.requests:
            values["last_success_at"] = now
        moved = (
            Source.objects.filter(pk=source.pk, lease_owner=self.owner)
            .exclude(state=SourceState.STOPPING)
            .update(**values)
        )
        if not moved:
            raise _Abandon
        health.resolve(source)
        self.result.outcome = "more" if self.result.more else "caught_up"

    # State moves.
    def _advance(self, to_state: str, allowed_from: tuple, reason: str) -> None:
        """Move forward along the seed's states, never over a user's Stopping."""
        source = self.source
        if source.state not in allowed_from:
            return
        if not source.transition(to_state, reason, expect=source.state):
            self._check_moved(to_state)

    def _check_moved(self, expected: str) -> None:
        """After a refused move: stop if the user deleted the source."""
        state = (
            Source.objects.filter(pk=self.source_id)
            .values_list("state", flat=True)
            .first()
        )
        if state is None:
            raise Source.DoesNotExist
        if state == SourceState.STOPPING:
            raise _Stopping
        self.source.state = state

    # Endings.
    def _delete_source(self) -> None:
        """Stopping: delete the source (and its collector with its last
        source when the collector is being deleted); messages stay."""
        deleted = Source.finish_removal(self.source_id)
        self.result.outcome = "deleted" if deleted else "gone"
        logger.info("source %s: deleted (messages kept)", self.source_id)

    def _after_abandon(self) -> None:
        """A page was rolled back: find out why and act on it."""
        state = (
            Source.objects.filter(pk=self.source_id)
            .values_list("state", flat=True)
            .first()
        )
        if state is None:
            self.result.outcome = "gone"
        elif state == SourceState.STOPPING:
            self._delete_source()
        else:
            self.result.outcome = "lease_lost"
            logger.warning("source %s: lease lost, page abandoned", self.source_id)

    def _set(self, **values) -> None:
        Source.objects.filter(pk=self.source_id, lease_owner=self.owner).update(
            **values
        )

    def _reconfigured_meanwhile(self) -> bool:
        """Whether a user saved the source while this run used the old settings.

        A failure then belongs to the old configuration: the new one gets a
        fresh try at once instead of an Error it never earned.
        """
        if self.source is None:
            return False
        current = (
            Source.objects.filter(pk=self.source_id)
            .values_list("config_version", flat=True)
            .first()
        )
        if current is None or current == self.source.config_version:
            return False
        self._set(next_attempt_at=None, error_streak_started=None)
        self.result.outcome = "reconfigured"
        logger.info("source %s: saved during the run; retrying now", self.source_id)
        return True

    def _config_error(self, exc: Exception) -> None:
        """ThirdPartyConfig: Error at once, no request until edited/restarted."""
        if self._reconfigured_meanwhile():
            return
        source = self.source or Source.objects.get(pk=self.source_id)
        if isinstance(exc, crypto.KeyUnreadable):
            code, message, fix = "key_unreadable", str(exc), health.FIX_KEY_UNREADABLE
        else:
            code, message, fix = exc.code, exc.message, health.FIX_CONFIG
        message = self._scrub(message)
        self._set(next_attempt_at=None)
        if not source.transition(
            SourceState.ERROR,
            message,
            error_type=ErrorType.THIRD_PARTY_CONFIG,
            expect=source.state,
        ):
            self._check_moved(SourceState.ERROR)
        health.record(
            source,
            ErrorType.THIRD_PARTY_CONFIG,
            code=code,
            message=message,
            suggested_fix=fix,
            severity=Severity.ERROR,
        )
        self.result.outcome = "config_error"
        logger.warning("source %s: configuration error %s", self.source_id, code)

    def _quota(self, until: datetime | None, exc: QuotaExceeded | None) -> None:
        """Limit Exceeded: wait for the quota to reset; not a retry streak."""
        from collectors import ratelimit

        now = timezone.now()
        if until is None:
            wait = exc.retry_after if exc else None
            until = (
                now + timedelta(seconds=wait) if wait else retry.next_utc_midnight(now)
            )
            ratelimit.mark_quota_exhausted(self.key_hash, until)
        self._set(next_attempt_at=until, error_streak_started=None)
        when = until.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
        health.record(
            self.source,
            ErrorType.THIRD_PARTY_GENERIC,
            code="limit_exceeded",
            message=(
                "The daily request quota of this API key is spent (Limit "
                f"Exceeded). Collection resumes at {when}."
            ),
            suggested_fix=(
                f"Nothing to do: collection resumes on its own at {when}. The "
                "quota is ten requests per licensed seat per day."
            ),
            severity=Severity.WARNING,
        )
        self.result.outcome = "quota_exceeded"
        logger.warning("source %s: daily quota spent until %s", self.source_id, when)

    def _throttled(self, exc: TooManyRequests) -> None:
        """429 Too Many Requests: not an error; come back after Retry-After."""
        now = timezone.now()
        wait = (
            timedelta(seconds=exc.retry_after)
            if exc.retry_after is not None
            else retry.backoff_delay(1)
        )
        self._set(next_attempt_at=now + wait)
        self.result.outcome = "throttled"
        logger.debug(
            "source %s: 429 Too Many Requests, next try in %ss",
            self.source_id,
            int(wait.total_seconds()),
        )

    def _generic_error(self, error_type: str, code: str, message: str) -> None:
        """5xx, timeouts, garbage, our own failures: back off for up to 90 min."""
        source = self.source or Source.objects.get(pk=self.source_id)
        now = timezone.now()
        message = self._scrub(message)
        started = source.error_streak_started or now
        until = retry.window_end(started).astimezone(UTC).strftime("%H:%M UTC")
        if retry.exhausted(started, now):
            if self._reconfigured_meanwhile():
                return
            self._set(next_attempt_at=None, error_streak_started=started)
            if not source.transition(
                SourceState.ERROR,
                f"Retries exhausted: {message}",
                error_type=error_type,
                expect=source.state,
            ):
                self._check_moved(SourceState.ERROR)
            health.record(
                source,
                error_type,
                code=code,
                message=f"Retries exhausted after 90 minutes: {message}",
                suggested_fix=(
                    "Collection has stopped. Check that KnowBe4 is reachable, then "
                    "restart the source (or save it again)."
                ),
                severity=Severity.ERROR,
            )
            self.result.outcome = "retries_exhausted"
            logger.error("source %s: retries exhausted (%s)", self.source_id, code)
            return
        fix = (
            f"KnowBe4 is unavailable; retrying until {until}."
            if error_type == ErrorType.THIRD_PARTY_GENERIC
            else f"{health.FIX_FIRST_PARTY} Retrying until {until}."
        )
        event = health.record(
            source,
            error_type,
            code=code,
            message=message,
            suggested_fix=fix,
            severity=Severity.WARNING,
        )
        next_at = retry.next_retry_at(started, event.count, now)
        self._set(next_attempt_at=next_at, error_streak_started=started)
        self.result.outcome = "retrying"
        logger.warning(
            "source %s: %s %s, retry at %s",
            self.source_id,
            error_type,
            code,
            next_at.isoformat(timespec="seconds"),
        )

"""A local simulator of the KnowBe4 User Event API (stdlib only).

It serves the demo (`make run`), the integration tests over real sockets and the
benchmarks. It mimics `shared/knowbe4-events-api.md`: the same paths, query
parameters, `data`/`meta` envelope and event shape; a Bearer key that must
match; at most 4 requests in any one-second window per key (429 "Too Many
Requests") and a daily quota of 10 x seats requests per UTC day (429 "Limit
Exceeded"). Tests and demos steer it through `SandboxServer`'s methods or the
loopback-only HTTP control interface under `/_sandbox/`.

Events are generated once per day, deterministically from the seed and the day,
and their JSON is serialized once, so paging 100,000 events is fast. "Now" is
`time.time()`, so tests that move time with time_machine move the sandbox too.

The control interface (no key; refused unless the caller is on loopback):

    GET    /_sandbox/requests      the request log (time, method, path, query,
                                   key_hash, status); DELETE clears it
    POST   /_sandbox/faults        {"kind": "status", "status": 503, "count": 5}
                                   or kind slow (+delay), truncate, invalid_json,
                                   html, limit_exceeded, too_many_requests, reset,
                                   drip (the body a byte every "delay" s);
                                   optional "path" prefix, "body", "headers".
                                   GET lists pending faults, DELETE clears them
    POST   /_sandbox/events        {"occurred_date": "...", ...}: a late event
    GET    /_sandbox/event_ids?start=YYYY-MM-DD&end=YYYY-MM-DD   ground truth
    DELETE /_sandbox/limits        forget rate windows and quota spent
    GET    /_sandbox/config        seed, window, limits (key hashes, not keys)
    POST   /_sandbox/gate          {"allow": N}: answer only the first N API
                                   requests (counted since start); later ones
                                   wait until the gate is raised, {"allow":
                                   null} opens it. GET: {"allow", "passed",
                                   "waiting"}. Tests use it to stop a collector
                                   at an exact point, whatever the machine's
                                   speed.
    POST   /_sandbox/webhook       a receiver for `make run`'s demo webhook
                                   notifications (GET: the last 100 bodies)

Faults that replace the answer (status, html, ...) do not count against the
key's limits; slow, truncate and reset alter a real answer, which does.

Requests under `/v1/` are the KMSAT Reporting API, served by
`sandbox_reporting.py` with its own keys (`reporting_keys`), data set and
limits, and the same faults, gate and request log.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import random
import secrets
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

ACCOUNT_ID = 52306
MAX_PER_PAGE = 100
RATE_LIMIT = 4  # requests in any one-second window, per key
RATE_WINDOW = 1.0
REQUESTS_PER_SEAT = 10  # daily quota per licensed seat
# The largest request body read (control-API JSON is a few hundred bytes); a
# larger one is answered 413 unread, so no client can make the sandbox buffer
# an arbitrary amount of memory.
MAX_REQUEST_BODY = 64 * 1024
ORDER_FIELDS = ("id", "event_type", "occurred_date")
FAULT_KINDS = (
    "status",
    "slow",
    "truncate",
    "invalid_json",
    "html",
    "limit_exceeded",
    "too_many_requests",
    "reset",
    "drip",
)
# They alter a real answer; "drip" sends its body one byte every `delay` s.
PASS_THROUGH_FAULTS = ("slow", "truncate", "reset", "drip")
EVENT_TYPES = [
    ("phishing_click", "Clicked a link in a simulated phishing email"),
    ("phishing_reported", "Reported a simulated phishing email"),
    ("training_completed", "Completed a training module"),
    ("training_overdue", "Training assignment is overdue"),
    ("password_reuse", "Reused a known breached password"),
    ("mfa_disabled", "Disabled multi-factor authentication"),
    ("usb_drop", "Plugged in a dropped USB device"),
    ("event_type_55", None),
]
FIRST_NAMES = [
    "ada", "alan", "grace", "linus", "margaret", "dennis", "barbara", "ken",
    "radia", "edsger", "frances", "john", "katherine", "tim", "hedy", "donald",
]  # fmt: skip
SOURCES = [None, None, "phishing-platform", "hr-system", "siem"]


def _uuid4(n: int) -> str:
    """A version-4 UUID string from 128 random bits (faster than uuid.UUID)."""
    n = (n & ~(0xF000 << 64)) | (0x4000 << 64)
    n = (n & ~(0xC000 << 48)) | (0x8000 << 48)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _str_json(value: str | None) -> str:
    return "null" if value is None else json.dumps(value)


USERS = [
    (
        f"{FIRST_NAMES[i % len(FIRST_NAMES)]}{i}@example.com",
        f'{{"email":"{FIRST_NAMES[i % len(FIRST_NAMES)]}{i}@example.com",'
        f'"id":{38_651_900 + i},"archived":{"true" if i == 39 else "false"}}}',
    )
    for i in range(40)
]


def utc_today(now: float | None = None) -> date:
    """The current UTC day (from `time.time()`, so time_machine moves it)."""
    return datetime.fromtimestamp(time.time() if now is None else now, UTC).date()


def format_occurred(when: datetime) -> str:
    """KnowBe4's `occurred_date` format: ISO 8601 UTC with milliseconds and Z."""
    when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def parse_when(value: Any) -> datetime:
    """A datetime, date or ISO string as an aware UTC datetime."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, 12, tzinfo=UTC)
    when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def key_hash(key: str | None) -> str:
    """A short, stable, non-reversible name for a key (the log never has keys)."""
    if not key:
        return ""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class RequestRecord:
    """One API request as the sandbox saw it (the judge of the rate limits)."""

    time: float
    method: str
    path: str
    query: str
    key_hash: str
    status: int


@dataclass
class Fault:
    """A fault applied to the next `count` API requests (whose path starts
    with `path`)."""

    kind: str = "status"
    count: int = 1
    status: int | None = None
    body: str | None = None
    delay: float = 0.0
    path: str = "/"
    headers: dict[str, str] = field(default_factory=dict)


class _Event:
    """A stored event: its serialized JSON plus what ordering and filters need.

    The JSON is built once; no dict is kept, so 100,000 events stay small."""

    __slots__ = (
        "id",
        "ts",
        "raw",
        "event_type",
        "email",
        "external_id",
        "source",
        "level",
    )

    def __init__(self, doc: dict, ts: float, raw: bytes | None = None) -> None:
        self.id: str = doc["id"]
        self.ts = ts  # occurred, epoch seconds
        self.raw = raw if raw is not None else _json(doc)
        self.event_type: str = doc["event_type"]["name"]
        self.email: str = doc["user"]["email"]
        self.external_id: str | None = doc["external_id"]
        self.source: str | None = doc["source"]
        self.level: int | None = doc["risk"]["level"]

    @property
    def doc(self) -> dict:
        return json.loads(self.raw)


@dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    truncate: bool = False
    reset: bool = False
    delay: float = 0.0
    drip: float = 0.0  # seconds between the body's bytes


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _event_type_id(name: str) -> int:
    """Stable numeric ids for event types, derived from the name."""
    return 420_000_000 + int(hashlib.sha256(name.encode()).hexdigest()[:6], 16)


EVENT_TYPE_JSON = [
    (
        name,
        _json({"id": _event_type_id(name), "name": name, "description": desc}).decode(),
    )
    for name, desc in EVENT_TYPES
]


class SandboxState:
    """The simulated account: events, limits, faults and the request log.

    Thread-safe: every handler thread goes through `handle()` under one lock
    (except the serialization of pages, which reads immutable bytes).
    """

    def __init__(
        self,
        *,
        api_keys: list[str],
        seed: int | str = 1,
        days: int = 10,
        events_per_day: int = 50,
        per_day: dict[date | str, int] | None = None,
        total_events: int | None = None,
        first_day: date | None = None,
        seats: int = 1000,
        rate_limit: bool = True,
        quota: bool = True,
        reporting_keys: list[str] | None = None,
        reporting: dict[str, Any] | None = None,
    ) -> None:
        from collectors.knowbe4.sandbox_reporting import ReportingAPI

        self.api_keys = list(api_keys)
        # The Reporting API (`/v1/...`, sandbox_reporting.py) has its own keys
        # and limits; `reporting` holds its options (users, origin, ...).
        self.reporting = ReportingAPI(
            keys=reporting_keys or [],
            seed=seed,
            rate_limit=rate_limit,
            clock=time.time,
            **(reporting or {}),
        )
        self.seed = seed
        self.days = days
        self.events_per_day = events_per_day
        self.seats = seats
        self.rate_limit = rate_limit
        self.quota = quota
        # The window starts at a fixed day so that moving time forward never
        # makes events disappear; it ends "today", whenever that is.
        self.first_day = first_day or utc_today() - timedelta(days=days)
        self.per_day: dict[date, int] = {
            (d if isinstance(d, date) else date.fromisoformat(d)): n
            for d, n in (per_day or {}).items()
        }
        if total_events is not None:
            self._spread_total(total_events)
        self.lock = threading.RLock()
        self.requests: list[RequestRecord] = []
        self.faults: deque[Fault] = deque()
        self._days: dict[date, dict[str, _Event]] = {}
        self._sorted: dict[tuple, list[_Event]] = {}
        self._added: dict[date, list[_Event]] = {}
        self._deleted: set[str] = set()
        self._recent: dict[str, deque[float]] = {}
        self._quota_used: dict[tuple[str, date], int] = {}
        self._statuses: dict[str, dict] = {}
        # The gate (see the control API): how many API requests may pass.
        self.gate = threading.Condition()
        self.gate_allow: int | None = None
        self.gate_passed = 0
        self.gate_waiting = 0
        # `make run`'s demo webhook connection posts here (the last 100 kept).
        self.webhooks: deque[dict] = deque(maxlen=100)

    # ----- the gate -------------------------------------------------------

    def pass_gate(self) -> None:
        """Wait until this API request may be answered (the gate allows it)."""
        with self.gate:
            self.gate_waiting += 1
            try:
                self.gate.wait_for(
                    lambda: (
                        self.gate_allow is None or self.gate_passed < self.gate_allow
                    )
                )
            finally:
                self.gate_waiting -= 1
            self.gate_passed += 1
            self.gate.notify_all()

    def set_gate(self, allow: int | None) -> None:
        with self.gate:
            self.gate_allow = None if allow is None else int(allow)
            self.gate.notify_all()

    def gate_status(self) -> dict:
        with self.gate:
            return {
                "allow": self.gate_allow,
                "passed": self.gate_passed,
                "waiting": self.gate_waiting,
            }

    # ----- events ---------------------------------------------------------

    def _spread_total(self, total: int) -> None:
        """Spread `total` events evenly over the closed days of the window."""
        closed = [self.first_day + timedelta(days=i) for i in range(self.days)]
        if not closed:
            return
        share, extra = divmod(total, len(closed))
        for i, day in enumerate(closed):
            self.per_day.setdefault(day, share + (1 if i < extra else 0))

    def count_for(self, day: date) -> int:
        """How many generated events `day` has (added events come on top)."""
        if day < self.first_day:
            return 0
        return self.per_day.get(day, self.events_per_day)

    def _generate(self, day: date) -> dict[str, _Event]:
        """The day's generated events, from an RNG seeded by (seed, day).

        Built straight from JSON fragments (every generated string is plain
        ASCII without quotes), since a benchmark pages 100,000 of them."""
        rng = random.Random(f"{self.seed}:{day.isoformat()}")
        start = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
        prefix = day.isoformat() + "T"
        events: dict[str, _Event] = {}
        bits = rng.getrandbits
        for _ in range(self.count_for(day)):
            event_id = _uuid4(bits(128))
            r = bits(128)
            ms = r % 86_400_000
            r //= 86_400_000
            user, r = r % len(USERS), r // len(USERS)
            etype, r = r % len(EVENT_TYPES), r // len(EVENT_TYPES)
            level, r = r % 23 - 10, r // 23  # 21 levels and two nulls
            level = None if level > 10 else level
            external = f"ext-{r % 10**6}" if r % 10 < 3 else None
            r //= 10**7
            source = SOURCES[r % len(SOURCES)]
            r //= len(SOURCES)
            campaign = r % 40
            seconds, milli = divmod(ms, 1000)
            minutes, sec = divmod(seconds, 60)
            hour, minute = divmod(minutes, 60)
            occurred = f"{prefix}{hour:02d}:{minute:02d}:{sec:02d}.{milli:03d}Z"
            email, user_json = USERS[user]
            name, type_json = EVENT_TYPE_JSON[etype]
            raw = (
                f'{{"id":"{event_id}","account_id":{ACCOUNT_ID},"user":{user_json},'
                f'"external_id":{_str_json(external)},"source":{_str_json(source)},'
                f'"description":"{name.replace("_", " ").capitalize()} '
                f'#{campaign * 97 + user}","occurred_date":"{occurred}",'
                f'"risk":{{"level":{"null" if level is None else level},'
                f'"decay_mode":{"null" if level is None else campaign % 2},'
                f'"expire_date":null}},"metadata":'
                + (
                    "null"
                    if campaign >= 20
                    else f'{{"campaign":"campaign-{campaign}","score":{user}}}'
                )
                + f',"event_type":{type_json}}}'
            ).encode()
            ev = _Event.__new__(_Event)
            ev.id, ev.ts, ev.raw = event_id, start + ms / 1000, raw
            ev.event_type, ev.email, ev.level = name, email, level
            ev.external_id, ev.source = external, source
            events[event_id] = ev
        return events

    @staticmethod
    def _make_doc(
        *,
        event_id: str,
        ts: float,
        email: str,
        user_id: int,
        event_type: str,
        event_description: str | None = None,
        external_id: str | None = None,
        source: str | None = None,
        description: str | None = None,
        risk_level: int | None = None,
        decay_mode: int | None = 0,
        expire_date: str | None = None,
        metadata: dict | None = None,
    ) -> dict:
        """An event in KnowBe4's shape (field order as in recorded responses)."""
        return {
            "id": event_id,
            "account_id": ACCOUNT_ID,
            "user": {"email": email, "id": user_id, "archived": False},
            "external_id": external_id,
            "source": source,
            "description": description,
            "occurred_date": format_occurred(datetime.fromtimestamp(ts, UTC)),
            "risk": {
                "level": risk_level,
                "decay_mode": decay_mode,
                "expire_date": expire_date,
            },
            "metadata": metadata,
            "event_type": {
                "id": _event_type_id(event_type),
                "name": event_type,
                "description": event_description,
            },
        }

    def day_events(self, day: date) -> dict[str, _Event]:
        """All events of `day`, generated on first use and cached (under lock)."""
        with self.lock:
            events = self._days.get(day)
            if events is None:
                events = self._generate(day)
                for ev in self._added.get(day, []):
                    events[ev.id] = ev
                for gone in self._deleted & events.keys():
                    del events[gone]
                self._days[day] = events
            return events

    def warm(self) -> int:
        """Generate (and order) every day of the window now, so no request
        pays for it later (a benchmark times the pages, not the generator)."""
        total = 0
        for day in self._all_days(time.time()):
            total += len(self.sorted_events(day, "occurred_date", False))
            self.sorted_events(day, "occurred_date", True)
        return total

    def _in_window(self, day: date, now: float) -> bool:
        return day <= utc_today(now) and (day >= self.first_day or day in self._added)

    def sorted_events(self, day: date, order_by: str, descending: bool) -> list[_Event]:
        """The day's events in the requested order (cached until a change)."""
        cache_key = (day, order_by, descending)
        with self.lock:
            cached = self._sorted.get(cache_key)
            if cached is None:
                events = list(self.day_events(day).values())
                if order_by == "id":
                    events.sort(key=lambda e: e.id, reverse=descending)
                elif order_by == "event_type":
                    events.sort(
                        key=lambda e: (e.event_type, e.ts, e.id),
                        reverse=descending,
                    )
                else:
                    events.sort(key=lambda e: (e.ts, e.id), reverse=descending)
                self._sorted[cache_key] = cached = events
            return cached

    def visible(self, day: date, now: float | None = None) -> list[_Event]:
        """The day's events that have occurred by `now`, oldest first."""
        now = time.time() if now is None else now
        if not self._in_window(day, now):
            return []
        events = self.sorted_events(day, "occurred_date", False)
        if day == utc_today(now):
            events = [e for e in events if e.ts <= now]
        return events

    def event_ids(self, start: date, end: date) -> set[str]:
        """Ground truth: ids of every event visible now in [start, end]."""
        ids: set[str] = set()
        day = start
        while day <= end:
            ids.update(e.id for e in self.visible(day))
            day += timedelta(days=1)
        return ids

    def _invalidate(self, day: date) -> None:
        for key in [k for k in self._sorted if k[0] == day]:
            del self._sorted[key]

    def add_event(self, occurred_date: Any = None, **fields: Any) -> dict:
        """Create an event now, possibly backdated (a late event); return it."""
        when = parse_when(occurred_date) if occurred_date else datetime.now(UTC)
        ts = when.timestamp()
        email = fields.get("target_user") or fields.get("email") or "late0@example.com"
        event_type = fields.get("event_type") or "phishing_click"
        if isinstance(event_type, dict):
            event_type = event_type.get("name") or "phishing_click"
        risk = fields.get("risk_level")
        doc = self._make_doc(
            event_id=str(fields.get("id") or uuid.uuid4()),
            ts=ts,
            email=email,
            user_id=38_700_000
            + int(hashlib.sha256(email.encode()).hexdigest()[:4], 16),
            event_type=str(event_type),
            external_id=fields.get("external_id"),
            source=fields.get("source"),
            description=fields.get("description"),
            risk_level=None if risk is None else int(risk),
            decay_mode=fields.get("risk_decay_mode", 0),
            expire_date=fields.get("risk_expire_date"),
            metadata=fields.get("metadata"),
        )
        ev = _Event(doc, ts)
        day = when.date()
        with self.lock:
            self._added.setdefault(day, []).append(ev)
            if day in self._days:
                self._days[day][ev.id] = ev
            self._invalidate(day)
        return doc

    def find(self, event_id: str) -> _Event | None:
        """An event by id among the generated days and the added events."""
        with self.lock:
            for events in self._days.values():
                if event_id in events:
                    return events[event_id]
            for added in self._added.values():
                for ev in added:
                    if ev.id == event_id and event_id not in self._deleted:
                        return ev
        return None

    def delete_event(self, event_id: str) -> bool:
        """Delete an event; False if there is none with that id."""
        with self.lock:
            ev = self.find(event_id)
            if ev is None:
                return False
            self._deleted.add(event_id)
            day = datetime.fromtimestamp(ev.ts, UTC).date()
            self._days.get(day, {}).pop(event_id, None)
            self._invalidate(day)
            return True

    # ----- limits and faults ----------------------------------------------

    def quota_limit(self) -> int:
        return REQUESTS_PER_SEAT * self.seats

    def _check_limits(self, khash: str, now: float) -> _Response | None:
        """429 when the key's quota is spent or its 1-second window is full."""
        today = utc_today(now)
        if self.quota and self._quota_used.get((khash, today), 0) >= self.quota_limit():
            return limit_exceeded(now)
        if self.rate_limit:
            recent = self._recent.setdefault(khash, deque())
            while recent and recent[0] <= now - RATE_WINDOW:
                recent.popleft()
            if len(recent) >= RATE_LIMIT:
                return _Response(
                    429, _json({"message": "Too Many Requests"}), {"Retry-After": "1"}
                )
            recent.append(now)
        self._quota_used[(khash, today)] = self._quota_used.get((khash, today), 0) + 1
        return None

    def reset_limits(self) -> None:
        with self.lock:
            self._recent.clear()
            self._quota_used.clear()
            self.reporting.reset_limits()

    def inject(self, kind: str = "status", count: int = 1, **options: Any) -> Fault:
        """Queue a fault for the next `count` API requests (see `Fault`)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {FAULT_KINDS}")
        if kind == "status" and not options.get("status"):
            raise ValueError("a 'status' fault needs a status code")
        fault = Fault(kind=kind, count=max(1, int(count)), **options)
        with self.lock:
            self.faults.append(fault)
        return fault

    def _take_fault(self, path: str) -> Fault | None:
        for fault in self.faults:
            if path.startswith(fault.path):
                fault.count -= 1
                if fault.count <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    # ----- requests -------------------------------------------------------

    def handle(self, method: str, target: str, headers: Any, body: bytes) -> _Response:
        """Answer one API request: auth, faults, limits, then the endpoint."""
        split = urlsplit(target)
        path = split.path.rstrip("/") or "/"
        auth = headers.get("Authorization") or ""
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        khash = key_hash(key)
        reporting = path == "/v1" or path.startswith("/v1/")
        keys = self.reporting.keys if reporting else self.api_keys
        with self.lock:
            now = time.time()  # under the lock: the log is in time order
            if key not in keys:
                resp = _Response(401, _json({"message": "Unauthorized"}))
            else:
                resp = self._answer(method, path, split.query, body, khash, now)
            self.requests.append(
                RequestRecord(now, method, split.path, split.query, khash, resp.status)
            )
        return resp

    def _answer(
        self, method: str, path: str, query: str, body: bytes, khash: str, now: float
    ) -> _Response:
        """A fault that replaces the answer costs the key nothing; otherwise the
        limits apply, then the endpoint (possibly slowed, truncated or reset)."""
        fault = self._take_fault(path)
        if fault is not None and fault.kind not in PASS_THROUGH_FAULTS:
            return apply_fault(fault, None, now)
        if path == "/v1" or path.startswith("/v1/"):
            resp = self.reporting.check_limits(khash, now) or self.reporting.route(
                method, path, parse_qs(query), now
            )
        else:
            resp = self._check_limits(khash, now) or self._route(
                method, path, parse_qs(query), body, now
            )
        return apply_fault(fault, resp, now) if fault is not None else resp

    def _route(
        self, method: str, path: str, query: dict, body: bytes, now: float
    ) -> _Response:
        parts = path.strip("/").split("/")
        if parts[0] == "events" and len(parts) == 1:
            if method == "GET":
                return self._list_events(query, now)
            if method == "POST":
                return self._create_event(body)
        elif parts[0] == "events" and len(parts) == 2:
            if method == "GET":
                ev = self.find(parts[1])
                if ev is None or ev.ts > now:
                    return _not_found()
                return _Response(200, b'{"data":' + ev.raw + b"}")
            if method == "DELETE":
                if not self.delete_event(parts[1]):
                    return _not_found()
                return _Response(204)
        elif parts[0] == "event_types" and len(parts) == 1 and method == "GET":
            return self._event_types(query)
        elif parts[0] == "statuses" and method == "GET":
            if len(parts) == 1:
                return _Response(200, _json({"data": list(self._statuses.values())}))
            status = self._statuses.get(parts[1]) if len(parts) == 2 else None
            return _Response(200, _json({"data": status})) if status else _not_found()
        else:
            return _not_found()
        return _Response(405, _json({"message": "Method Not Allowed"}))

    def _list_events(self, query: dict, now: float) -> _Response:
        """`GET /events`: filter, order and page one day (or every day)."""

        def arg(name: str) -> str | None:
            values = query.get(name)
            return values[-1] if values else None

        page = _int(arg("page"), 1, lo=1)
        per_page = _int(arg("per_page"), MAX_PER_PAGE, lo=1, hi=MAX_PER_PAGE)
        order_by = arg("order_by") if arg("order_by") in ORDER_FIELDS else None
        direction = (arg("order_direction") or "").lower()
        descending = direction == "desc" if order_by else direction != "asc"
        order_by = order_by or "occurred_date"
        occurred = arg("occurred_date")
        if occurred:
            try:
                days = [date.fromisoformat(occurred[:10])]
            except ValueError:
                return _Response(
                    400, _json({"message": "occurred_date must be YYYY-MM-DD"})
                )
        else:
            days = self._all_days(now)
        events: list[_Event] = []
        for day in days:
            if not self._in_window(day, now):
                continue
            day_events = self.sorted_events(day, order_by, descending)
            if day == utc_today(now):
                day_events = [e for e in day_events if e.ts <= now]
            events.extend(day_events)
        if len(days) > 1:
            events = self._resort(events, order_by, descending)
        events = _filter(events, query)
        return _Response(200, page_body(events, page, per_page))

    def _all_days(self, now: float) -> list[date]:
        today = utc_today(now)
        days = {d for d in self._added if d <= today}
        day = self.first_day
        while day <= today:
            days.add(day)
            day += timedelta(days=1)
        return sorted(days)

    @staticmethod
    def _resort(events: list[_Event], order_by: str, descending: bool) -> list[_Event]:
        if order_by == "id":
            return sorted(events, key=lambda e: e.id, reverse=descending)
        if order_by == "event_type":
            return sorted(
                events,
                key=lambda e: (e.event_type, e.ts, e.id),
                reverse=descending,
            )
        return sorted(events, key=lambda e: (e.ts, e.id), reverse=descending)

    def _create_event(self, body: bytes) -> _Response:
        """`POST /events`: 201 with a request id; the event exists at once."""
        try:
            doc = json.loads(body or b"{}")
        except ValueError:
            return _Response(400, _json({"message": "Invalid JSON"}))
        if not isinstance(doc, dict) or not doc.get("target_user"):
            return _Response(422, _json({"message": "target_user is required"}))
        if not doc.get("event_type"):
            return _Response(422, _json({"message": "event_type is required"}))
        try:
            event = self.add_event(**doc)
        except (TypeError, ValueError):
            return _Response(422, _json({"message": "Invalid event"}))
        request_id = str(uuid.uuid4())
        self._statuses[request_id] = {
            "id": request_id,
            "details": {"events": [event["id"]], "failures": []},
            "processed": format_occurred(datetime.now(UTC)),
        }
        return _Response(201, _json({"data": {"id": request_id}}))

    def _event_types(self, query: dict) -> _Response:
        name = (query.get("name") or [None])[-1]
        data = [
            {
                "id": _event_type_id(n),
                "account_id": ACCOUNT_ID,
                "name": n,
                "description": d,
            }
            for n, d in EVENT_TYPES
            if not name or n == name
        ]
        return _Response(200, _json({"data": data}))

    def record_summary(self) -> list[dict]:
        with self.lock:
            return [asdict(r) for r in self.requests]


def _filter(events: list[_Event], query: dict) -> list[_Event]:
    """Apply the equality filters of `GET /events`."""
    tests = []
    for name, getter in (
        ("event_type", lambda e: e.event_type),
        ("target_user", lambda e: e.email),
        ("external_id", lambda e: e.external_id),
        ("source", lambda e: e.source),
        ("risk_level", lambda e: e.level),
    ):
        values = query.get(name)
        if values:
            want: Any = values[-1]
            if name == "risk_level":
                want = _int(want, None)
            tests.append((getter, want))
    if not tests:
        return events
    return [e for e in events if all(get(e) == want for get, want in tests)]


def _int(value: str | None, default: Any, lo: int | None = None, hi: int | None = None):
    """An integer query parameter, clamped; `default` when absent or unreadable."""
    try:
        number = int(value) if value is not None else default
    except ValueError:
        number = default
    if number is None:
        return None
    if lo is not None:
        number = max(lo, number)
    if hi is not None:
        number = min(hi, number)
    return number


def page_body(events: list[_Event], page: int, per_page: int) -> bytes:
    """The `data`/`meta` envelope of one page, joined from cached event JSON."""
    total = len(events)
    total_pages = (total + per_page - 1) // per_page
    chunk = events[(page - 1) * per_page : page * per_page]
    out_of_range = page > total_pages
    meta = {
        "count": total,
        "limit_value": per_page,
        "total_pages": total_pages,
        "current_page": page,
        "next_page": page + 1 if page < total_pages else None,
        "prev_page": page - 1 if 1 < page <= total_pages + 1 else None,
        "is_first_page": page == 1,
        "is_last_page": page == total_pages,
        "is_out_of_range": out_of_range,
    }
    return (
        b'{"data":['
        + b",".join(e.raw for e in chunk)
        + b'],"meta":'
        + _json(meta)
        + b"}"
    )


def _not_found() -> _Response:
    return _Response(404, _json({"message": "Not Found"}))


def seconds_to_midnight(now: float) -> int:
    """Whole seconds until the next UTC midnight (at least 1)."""
    tomorrow = utc_today(now) + timedelta(days=1)
    midnight = datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=UTC)
    return max(1, int(midnight.timestamp() - now + 0.999))


def limit_exceeded(now: float) -> _Response:
    return _Response(
        429,
        _json({"message": "Limit Exceeded"}),
        {"Retry-After": str(seconds_to_midnight(now))},
    )


HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    b"<body><center><h1>502 Bad Gateway</h1></center><hr>"
    b"<center>cloudfront</center></body></html>"
)


def apply_fault(fault: Fault, resp: _Response | None, now: float) -> _Response:
    """Turn a normal response into the faulty one the test asked for (`resp` is
    only needed by the pass-through kinds)."""
    kind = fault.kind
    if kind in PASS_THROUGH_FAULTS:
        assert resp is not None
        if kind == "slow":
            resp.delay = fault.delay or 2.0
        elif kind == "drip":
            resp.drip = fault.delay or 0.05
        elif kind == "truncate":
            resp.truncate = True
        else:
            resp.reset = True
        return resp
    if kind == "limit_exceeded":
        return limit_exceeded(now)
    if kind == "too_many_requests":
        headers = fault.headers or {"Retry-After": "1"}
        return _Response(429, _json({"message": "Too Many Requests"}), dict(headers))
    if kind == "invalid_json":
        return _Response(fault.status or 200, b'{"data": [{"id": "abc", "occ')
    if kind == "html":
        headers = {"Content-Type": "text/html; charset=utf-8", **fault.headers}
        body = fault.body.encode() if fault.body is not None else HTML_PAGE
        return _Response(fault.status or 502, body, headers)
    status = int(fault.status or 500)
    if fault.body is not None:
        body = fault.body.encode()
    else:
        body = _json({"message": HTTPStatus(status).phrase})
    return _Response(status, body, dict(fault.headers))


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler; each response is written in one send."""

    protocol_version = "HTTP/1.1"
    server_version = "KnowBe4Sandbox/1.0"
    sys_version = ""
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Quiet: the request log is `SandboxServer.requests`."""

    def _body(self) -> bytes | _Response:
        """The request body, or the refusal of one too large or unreadable
        (chunked bodies are not accepted either: nothing here sends one)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return _Response(411, _json({"message": "Length Required"}))
        declared = (self.headers.get("Content-Length") or "0").strip()
        if not declared.isascii() or not declared.isdigit():
            return _Response(400, _json({"message": "Invalid Content-Length"}))
        length = int(declared[:20])
        if length > MAX_REQUEST_BODY:
            return _Response(
                413,
                _json({"message": f"Request body over {MAX_REQUEST_BODY} bytes"}),
            )
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        body = self._body()
        if isinstance(body, _Response):
            self.close_connection = True  # the unread body must not be parsed
            self._send(body)
            return
        try:
            if self.path.startswith("/_sandbox/") or self.path == "/_sandbox":
                resp = self.server.control.handle(self, body)
            else:
                state = self.server.state
                state.pass_gate()
                resp = state.handle(self.command, self.path, self.headers, body)
        except Exception as exc:  # a sandbox bug must not hang the client
            resp = _Response(500, _json({"message": f"Sandbox error: {exc!r}"}))
        self._send(resp)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _dispatch  # noqa: N815

    def _send(self, resp: _Response) -> None:
        if resp.delay:
            time.sleep(resp.delay)
        if resp.reset:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        body = resp.body if resp.status != 204 else b""
        phrase = HTTPStatus(resp.status).phrase if resp.status in _PHRASES else ""
        head = [f"HTTP/1.1 {resp.status} {phrase}".rstrip()]
        headers = {"Content-Type": "application/json; charset=utf-8", **resp.headers}
        if resp.status == 204:
            headers.pop("Content-Type")
        else:
            headers["Content-Length"] = str(len(body))
        headers["Server"] = self.server_version
        for name, value in headers.items():
            head.append(f"{name}: {value}")
        payload = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        if resp.truncate:
            payload = payload[: len(payload) - len(body) // 2]
            self.close_connection = True
            self.wfile.write(payload)
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if resp.drip:
            self._drip(payload[: len(payload) - len(body)], body, resp.drip)
            return
        self.wfile.write(payload)

    def _drip(self, head: bytes, body: bytes, every: float) -> None:
        """Headers at once, then the body one byte at a time (a slow host):
        no single read waits long, so only a total deadline stops a client."""
        self.wfile.write(head)
        self.wfile.flush()
        try:
            for i in range(len(body)):
                time.sleep(every)
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
        except OSError:  # the client gave up: what the fault is for
            self.close_connection = True


_PHRASES = {s.value for s in HTTPStatus}


class _Control:
    """The loopback-only HTTP control interface under `/_sandbox/`."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state

    def handle(self, handler: _Handler, raw: bytes) -> _Response:
        host = handler.client_address[0]
        if not ipaddress.ip_address(host.split("%")[0]).is_loopback:
            return _Response(
                403, _json({"message": "The control API is loopback only"})
            )
        split = urlsplit(handler.path)
        path = split.path.rstrip("/")
        query = parse_qs(split.query)
        method = handler.command
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return _Response(400, _json({"message": "Invalid JSON"}))
        return self._route(method, path, query, body)

    def _route(self, method: str, path: str, query: dict, body: dict) -> _Response:
        state = self.state
        if path == "/_sandbox/requests":
            if method == "GET":
                return _Response(200, _json({"data": state.record_summary()}))
            if method == "DELETE":
                with state.lock:
                    state.requests.clear()
                return _Response(204)
        elif path == "/_sandbox/faults":
            if method == "POST":
                try:
                    fault = state.inject(**body)
                except (TypeError, ValueError) as exc:
                    return _Response(400, _json({"message": str(exc)}))
                return _Response(201, _json({"data": asdict(fault)}))
            if method == "DELETE":
                with state.lock:
                    state.faults.clear()
                return _Response(204)
            if method == "GET":
                with state.lock:
                    return _Response(
                        200, _json({"data": [asdict(f) for f in state.faults]})
                    )
        elif path == "/_sandbox/events" and method == "POST":
            try:
                return _Response(201, _json({"data": state.add_event(**body)}))
            except (TypeError, ValueError) as exc:
                return _Response(400, _json({"message": str(exc)}))
        elif path == "/_sandbox/event_ids" and method == "GET":
            try:
                start = date.fromisoformat(query["start"][-1])
                end = date.fromisoformat((query.get("end") or query["start"])[-1])
            except (KeyError, ValueError):
                return _Response(400, _json({"message": "start=YYYY-MM-DD required"}))
            ids = sorted(state.event_ids(start, end))
            return _Response(200, _json({"data": ids, "count": len(ids)}))
        elif path == "/_sandbox/limits" and method == "DELETE":
            state.reset_limits()
            return _Response(204)
        elif path == "/_sandbox/gate":
            if method == "POST":
                allow = body.get("allow") if isinstance(body, dict) else None
                if allow is not None and (
                    not isinstance(allow, int) or isinstance(allow, bool) or allow < 0
                ):
                    return _Response(400, _json({"message": "allow: an int >= 0"}))
                state.set_gate(allow)
            if method in ("POST", "GET"):
                return _Response(200, _json({"data": state.gate_status()}))
        elif path == "/_sandbox/webhook":
            if method == "POST":  # a local receiver for the demo's notifications
                with state.lock:
                    state.webhooks.append(body)
                return _Response(200, _json({"received": True}))
            if method == "GET":
                with state.lock:
                    return _Response(200, _json({"data": list(state.webhooks)}))
        elif path == "/_sandbox/config" and method == "GET":
            return _Response(200, _json({"data": state_config(state)}))
        else:
            return _not_found()
        return _Response(405, _json({"message": "Method Not Allowed"}))


def state_config(state: SandboxState) -> dict:
    """The sandbox's settings, without its keys (key hashes only)."""
    return {
        "seed": state.seed,
        "first_day": state.first_day.isoformat(),
        "days": state.days,
        "events_per_day": state.events_per_day,
        "seats": state.seats,
        "daily_quota": state.quota_limit(),
        "rate_limit": state.rate_limit,
        "quota": state.quota,
        "key_hashes": [key_hash(k) for k in state.api_keys],
        "reporting": {
            **state.reporting.config(),
            "key_hashes": [key_hash(k) for k in state.reporting.keys],
        },
    }


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    state: SandboxState
    control: _Control

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (killed by a crash test, timed out) is not
        a sandbox error: no traceback for it."""
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lock = threading.Lock()
        self.connections: set[socket.socket] = set()

    def close_connections(self) -> None:
        """Cut kept-alive connections, so a stopped sandbox answers nothing."""
        with self.lock:
            for conn in list(self.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


def is_loopback_host(host: str) -> bool:
    """Whether binding to `host` listens on this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class SandboxServer:
    """The sandbox as an object: start it, point a client at `url`, steer it.

    `api_keys` defaults to env KNOWBE4_SANDBOX_API_KEY, else a generated key;
    `reporting_keys` (the Reporting API's, never valid on the events side nor
    the other way round) to env KNOWBE4_SANDBOX_REPORTING_API_KEY, else a
    generated one.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_keys: list[str] | str | None = None,
        reporting_keys: list[str] | str | None = None,
        **options: Any,
    ) -> None:
        if not is_loopback_host(host):
            raise ValueError(
                f"The sandbox binds only to a loopback address (127.0.0.1, ::1, "
                f"localhost), not {host!r}: it accepts well-known test keys."
            )
        if isinstance(api_keys, str):
            api_keys = [api_keys]
        if not api_keys:
            api_keys = [default_api_key()]
        if isinstance(reporting_keys, str):
            reporting_keys = [reporting_keys]
        if not reporting_keys:
            reporting_keys = [default_reporting_key()]
        self.state = SandboxState(
            api_keys=api_keys, reporting_keys=reporting_keys, **options
        )
        self.httpd = _HTTPServer((host, port), _Handler, bind_and_activate=True)
        self.httpd.state = self.state
        self.httpd.control = _Control(self.state)
        self.thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return self.httpd.server_address[0]

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_keys(self) -> list[str]:
        return self.state.api_keys

    @property
    def api_key(self) -> str:
        """The first (usually only) valid key."""
        return self.state.api_keys[0]

    @property
    def reporting_key(self) -> str:
        """The first valid Reporting API key."""
        return self.state.reporting.keys[0]

    @property
    def reporting(self):
        """The Reporting API (`sandbox_reporting.ReportingAPI`): its data set
        is ground truth for tests."""
        return self.state.reporting

    def start(self) -> SandboxServer:
        """Serve in a background daemon thread (events generated first)."""
        self.state.warm()
        self.thread = threading.Thread(
            target=self.httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="knowbe4-sandbox",
            daemon=True,
        )
        self.thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread (the management command)."""
        self.httpd.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        self.state.set_gate(None)  # release requests held at the gate
        self.httpd.shutdown()
        self.httpd.server_close()
        self.httpd.close_connections()
        if self.thread:
            self.thread.join(5)

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # The control API, as methods.

    def inject(self, kind: str = "status", count: int = 1, **options: Any) -> Fault:
        """Fault the next `count` API requests; `status=503` alone means kind
        "status". Kinds: status, slow (delay), truncate, invalid_json, html,
        limit_exceeded, too_many_requests, reset."""
        if "status" in options and kind == "status":
            options["status"] = int(options["status"])
        return self.state.inject(kind, count, **options)

    def clear_faults(self) -> None:
        with self.state.lock:
            self.state.faults.clear()

    def set_gate(self, allow: int | None) -> None:
        """Answer only the first `allow` API requests; None opens the gate."""
        self.state.set_gate(allow)

    def gate_status(self) -> dict:
        return self.state.gate_status()

    def add_event(self, occurred_date: Any = None, **fields: Any) -> dict:
        return self.state.add_event(occurred_date, **fields)

    def event_ids(self, start: date, end: date | None = None) -> set[str]:
        return self.state.event_ids(start, end or start)

    @property
    def requests(self) -> list[RequestRecord]:
        with self.state.lock:
            return list(self.state.requests)

    def clear_requests(self) -> None:
        with self.state.lock:
            self.state.requests.clear()

    def reset_limits(self) -> None:
        """Forget the rate windows and the quota spent (a fresh day)."""
        with self.state.lock:
            self.state.reset_limits()

    def add_api_key(self, key: str) -> None:
        with self.state.lock:
            if key not in self.state.api_keys:
                self.state.api_keys.append(key)

    def remove_api_key(self, key: str) -> None:
        """Revoke a key at once (as resetting it in KnowBe4 does)."""
        with self.state.lock:
            if key in self.state.api_keys:
                self.state.api_keys.remove(key)


def default_api_key() -> str:
    """The demo's key from the environment (`make run`), else a fresh one."""
    return os.environ.get("KNOWBE4_SANDBOX_API_KEY") or secrets.token_urlsafe(24)


def default_reporting_key() -> str:
    """The demo's Reporting key from the environment, else a fresh one."""
    return os.environ.get("KNOWBE4_SANDBOX_REPORTING_API_KEY") or (
        secrets.token_urlsafe(24)
    )

"""KnowBe4's event schema: which entries of a `/events` page can be stored.

The client hands every page's `data` list to `split()`. An entry is kept when
it is a JSON object with an `id` that is a string of at most `id_max`
characters the database can hold, and an `occurred_date` that reads as an ISO
8601 time. Any other entry is a `Rejected` item: the raw bytes of that JSON
object as KnowBe4 sent them plus the reason, which the engine puts into
quarantine instead of failing the page (one bad event must never stop a
source). Text that is merely awkward (NUL characters, lone surrogates) is not
a reason to refuse an event: `storable()` cleans the extracted columns and the
`raw` column keeps the event as sent.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")
# What a database text column cannot hold: NUL, and lone UTF-16 surrogates
# (which JSON's \ud800 escapes can produce and UTF-8 cannot encode).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


# A run of 19 digits or more may be an integer beyond 64 bits, which orjson
# would read as a float (2**70 -> 1.1805916207174113e+21): json keeps it whole.
# Found by mapping every digit to "0" and every other byte to " " (one C pass)
# and looking for nineteen "0"s: a tenth of the time of `re.search(rb"\d{19,}")`,
# which tried a match at every digit of a page (0.6 ms a page, orjson's 0.2).
_DIGITS_ONLY = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))
_LONG_RUN = b"0" * 19


def _has_long_number(body: bytes) -> bool:
    """Whether the body holds a run of 19 digits or more."""
    return _LONG_RUN in body.translate(_DIGITS_ONLY)


def loads(body: bytes) -> tuple[Any, bool]:
    """A JSON body parsed: (document, native).

    orjson first: it parses a page of events four times faster than Python's
    json, which was a sixth of a collect process's CPU. What orjson refuses
    or would change but json reads (a lone surrogate escape such as \\ud800,
    NaN, 1e400, an integer beyond 64 bits, a UTF-16 body) is parsed by json
    as before, and `native` is then False: only a native document re-encodes
    exactly with orjson (`dumps`). Raises ValueError when neither parses it.
    """
    if not _has_long_number(body):
        try:
            return orjson.loads(body), True
        except orjson.JSONDecodeError:
            pass
    return json.loads(body), False


_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(value: Any, native: bool = False) -> str:
    """Compact JSON text (key order kept, non-ASCII as is) of a parsed value.

    `native`: parsed by orjson (see `loads`), so orjson writes it back, eight
    times faster than json and to the same text (floats are spelt as Python
    spells them). Otherwise, and past orjson's nesting limit, json.
    """
    if native:
        try:
            return orjson.dumps(value).decode()
        except orjson.JSONEncodeError:
            pass
    return _COMPACT.encode(value)


# The reason code of a whole page kept in quarantine.
PAGE_CODE = "unreadable_page"


class UnreadableDate(ValueError):
    """An `occurred_date` that is not an ISO 8601 time."""


@dataclass(frozen=True)
class Rejected:
    """An entry of a page (or a whole page) that cannot be stored as it is."""

    raw: bytes
    code: str
    reason: str
    event_id: str = ""
    # A Reporting record's data type and parent (see QuarantinedEvent).
    data_type: str = "events"
    parent: str = ""


def parse_occurred(value: object) -> datetime:
    """Parse an event's `occurred_date` (ISO 8601; naive means UTC) as UTC."""
    if not isinstance(value, str):
        raise UnreadableDate(f"occurred_date is not a string ({type(value).__name__})")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        return when.astimezone(UTC)
    except (ValueError, OverflowError):
        raise UnreadableDate(f"unreadable occurred_date {value[:40]!r}") from None


def storable(text: str) -> str:
    """Text a database column can hold: NUL removed, lone surrogates replaced."""
    if text.isascii() and "\x00" not in text:
        return text  # The common case, in two C scans (a third of a search).
    if not _UNSTORABLE.search(text):
        return text
    return _UNSTORABLE.sub(lambda m: "" if m.group() == "\x00" else "\ufffd", text)


def problem(entry: object, id_max: int) -> tuple[str, str] | None:
    """Why `entry` cannot be stored as a message, as (code, reason); None if it can."""
    if not isinstance(entry, dict):
        return "not_an_object", f"The entry is not a JSON object ({_json_kind(entry)})."
    if "id" not in entry or entry["id"] in (None, ""):
        return "missing_id", "The event has no id."
    event_id = entry["id"]
    if not isinstance(event_id, str) or len(event_id) > id_max:
        return (
            "invalid_id",
            f"The event id is not a string of at most {id_max} characters "
            f"({_json_kind(event_id)}"
            + (f", {len(event_id)} characters" if isinstance(event_id, str) else "")
            + ").",
        )
    if _UNSTORABLE.search(event_id):
        return "invalid_id", "The event id holds a NUL or an unpaired surrogate."
    value = entry.get("occurred_date")
    if value in (None, ""):
        return "missing_occurred_date", "The event has no occurred_date."
    try:
        parse_occurred(value)
    except UnreadableDate:
        shown = value[:40] if isinstance(value, str) else _json_kind(value)
        return (
            "unreadable_occurred_date",
            f"The occurred_date {shown!r} is not an ISO 8601 time.",
        )
    return None


def split(
    data: list, body: bytes, id_max: int, checker=None
) -> tuple[list[dict], list[Rejected]]:
    """(storable events, rejected entries) of a page's `data` list.

    `body` is the page as received: a rejected entry keeps its own bytes of
    it. `checker` replaces `problem` (Reprocess after an upgrade uses the
    current one; tests use it to stand for that upgrade).
    """
    check = checker or problem
    good: list[dict] = []
    bad: list[tuple[int, str, str]] = []
    for index, entry in enumerate(data):
        found = check(entry, id_max)
        if found is None:
            good.append(entry)
        else:
            bad.append((index, *found))
    if not bad:
        return good, []
    spans = _data_spans(body)
    rejected = []
    for index, code, reason in bad:
        entry = data[index]
        raw = _raw_bytes(body, spans, index, len(data)) or json.dumps(entry).encode()
        rejected.append(Rejected(raw, code, reason, _shown_id(entry, id_max)))
    return good, rejected


def whole_page(body: bytes, reason: str) -> Rejected:
    """A page whose events cannot be told apart: kept whole."""
    return Rejected(body, PAGE_CODE, reason)


def _json_kind(value: object) -> str:
    """The JSON name of a value's type, for reasons shown to a user."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _shown_id(entry: object, id_max: int) -> str:
    """Something to recognise a rejected entry by on the quarantine list."""
    if isinstance(entry, dict) and entry.get("id") not in (None, ""):
        return storable(str(entry["id"]))[:id_max]
    return ""


def _raw_bytes(body: bytes, spans, index: int, count: int) -> bytes | None:
    if spans is None or len(spans[1]) != count:
        return None
    text, found = spans
    start, end = found[index]
    return text[start:end].encode("utf-8", "surrogatepass")


def _data_spans(body: bytes) -> tuple[str, list[tuple[int, int]]] | None:
    """Where each entry of the top-level `data` array is in the page's text.

    Walks the envelope with the C JSON scanner (only for a page that has a
    rejected entry). The last `data` key wins, as in `json.loads`.
    """
    try:
        text = body.decode(json.detect_encoding(body))
        return text, _scan(text)
    except (ValueError, IndexError):
        return None


def _scan(text: str) -> list[tuple[int, int]]:
    def skip(pos: int) -> int:
        return _SPACE.match(text, pos).end()

    pos = skip(0)
    if text[pos] != "{":
        raise ValueError("not an object")
    spans: list[tuple[int, int]] | None = None
    pos = skip(pos + 1)
    while text[pos] != "}":
        key, pos = _DECODER.raw_decode(text, pos)
        pos = skip(pos)
        if text[pos] != ":":
            raise ValueError("no colon")
        pos = skip(pos + 1)
        if key == "data" and text[pos] == "[":
            spans, pos = _array_spans(text, pos, skip)
        else:
            _, pos = _DECODER.raw_decode(text, pos)
        pos = skip(pos)
        if text[pos] == ",":
            pos = skip(pos + 1)
    if spans is None:
        raise ValueError("no data array")
    return spans


def _array_spans(text: str, pos: int, skip) -> tuple[list[tuple[int, int]], int]:
    spans = []
    pos = skip(pos + 1)
    if text[pos] == "]":
        return spans, pos + 1
    while True:
        _, end = _DECODER.raw_decode(text, pos)
        spans.append((pos, end))
        pos = skip(end)
        if text[pos] == "]":
            return spans, pos + 1
        if text[pos] != ",":
            raise ValueError("no comma")
        pos = skip(pos + 1)

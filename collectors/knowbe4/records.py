"""The Reporting API's records as messages: data types, identity, time.

A Reporting record is stored as a message whose identity is (source, data
type, record id, identity hash), unique in the database (the `content_hash`
column). A record is stored again exactly when its content differs from its
LATEST stored version (the highest id of its source, data type and record
id), so Messages hold every version (when a recipient clicked, when an
enrollment went Past Due, when a user was archived, and when restored).

Content is compared as canonical JSON (keys sorted, compact), so the order in
which KnowBe4 sends keys is no change. The identity hash (`follow`) of a
record's first version is SHA-256 of its canonical JSON (the content hash);
of each later version, SHA-256 of the identity of the version it follows, a
newline and its canonical JSON. So content equal to an OLDER version (A -> B
-> A, a return after a deletion) is a new identity, while the same content
read again against the same latest version (a page re-read after a crash, a
duplicate delivery) gives the same identity, which the database stores once.

A version's message time is the record's own time where it has one (the
recipient's latest event, an enrollment's completion, a user's archiving, a
test's start, a risk score's date), otherwise the time the change was seen.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime

# The choices of the source form's "Data types" (the setting's values).
DATA_TYPE_CHOICES = [
    ("phishing", "Phishing security tests and recipients"),
    ("users", "Users"),
    ("groups", "Groups and members"),
    ("training", "Training campaigns and enrollments"),
    ("account", "Account and risk score history"),
]
DEFAULT_DATA_TYPES = ["phishing"]
DEFAULT_POLL_HOURS = 24
DEFAULT_RECIPIENTS_DAYS = 14


def settings_of(source) -> dict:
    """A Reporting source's settings (`Source.reporting`) with their defaults:
    read by the snapshot reader and by the quota governor."""
    conf = dict(source.reporting or {})
    return {
        "data_types": list(conf.get("data_types") or DEFAULT_DATA_TYPES),
        "poll_hours": int(conf.get("poll_hours") or DEFAULT_POLL_HOURS),
        "licensed_users": int(conf.get("licensed_users") or 0),
        "recipients_days": int(conf.get("recipients_days", DEFAULT_RECIPIENTS_DAYS)),
    }


# The message types each setting's data type reads (its endpoints' records).
MESSAGE_TYPES_OF = {
    "phishing": (
        "phishing_test",
        "phishing_recipient",
        "callback_test",
        "callback_recipient",
    ),
    "users": ("user",),
    "groups": ("group", "group_member"),
    "training": ("training_campaign", "training_enrollment"),
    "account": ("account", "account_risk_score"),
}


# The recipients' data type of each kind of security test (a callback test's
# records have the shape of a phishing test's; KnowBe4 serves them apart,
# asked with `campaign_type=callback`).
TEST_RECIPIENTS = {
    "phishing_test": "phishing_recipient",
    "callback_test": "callback_recipient",
}


# Message data types (the Messages page's filter): label per stored type.
MESSAGE_TYPES = {
    "events": "User events",
    "phishing_test": "Phishing security test",
    "phishing_recipient": "Phishing recipient",
    "callback_test": "Callback security test",
    "callback_recipient": "Callback recipient",
    "user": "User",
    "group": "Group",
    "group_member": "Group member",
    "training_campaign": "Training campaign",
    "training_enrollment": "Training enrollment",
    "account": "Account",
    "account_risk_score": "Account risk score",
}


class PoisonRecord(ValueError):
    """A record that cannot be stored as it is (no id, not an object)."""


@dataclass(frozen=True)
class Version:
    """One record version, ready to be a message row. `content_hash` is the
    plain content hash as read (`version`), the identity once it `follow`s
    the record's latest stored version."""

    data_type: str
    record_id: str
    content_hash: str
    raw: str
    time: datetime | None  # the record's own time, None: when seen
    user_email: str
    event_type: str


CANONICAL = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def canonical(record: dict) -> str:
    return CANONICAL.encode(record)


def content_hash(record: dict) -> str:
    """SHA-256 of the canonical JSON (surrogates kept as escapes)."""
    return hashlib.sha256(
        canonical(record).encode("utf-8", "surrogatepass")
    ).hexdigest()


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 time or a `YYYY-MM-DD` date (risk histories send both) as
    aware UTC; None when absent or unreadable (then the time seen is used)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


RECIPIENT_TIMES = (
    "delivered_at",
    "opened_at",
    "clicked_at",
    "replied_at",
    "attachment_opened_at",
    "macro_enabled_at",
    "data_entered_at",
    "reported_at",
)


def _latest(record: dict, names: tuple[str, ...]) -> datetime | None:
    times = [t for t in (parse_time(record.get(n)) for n in names) if t]
    return max(times) if times else None


# data type -> (id field, own time, email of the record's user, type label)
def _recipient_time(r: dict) -> datetime | None:
    return _latest(r, RECIPIENT_TIMES)


def _user_time(r: dict) -> datetime | None:
    return parse_time(r.get("archived_at")) if r.get("status") == "archived" else None


def _enrollment_time(r: dict) -> datetime | None:
    return parse_time(r.get("completion_date"))


RULES = {
    "phishing_test": ("pst_id", lambda r: parse_time(r.get("started_at"))),
    "phishing_recipient": ("recipient_id", _recipient_time),
    # Callback tests (`campaign_type=callback`): the same records, their own types.
    "callback_test": ("pst_id", lambda r: parse_time(r.get("started_at"))),
    "callback_recipient": ("recipient_id", _recipient_time),
    "user": ("id", _user_time),
    "group": ("id", lambda r: None),
    "group_member": ("id", lambda r: None),
    "training_campaign": ("campaign_id", lambda r: None),
    "training_enrollment": ("enrollment_id", _enrollment_time),
    "account": (None, lambda r: None),
    "account_risk_score": ("date", lambda r: parse_time(r.get("date"))),
}


@dataclass(frozen=True)
class Latest:
    """A record's latest stored version (its highest id): what the next
    version of the record follows."""

    identity: str  # its `content_hash` column
    raw: str  # its canonical JSON
    user_email: str = ""


def follow(v: Version, latest: Latest | None) -> Version | None:
    """The one rule of a change history, for the snapshot reader, tombstones
    and Reprocess alike: `v` (just read, its hash the plain content hash) as
    the version to store after the record's `latest` stored version, or None
    when it is no change.

    A record's first version keeps its content hash as identity; a later one
    gets SHA-256 of `latest`'s identity, a newline and its canonical JSON, so
    its identity depends only on what it follows and what it holds: read
    again against the same latest version (a retry, a duplicate delivery) it
    is the same identity, which the unique constraint stores once. No change
    when `latest` holds the same canonical JSON, or when its identity is this
    content's plain hash (a version stored before this rule, whose identity
    was always its content hash)."""
    if latest is None:
        return v
    if latest.raw == v.raw or latest.identity == v.content_hash:
        return None
    chained = hashlib.sha256(
        f"{latest.identity}\n".encode() + v.raw.encode("utf-8", "surrogatepass")
    ).hexdigest()
    return replace(v, content_hash=chained)


# Data types whose list is read whole each snapshot, so a record absent from
# a complete read was deleted: they get tombstones. Not the recipients (a
# test's recipients are fixed once it is sent, and old tests are not re-read),
# the account (one object) nor its risk history (a window that moves).
TOMBSTONED = frozenset(
    {
        "phishing_test",
        "callback_test",
        "user",
        "group",
        "group_member",
        "training_campaign",
        "training_enrollment",
    }
)
TOMBSTONE_KEYS = frozenset({"id", "deleted", "data_type", "previous_version"})


def tombstone(data_type: str, record_id: str, latest: Latest) -> Version:
    """The version saying record `record_id` was deleted, following its
    `latest` stored version (not a tombstone): its raw JSON is
    `{"data_type", "deleted": true, "id", "previous_version"}`, the last one
    being the identity of the version it follows, so the tombstone of a given
    version has one identity however often the absence is seen. No time of
    its own: its message time is when the absence was seen; the user email is
    the latest version's."""
    doc = {
        "id": record_id,
        "deleted": True,
        "data_type": data_type,
        "previous_version": latest.identity,
    }
    stone = Version(
        data_type=data_type,
        record_id=record_id,
        content_hash=content_hash(doc),
        raw=canonical(doc),
        time=None,
        user_email=latest.user_email,
        event_type=f"{MESSAGE_TYPES[data_type]}: deleted",
    )
    followed = follow(stone, latest)
    if followed is None:
        raise ValueError(f"The latest version of {record_id} is a tombstone.")
    return followed


def is_tombstone(raw: str) -> bool:
    """Whether a stored version's raw JSON is a tombstone."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return False
    return (
        isinstance(doc, dict) and set(doc) == TOMBSTONE_KEYS and doc["deleted"] is True
    )


def _email(record: dict) -> str:
    user = record.get("user")
    email = user.get("email") if isinstance(user, dict) else record.get("email")
    return email if isinstance(email, str) else ""


def version(data_type: str, record: object, *, parent: object = None) -> Version:
    """The version of `record` as a `data_type` message; PoisonRecord when it
    cannot be one. `parent` prefixes the id of a record that only exists
    under another (a group's member: "group:user")."""
    if not isinstance(record, dict):
        raise PoisonRecord("The record is not a JSON object.")
    id_field, own_time = RULES[data_type]
    if id_field is None:
        record_id = data_type
    else:
        value = record.get(id_field)
        if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
            raise PoisonRecord(f"The record has no usable '{id_field}'.")
        record_id = str(value)
    if parent is not None:
        record_id = f"{parent}:{record_id}"
    if len(record_id) > 64:
        raise PoisonRecord("The record's id is over 64 characters.")
    status = record.get("status")
    return Version(
        data_type=data_type,
        record_id=record_id,
        content_hash=content_hash(record),
        raw=canonical(record),
        time=own_time(record),
        user_email=_email(record),
        event_type=f"{MESSAGE_TYPES[data_type]}"
        + (f": {status}" if isinstance(status, str) and status else ""),
    )

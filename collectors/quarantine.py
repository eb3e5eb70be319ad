"""Events that could not be stored: keeping them, the Warning, and Reprocess.

An event KnowBe4 sent that cannot be stored as it is (no id, an id that is no
string of at most 64 characters, no readable `occurred_date`, an entry that
is no JSON object, or a row the database refused) never fails its page: the
engine stores the page's other events and the checkpoint, and puts the bad
one here, in the same transaction. While any is left, the source has one open
Warning, "N events could not be stored", whose link leads to the quarantine
list on the source page. Reprocess there tries them again with the code now
running (after an upgrade that fixes the cause); the Warning is resolved when
none is left.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import date

from django.db import transaction
from django.utils import timezone

from collectors import health
from collectors.choices import ErrorType, HealthEventName, Severity
from collectors.knowbe4 import events
from collectors.models import QuarantinedEvent, Source

logger = logging.getLogger(__name__)

FIX = (
    "The events are kept as they were sent, in the quarantine list on the source "
    "page; collection goes on without them. After an upgrade that fixes the cause, "
    "use Reprocess there."
)


def _cut(model_field: str, text: str) -> str:
    return text[: QuarantinedEvent._meta.get_field(model_field).max_length]


def add(source: Source, day: date, page: int, rejected: list[events.Rejected]) -> int:
    """Keep the rejected items of one page; the same bytes once per source.

    Runs inside the page's transaction, so the page's messages, the
    checkpoint and its quarantined events are committed together. Returns
    how many rows are new, and raises or updates the Warning when any is.
    """
    if not rejected:
        return 0
    pending = QuarantinedEvent.objects.filter(source=source).pending()
    before = pending.count()
    QuarantinedEvent.objects.bulk_create(
        [
            QuarantinedEvent(
                source=source,
                day=day,
                page=page,
                event_id=_cut("event_id", item.event_id),
                data_type=item.data_type,
                parent=_cut("parent", item.parent),
                reason_code=_cut("reason_code", item.code),
                reason=_cut("reason", item.reason),
                raw=item.raw,
                digest=hashlib.sha256(item.raw).hexdigest(),
            )
            for item in rejected
        ],
        ignore_conflicts=True,
    )
    added = pending.count() - before
    if added:
        logger.warning(
            "source %s: %d event(s) of %s page %d quarantined",
            source.pk,
            added,
            day,
            page,
        )
        update_warning(source)
    return added


def update_warning(source: Source) -> int:
    """Open (or update) the Warning while events are left; resolve it otherwise."""
    left = QuarantinedEvent.objects.filter(source=source).pending().count()
    if not left:
        health.resolve(source, HealthEventName.EVENTS_NOT_STORED)
        return 0
    health.record(
        source,
        ErrorType.THIRD_PARTY_GENERIC,
        event_name=HealthEventName.EVENTS_NOT_STORED,
        code="events_not_stored",
        message=f"{left} event{'s' if left != 1 else ''} could not be stored.",
        suggested_fix=FIX,
        severity=Severity.WARNING,
    )
    return left


def reprocess(source: Source, checker=None) -> tuple[int, int]:
    """Try every pending row of the source again; return (stored, still left).

    An event row is stored when the current rules accept it (an event already
    stored counts as stored); a whole page is split again, its good events
    stored and its bad ones kept as event rows. A Reporting record (a row
    whose `data_type` is not "events") is stored as a version of its data
    type by the snapshot reader's writer, exactly once by its identity. One
    transaction: a failure leaves the quarantine as it was.
    """
    writers = _Writers(source, checker)
    stored = 0
    with transaction.atomic():
        rows = list(
            QuarantinedEvent.objects.select_for_update().filter(source=source).pending()
        )
        for row in rows:
            if row.data_type == "events":
                done, added = _retry(writers.events, row)
            else:
                done, added = writers.versions.reprocess(row)
            stored += added
            if done:
                row.reprocessed_at = timezone.now()
                row.save(update_fields=["reprocessed_at"])
        left = update_warning(source)
    logger.info("source %s: reprocess stored %d, %d left", source.pk, stored, left)
    return stored, left


class _Writers:
    """The writer of each kind of quarantined row, made when first needed: a
    User Event goes through the events writer, a Reporting record through the
    snapshot reader's version writer (its data type, identity and time)."""

    def __init__(self, source: Source, checker) -> None:
        self.source, self.checker = source, checker
        self._events = self._versions = None

    @property
    def events(self):
        from collectors.engine.store import MessageWriter

        if self._events is None:
            self._events = MessageWriter(self.source, checker=self.checker)
        return self._events

    @property
    def versions(self):
        from collectors.engine.versions import VersionWriter

        if self._versions is None:
            self._versions = VersionWriter(self.source)
        return self._versions


def _retry(writer, row: QuarantinedEvent) -> tuple[bool, int]:
    """(row done, messages new) for one quarantined row."""
    raw = bytes(row.raw)
    try:
        doc = json.loads(raw)
    except ValueError:
        return False, 0
    if row.reason_code == events.PAGE_CODE:
        data = doc.get("data") if isinstance(doc, dict) else None
        if not isinstance(data, list):
            return False, 0
        body = raw
    else:
        data, body = [doc], b'{"data":[' + raw + b"]}"
    good, bad = writer.split_entries(data, body)
    stored, refused = writer.insert(writer.rows(good, timezone.now()))
    if row.reason_code != events.PAGE_CODE:
        if bad or refused:
            item = (bad or refused)[0]
            row.reason_code, row.reason = item.code, _cut("reason", item.reason)
            row.save(update_fields=["reason_code", "reason"])
            return False, stored
        return True, stored
    add(row.source, row.day, row.page, [*bad, *refused])
    return True, stored

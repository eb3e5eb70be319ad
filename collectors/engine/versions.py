"""Storing Reporting record versions: record -> row, the INSERT, Reprocess.

The snapshot reader's counterpart of `store.MessageWriter`: it turns records
of one data type into versions (`knowbe4.records`), versions into LogMessage
rows with the source's metadata, and INSERTs them skipping those stored
already (the unique identity (source, data type, record id, content hash)).
A snapshot page and Reprocess of a quarantined Reporting record go through
the same writer, so a version is built, timed and stored by the same rules
whichever way it arrives. After a complete read of a list it also finds the
records that were deleted (`deletions`), whose tombstones are versions too.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime

from django.db import connection
from django.utils import timezone

from collectors.engine import store
from collectors.knowbe4 import events, records
from collectors.models import LogMessage, QuarantinedEvent, Source

logger = logging.getLogger(__name__)

INSERT_CHUNK = 200
LOOKUP_CHUNK = 500
COLUMNS = (*store.COLUMNS, "data_type", "content_hash")
POISON_CODE = "poison_record"


class VersionWriter:
    """Turns one Reporting source's records into version rows and INSERTs
    them. The metadata (name, category, collector, the fields the schema
    keeps) is read once, by the events writer it wraps."""

    def __init__(self, source: Source) -> None:
        self.meta = store.MessageWriter(source)
        self.source = source
        self.adapt_time = self.meta.adapt_time

    def split(
        self,
        data_type: str,
        page_records: list,
        parent: str | None = None,
        gone: dict[str, str] | None = None,
    ) -> tuple[list[records.Version], list[events.Rejected]]:
        """(versions, poison records) of one page's records; a poison record
        keeps its data type and parent for Reprocess. A record in `gone`
        (record id -> its tombstone's hash) is back after a deletion: its
        version's hash is salted with the tombstone's (`records.returned`)."""
        good, bad = [], []
        for record in page_records:
            try:
                v = records.version(data_type, record, parent=parent)
                after = gone.get(v.record_id) if gone else None
                good.append(v if after is None else records.returned(v, after))
            except records.PoisonRecord as exc:
                raw = events.dumps(record).encode("utf-8", "surrogatepass")
                bad.append(
                    events.Rejected(
                        raw,
                        POISON_CODE,
                        str(exc),
                        data_type=data_type,
                        parent=parent or "",
                    )
                )
        return good, bad

    def rows(
        self, versions: list[records.Version], seen: datetime, received: datetime
    ) -> list[tuple]:
        """LogMessage rows (COLUMNS order): a version's message time is the
        record's own time, else `seen` (when the change was seen)."""
        m, adapt = self.meta, self.adapt_time
        at, seen_at = adapt(received), adapt(seen)
        return [
            (
                self.source.pk,
                v.record_id,
                v.raw,
                seen_at if v.time is None else adapt(v.time),
                at,
                *m.metadata,
                v.event_type[: m.type_max],
                None,
                v.user_email[: m.email_max],
                v.data_type,
                v.content_hash,
            )
            for v in versions
        ]

    def deletions(
        self, data_type: str, parent: str | None, seen: set[str], gone: dict[str, str]
    ) -> tuple[list[records.Version], dict[str, str]]:
        """After a complete read of one list: (tombstones to store, record id
        -> tombstone hash of every record now deleted that `gone` lacked).

        A record of this list (a group's members: of that group) stored before,
        not `seen` in this read and not deleted already gets a tombstone that
        follows its latest version. One whose latest version is a tombstone
        already (a checkpoint that lost it) only rejoins `gone`."""
        stored = LogMessage.objects.filter(
            source_id=self.source.pk, data_type=data_type
        )
        if parent is not None:
            stored = stored.filter(event_id__startswith=f"{parent}:")
        known = set(stored.values_list("event_id", flat=True).distinct())
        missing = sorted(known - seen - set(gone))
        tombstones, deleted = [], {}
        for i in range(0, len(missing), LOOKUP_CHUNK):
            chunk = missing[i : i + LOOKUP_CHUNK]
            latest = {
                event_id: (content_hash, raw, email)
                for event_id, content_hash, raw, email in stored.filter(
                    event_id__in=chunk
                )
                .order_by("id")
                .values_list("event_id", "content_hash", "raw", "user_email")
            }
            for event_id in chunk:
                content_hash, raw, email = latest[event_id]
                if records.is_tombstone(raw):
                    deleted[event_id] = content_hash
                    continue
                t = records.tombstone(data_type, event_id, content_hash, email)
                tombstones.append(t)
                deleted[event_id] = t.content_hash
        return tombstones, deleted

    def insert(self, rows: list[tuple]) -> int:
        """INSERT the rows in chunks; return how many versions were new."""
        return sum(
            _insert(rows[i : i + INSERT_CHUNK])
            for i in range(0, len(rows), INSERT_CHUNK)
        )

    def reprocess(self, row: QuarantinedEvent) -> tuple[bool, int]:
        """(done, versions new) for one quarantined Reporting record: stored
        as its data type's version by the rules now running, timed by when it
        was first seen (quarantined) where it has no time of its own. A
        version stored already (a later snapshot read it) counts as done."""
        try:
            record = json.loads(bytes(row.raw))
        except ValueError:
            return False, 0
        good, bad = self.split(row.data_type, [record], row.parent or None)
        if bad:
            row.reason_code = bad[0].code
            row.reason = bad[0].reason[: _width("reason")]
            row.save(update_fields=["reason_code", "reason"])
            return False, 0
        return True, self.insert(self.rows(good, row.created, timezone.now()))


def _width(field: str) -> int:
    return QuarantinedEvent._meta.get_field(field).max_length


def _insert(rows: list[tuple]) -> int:
    """INSERT the versions, skipping those stored already (the unique
    identity); return how many were new."""
    if not rows:
        return 0
    quote = connection.ops.quote_name
    table = quote(LogMessage._meta.db_table)
    columns = ", ".join(quote(c) for c in COLUMNS)
    one = "(" + ", ".join(["%s"] * len(COLUMNS)) + ")"
    # Only quoted names and placeholders: the values go as parameters.
    sql = (
        f"INSERT INTO {table} ({columns}) VALUES "  # noqa: S608
        + ", ".join([one] * len(rows))
        + f" ON CONFLICT DO NOTHING RETURNING {quote('id')}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [value for row in rows for value in row])
        return len(cursor.fetchall())

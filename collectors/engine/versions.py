"""Storing Reporting record versions: record -> row, the INSERT, Reprocess.

The snapshot reader's counterpart of `store.MessageWriter`: it turns records
of one data type into versions (`knowbe4.records`), keeps those that differ
from their record's latest stored version, with the identity that follows it
(`records.follow`, read in one query per page: `latest`), turns them into
LogMessage rows with the source's metadata, and INSERTs them skipping those
stored already (the unique identity (source, data type, record id, identity
hash)). A snapshot page and Reprocess of a quarantined Reporting record go
through the same writer, so a version is built, timed, identified and stored
by the same rules whichever way it arrives. After a complete read of a list
it also finds the records that were deleted (`deletions`), whose tombstones
follow their latest versions by the same rule.
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
        self, data_type: str, page_records: list, parent: str | None = None
    ) -> tuple[list[records.Version], list[events.Rejected]]:
        """(versions as read, poison records) of one page's records; a poison
        record keeps its data type and parent for Reprocess."""
        good, bad = [], []
        for record in page_records:
            try:
                good.append(records.version(data_type, record, parent=parent))
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

    def lock(self) -> None:
        """Take the source's row lock for the rest of the transaction, before
        reading latest versions: a snapshot page and Reprocess of the same
        source then never both follow the same latest version of a record
        (on SQLite the IMMEDIATE transaction already serialises them)."""
        list(
            Source.objects.select_for_update()
            .filter(pk=self.source.pk)
            .values_list("pk", flat=True)
        )

    def latest(self, data_type: str, record_ids) -> dict[str, records.Latest]:
        """Record id -> its latest stored version (the highest id), of these
        records of one data type: ONE query (`_LATEST`), whatever the count.

        For each id (a VALUES row, column `column1` on SQLite and PostgreSQL
        alike) MAX(id) by equality on (source_id, data_type, event_id), the
        three leading columns of the unique index
        `log_message_once_per_version`: one seek into that index per record,
        on SQLite a covering one (the rowid is in every index entry), on
        PostgreSQL an index scan of that record's entries only; then the rows
        picked, by primary key. Why written so: with `event_id IN (...)`
        PostgreSQL seeks on (source_id, data_type) only and filters every
        version of the data type (no statistics) or scans the table (with
        them), and unless the ids are MATERIALIZED first it hashes the whole
        table to join them (the plans: bench/RESULTS-engine.md). The unique
        index serves it, so there is no index of its own to update on every
        INSERT."""
        ids = list(record_ids)
        if not ids:
            return {}
        sql = _LATEST.format(
            # PostgreSQL would otherwise inline it (SQLite before 3.35 lacks
            # the word; it plans the same without it).
            materialized="MATERIALIZED" if connection.vendor == "postgresql" else "",
            table=connection.ops.quote_name(LogMessage._meta.db_table),
            ids=", ".join(["(%s)"] * len(ids)),
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [self.source.pk, data_type, *ids])
            return {
                event_id: records.Latest(identity, raw, email)
                for event_id, identity, raw, email in cursor.fetchall()
            }

    def changes(
        self, data_type: str, found: list[records.Version]
    ) -> list[records.Version]:
        """The versions of `found` (one data type, in the order read) to store:
        each that differs from its record's latest version, with the identity
        that follows it (`records.follow`). A record read twice in the page
        follows its own earlier version there. Call it in the transaction
        that INSERTs them, after `lock`."""
        latest = self.latest(data_type, {v.record_id for v in found})
        new = []
        for v in found:
            followed = records.follow(v, latest.get(v.record_id))
            if followed is not None:
                new.append(followed)
                latest[v.record_id] = records.Latest(
                    followed.content_hash, followed.raw, followed.user_email
                )
        return new

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
        -> tombstone identity of every record now deleted that `gone` lacked).

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
            latest = self.latest(data_type, missing[i : i + LOOKUP_CHUNK])
            for event_id, last in sorted(latest.items()):
                if records.is_tombstone(last.raw):
                    deleted[event_id] = last.identity
                    continue
                t = records.tombstone(data_type, event_id, last)
                tombstones.append(t)
                deleted[event_id] = t.content_hash
        return tombstones, deleted

    def insert(self, rows: list[tuple]) -> int:
        """INSERT the rows in chunks; return how many versions were new."""
        return sum(
            store.insert_rows(rows[i : i + INSERT_CHUNK], COLUMNS)
            for i in range(0, len(rows), INSERT_CHUNK)
        )

    def reprocess(self, row: QuarantinedEvent) -> tuple[bool, int]:
        """(done, versions new) for one quarantined Reporting record: stored
        as its data type's version by the rules now running, when it differs
        from the record's latest stored version (`changes`), timed by when it
        was first seen (quarantined) where it has no time of its own. A record
        equal to its latest version (a later snapshot stored it) is done, and
        so is one read again since it was quarantined (`read_since`): its
        version is older than what is known of the record, and stored now it
        would become the record's latest, which the Overview takes as current.
        The source's lock comes first, before this transaction changes any
        row, so it never waits for it while holding what a page waits for."""
        self.lock()
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
        if self.read_since(row.data_type, good[0].record_id, row.created):
            return True, 0
        new = self.changes(row.data_type, good)
        return True, self.insert(self.rows(new, row.created, timezone.now()))

    def read_since(self, data_type: str, record_id: str, since: datetime) -> bool:
        """Whether the record was read again after `since`: a version of it
        stored since, or a complete snapshot begun since that read its data
        type (one that found it unchanged stores nothing). The checkpoint is
        read from the database, under the source's lock, not from the source
        as it was loaded."""
        done = (
            Source.objects.filter(pk=self.source.pk)
            .values_list("snapshot", flat=True)
            .first()
        ) or {}
        last = records.parse_time(done.get("last_snapshot"))
        if last is not None and last > since and data_type in done.get("requests", {}):
            return True
        return LogMessage.objects.filter(
            source_id=self.source.pk,
            data_type=data_type,
            event_id=record_id,
            receipt_time__gt=since,
        ).exists()


# `VersionWriter.latest`. Only quoted names and placeholders: the values go
# as parameters.
_LATEST = """
WITH top AS {materialized} (
    SELECT (
        SELECT MAX(v.id) FROM {table} v
        WHERE v.source_id = %s AND v.data_type = %s AND v.event_id = ids.column1
    ) AS id
    FROM (VALUES {ids}) AS ids
)
SELECT m.event_id, m.content_hash, m.raw, m.user_email
FROM top JOIN {table} m ON m.id = top.id
"""


def _width(field: str) -> int:
    return QuarantinedEvent._meta.get_field(field).max_length

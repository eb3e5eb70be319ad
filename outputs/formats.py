"""The three wire formats: one record per message, batches, headers.

Every record carries the message's stable id (`message_id`, the LogMessage
primary key), so a receiver can drop a repeat of an at-least-once delivery.

- Sumo Logic HTTP Logs Source: newline-delimited raw events (the KnowBe4
  event as received, its `occurred_date` being the message time Sumo parses),
  gzip, `X-Sumo-Category` / `X-Sumo-Name` / `X-Sumo-Host`. The headers apply
  to a whole request, so a batch never mixes categories or source names;
  Sumo documents requests of at most 1 MB before compression.
- Splunk HTTP Event Collector: concatenated `{"time", "host", "source",
  "sourcetype", "index", "fields", "event"}` objects, `Authorization:
  Splunk <token>`.
- Generic NDJSON: one JSON object per line with the message's metadata and
  the raw event under `event`.

Records are built by splicing the stored raw JSON text into small encoded
envelopes: the event is never parsed and re-encoded, which is most of the
delivery rate.
"""

from __future__ import annotations

import gzip
import json
import socket
from dataclasses import dataclass, field
from datetime import datetime

from outputs.models import Output, OutputFormat

# Sumo: "You may send batched requests up to but not exceeding 1MB of
# uncompressed data." Kept to 1,000,000 bytes (the smaller reading of "MB").
SUMO_MAX_BYTES = 1_000_000
COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
GZIP_LEVEL = 5  # Most of level 9's ratio on NDJSON at a third of the CPU.


@dataclass(frozen=True)
class Row:
    """The columns of one LogMessage that a record is built from."""

    pk: int
    event_id: str
    raw: str
    message_time: datetime
    source_id: int | None
    source_name: str
    category: str
    collector_name: str
    fields: dict


ROW_COLUMNS = (
    "pk",
    "event_id",
    "raw",
    "message_time",
    "source_id",
    "source_name",
    "source_category",
    "collector_name",
    "fields",
)


@dataclass
class Batch:
    """One request's worth of records, ready to POST."""

    body: bytes
    headers: dict[str, str]
    message_ids: list[int] = field(default_factory=list)
    raw_bytes: int = 0

    @property
    def count(self) -> int:
        return len(self.message_ids)


def host_name(output: Output) -> str:
    """The host reported to Sumo (X-Sumo-Host) and Splunk (`host`)."""
    return output.sumo_host or socket.gethostname()


def _splice_id(pk: int, raw: str) -> str:
    """`{"message_id":N,` + the raw event's own keys, without parsing it."""
    inner = raw.strip()
    if inner.startswith("{") and inner[1:].lstrip()[:1] not in ("}", ""):
        return f'{{"message_id":{pk},{inner[1:]}'
    return f'{{"message_id":{pk},"event":{inner or "null"}}}'


def sumo_record(output: Output, row: Row) -> str:
    """A raw event with its message id as the first key."""
    return _splice_id(row.pk, row.raw)


def _epoch(when: datetime) -> float:
    return round(when.timestamp(), 3)


def hec_record(output: Output, row: Row) -> str:
    """Splunk HEC's event envelope; indexed `fields` hold the metadata."""
    fields = {
        "message_id": str(row.pk),
        "event_id": row.event_id,
        "_sourceCategory": row.category,
        "_collector": row.collector_name,
        **{str(k): str(v) for k, v in (row.fields or {}).items()},
    }
    envelope = {
        "time": _epoch(row.message_time),
        "host": host_name(output),
        "source": row.source_name,
        "sourcetype": output.hec_sourcetype,
        **({"index": output.hec_index} if output.hec_index else {}),
        "fields": fields,
    }
    head = COMPACT.encode(envelope)
    return f'{head[:-1]},"event":{row.raw}}}'


def ndjson_record(output: Output, row: Row) -> str:
    """The message's metadata and its raw event under `event`."""
    head = COMPACT.encode(
        {
            "message_id": row.pk,
            "event_id": row.event_id,
            "message_time": row.message_time.isoformat().replace("+00:00", "Z"),
            "_source": row.source_name,
            "_sourceCategory": row.category,
            "_collector": row.collector_name,
            "fields": row.fields or {},
        }
    )
    return f'{head[:-1]},"event":{row.raw}}}'


RECORD = {
    OutputFormat.SUMO: sumo_record,
    OutputFormat.HEC: hec_record,
    OutputFormat.NDJSON: ndjson_record,
}
CONTENT_TYPE = {
    OutputFormat.SUMO: "text/plain; charset=utf-8",
    OutputFormat.HEC: "application/json",
    OutputFormat.NDJSON: "application/x-ndjson",
}


def batch_key(output: Output, row: Row) -> tuple:
    """Records with different keys cannot share a request (Sumo's headers)."""
    if output.format == OutputFormat.SUMO:
        return (row.category, row.source_name)
    return ()


def headers(output: Output, row: Row, token: str) -> dict[str, str]:
    """The request headers of a batch that starts with `row`."""
    values = {"Content-Type": CONTENT_TYPE[output.format]}
    if output.compress or output.format == OutputFormat.SUMO:
        values["Content-Encoding"] = "gzip"
    if output.format == OutputFormat.SUMO:
        if row.category:
            values["X-Sumo-Category"] = row.category
        values["X-Sumo-Name"] = row.source_name
        values["X-Sumo-Host"] = host_name(output)
    elif output.format == OutputFormat.HEC:
        values["Authorization"] = f"Splunk {token}"
    elif token:
        values["Authorization"] = f"Bearer {token}"
    return values


def max_bytes(output: Output) -> int:
    """The batch size limit before compression (Sumo's documented cap wins)."""
    if output.format == OutputFormat.SUMO:
        return min(output.max_batch_bytes, SUMO_MAX_BYTES)
    return output.max_batch_bytes


def first_batch(output: Output, rows: list[Row], token: str) -> Batch | None:
    """The next request: records from the start of `rows` within the count
    and size limits, all with the same batch key. None if `rows` is empty.

    A single record larger than the limit is sent alone rather than never.
    """
    if not rows:
        return None
    make = RECORD[output.format]
    key = batch_key(output, rows[0])
    limit_bytes, limit_count = max_bytes(output), max(1, output.max_batch_count)
    lines: list[bytes] = []
    ids: list[int] = []
    size = 0
    for row in rows:
        if len(ids) >= limit_count or batch_key(output, row) != key:
            break
        line = make(output, row).encode()
        if ids and size + len(line) + 1 > limit_bytes:
            break
        lines.append(line)
        ids.append(row.pk)
        size += len(line) + 1
    body = b"\n".join(lines) + b"\n"
    gzip_it = output.compress or output.format == OutputFormat.SUMO
    if gzip_it:
        body = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
    return Batch(body, headers(output, rows[0], token), ids, size)

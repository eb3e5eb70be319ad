"""Message search: the messages page and its streamed CSV / JSON-lines export."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import tzinfo

from django.http import StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from collectors import timezones
from collectors.navigation import remember_messages_exist
from collectors.permissions import DOWNLOAD, VIEW, require
from collectors.search import Cursor, MessageSearch

EXPORT_CHUNK = 2000
# "Message time" and "Receipt time" are for people: in the user's time zone
# (with its offset, so they stay exact); the `_` columns keep ISO 8601 UTC.
EXPORT_COLUMNS = [
    "Message time",
    "Receipt time",
    "_messagetime",
    "_receipttime",
    "_source",
    "_sourceCategory",
    "_collector",
    "data_type",
    "event_id",
    "event_type",
    "risk_level",
    "user_email",
    "fields",
    "_raw",
]
_VALUES = [
    "message_time",
    "receipt_time",
    "source_name",
    "source_category",
    "collector_name",
    "data_type",
    "event_id",
    "event_type",
    "risk_level",
    "user_email",
    "fields",
    "raw",
]


@require(VIEW)
@require_GET
def messages(request):
    """Filter form, a per-day chart, and one keyset page of matching messages."""
    search = MessageSearch(request.GET)
    page = search.page(
        after=Cursor.decode(request.GET.get("after")),
        before=Cursor.decode(request.GET.get("before")),
    )
    per_day = search.per_day() if search.valid else []
    if page.rows:
        remember_messages_exist(request, True)
    params = request.GET.copy()
    for key in ("after", "before"):
        params.pop(key, None)
    return render(
        request,
        "collectors/messages.html",
        {
            "nav": "messages",
            "form": search.form,
            "page": page,
            "per_day": per_day,
            "chart_total": sum(n for _, n in per_day),
            "query": params.urlencode(),
        },
    )


class _Echo:
    """A write-only file whose write returns the line: csv.writer into a stream."""

    def write(self, value: str) -> str:
        return value


# A spreadsheet evaluates a cell starting with one of these as a formula, also
# after leading spaces, and Excel folds the fullwidth forms to ASCII.
FORMULA_STARTS = frozenset("=+-@\uff1d\uff0b\uff0d\uff20")
# UTF-8's byte-order mark: spreadsheet programs otherwise read CSV as ANSI.
BOM = "\ufeff"


def _cell(value) -> str:
    """Neutralise spreadsheet formulas in text cells (CSV injection).

    A leading tab or carriage return, or a formula character after any
    leading whitespace (" =1+1", "＝1+1"), gets a quote in front,
    which spreadsheets show as text.
    """
    text = "" if value is None else str(value)
    if text[:1] in ("\t", "\r") or text.lstrip()[:1] in FORMULA_STARTS:
        return "'" + text
    return text


def _csv_rows(rows, zone: tzinfo) -> Iterator[str]:
    """CSV lines; `zone` is passed in because the response streams after the
    time zone middleware has returned."""
    writer = csv.writer(_Echo())
    yield BOM + writer.writerow(EXPORT_COLUMNS)
    for row in rows:
        values = dict(zip(_VALUES, row, strict=True))
        yield writer.writerow(
            [
                timezones.human(values["message_time"], zone),
                timezones.human(values["receipt_time"], zone),
                values["message_time"].isoformat(),
                values["receipt_time"].isoformat(),
                _cell(values["source_name"]),
                _cell(values["source_category"]),
                _cell(values["collector_name"]),
                values["data_type"],
                _cell(values["event_id"]),
                _cell(values["event_type"]),
                "" if values["risk_level"] is None else values["risk_level"],
                _cell(values["user_email"]),
                _cell(json.dumps(values["fields"], sort_keys=True)),
                _cell(values["raw"]),
            ]
        )


def _jsonl_rows(rows) -> Iterator[str]:
    for row in rows:
        values = dict(zip(_VALUES, row, strict=True))
        try:
            raw = json.loads(values["raw"])
        except ValueError:
            raw = values["raw"]
        record = {
            "_messagetime": values["message_time"].isoformat(),
            "_receipttime": values["receipt_time"].isoformat(),
            "_source": values["source_name"],
            "_sourceCategory": values["source_category"],
            "_collector": values["collector_name"],
            "data_type": values["data_type"],
            "fields": values["fields"],
            "_raw": raw,
        }
        yield json.dumps(record, separators=(",", ":")) + "\n"


@require(DOWNLOAD)
@require_GET
def messages_export(request, fmt: str):
    """Every message matching the current filters, streamed in chunks.

    The rows come from a server-side iterator, so a million-row export never
    sits in memory; the response starts before the query is exhausted.
    """
    search = MessageSearch(request.GET)
    rows = search.queryset().values_list(*_VALUES).iterator(chunk_size=EXPORT_CHUNK)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    if fmt == "csv":
        response = StreamingHttpResponse(
            _csv_rows(rows, timezone.get_current_timezone()),
            content_type="text/csv; charset=utf-8",
        )
    else:
        response = StreamingHttpResponse(
            _jsonl_rows(rows), content_type="application/x-ndjson"
        )
    ext = "csv" if fmt == "csv" else "jsonl"
    response["Content-Disposition"] = f'attachment; filename="messages-{stamp}.{ext}"'
    return response

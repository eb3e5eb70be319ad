"""Which days and pages a run reads: closed days, the re-scan, the look-back.

Days are UTC; a day is read once closed and settled (`collectors.days`).
Pure functions of a source's checkpoint and the time.
"""

from __future__ import annotations

from datetime import date, timedelta

from collectors.days import collectable_at, last_collectable_day
from collectors.knowbe4.client import EventsPage
from collectors.models import Source

__all__ = ["collectable_at", "last_collectable_day", "next_position", "start_point"]


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


def next_position(
    source: Source, page: EventsPage, day: date, last: date
) -> tuple[date | None, int, date | None]:
    """(next day, next page, last complete day) after `page` of `day`.

    A page with entries and a next page continues the day; otherwise the day
    is complete and the next one (if closed) starts at page 1.
    """
    if page.next_page is not None and (page.events or page.unreadable):
        return day, page.next_page, source.last_complete_day
    following = day + timedelta(days=1) if day < last else None
    return following, 1, max(filter(None, (source.last_complete_day, day)))

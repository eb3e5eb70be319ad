"""Which days and pages a run reads: closed days, the re-scan, the look-back.

Days are UTC; a day is read once closed and settled (`collectors.days`).
Pure functions of a source's checkpoint and the time.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from collectors import governor
from collectors.days import collectable_at, last_collectable_day
from collectors.knowbe4.client import EventsPage
from collectors.models import Source

__all__ = [
    "collectable_at",
    "last_collectable_day",
    "next_due",
    "next_position",
    "rescan_due_at",
    "start_point",
    "today_due_at",
]


def rescan_due_at(source: Source) -> datetime | None:
    """When the re-scan window is to be read again on the clock (None: no
    window, or never read yet: the next pass reads it anyway)."""
    if not source.rescan_days or source.last_rescan_at is None:
        return None
    return source.last_rescan_at + governor.rescan_interval(source)


def start_point(source: Source, last: date, now: datetime) -> tuple[date, int] | None:
    """Where this run reads first: the checkpoint, or the start of a new pass.

    A pass starts when a day closed after `last_complete_day`; it re-reads the
    `rescan_days` days before it to catch backdated events. Between two
    closed days the re-scan window is read again every re-scan interval. The
    first pass reads the initial look-back. None: nothing to read yet.
    """
    if source.cursor_day is not None:
        return source.cursor_day, max(1, source.cursor_page)
    if source.last_complete_day is None:
        return last - timedelta(days=source.initial_lookback_days - 1), 1
    if source.last_complete_day < last:
        first_new = source.last_complete_day + timedelta(days=1)
        return first_new - timedelta(days=source.rescan_days), 1
    due = rescan_due_at(source)
    if due is not None and due <= now:
        return last - timedelta(days=source.rescan_days - 1), 1
    return None


def today_due_at(source: Source, interval: timedelta | None) -> datetime | None:
    """When today's poll is due (None: off, or no request left for it)."""
    if not source.collect_today or interval is None:
        return None
    if source.today_read_at is None:
        return datetime.min.replace(tzinfo=UTC)
    return source.today_read_at + governor.poll_spacing(interval)


def next_due(*times: datetime | None) -> datetime:
    """The earliest of the times that are set."""
    return min(t for t in times if t is not None)


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


def pages_ahead(
    page: EventsPage, day: date, following: tuple[date | None, int, date | None]
) -> list[tuple[date, int]]:
    """The pages certainly read after `page` of `day`, to fetch ahead: the
    next position, and the page after it when the day's own page count
    (`meta.total_pages`) says that page exists. A closed day only gains
    events (backdated ones), so such a page is never a request wasted."""
    next_day, next_page = following[0], following[1]
    if next_day is None:
        return []
    keys = [(next_day, next_page)]
    total = page.meta.get("total_pages") if isinstance(page.meta, dict) else None
    if (
        next_day == day
        and isinstance(total, int)
        and not isinstance(total, bool)
        and next_page < total
    ):
        keys.append((day, next_page + 1))
    return keys

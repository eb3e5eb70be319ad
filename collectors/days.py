"""UTC day arithmetic shared by the engine, the models and the pages.

KnowBe4's `/events` filter is a whole UTC day (`occurred_date=D`), so the
engine thinks in days: a day is *closed* once the next one began and
*collectable* once it has also settled (COLLECTION_SETTLE_DELAY), so writes
that land just after midnight are in. Pure functions of their arguments and
settings: no database.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime

from django.conf import settings


def settle_delay() -> timedelta:
    """How long after midnight a closed day is left to settle."""
    return settings.COLLECTION_SETTLE_DELAY


def utc_day(now: datetime) -> date:
    """The UTC day `now` falls in (today, for a source's poll of the open day)."""
    return now.astimezone(UTC).date()


def midnight_after(day: date) -> datetime:
    """00:00 UTC of the day after `day`: when `day` closes."""
    return datetime.combine(day + timedelta(days=1), dtime.min, tzinfo=UTC)


def last_collectable_day(now: datetime) -> date:
    """The newest closed UTC day: day D once now >= D+1 00:00 UTC + settle."""
    return (now.astimezone(UTC) - settle_delay()).date() - timedelta(days=1)


def collectable_at(day: date) -> datetime:
    """When `day` becomes collectable (the moment a caught-up source is due)."""
    return midnight_after(day) + settle_delay()


def quota_resets_at(opened: datetime, api: str = "events") -> datetime:
    """When a daily quota window that opened at `opened` gives its requests
    back: the one reset rule of both KnowBe4 APIs (`ledger.take` opens a
    window with the first request after the previous one reset).

    The Reporting API documents a rolling 24 hours from the first request.
    KnowBe4 does not document the User Event API's reset; UTC midnight is
    what the seed assumes (should it be rolling too, this is the one line
    to change).
    """
    if api == "reporting":
        return opened + timedelta(days=1)
    return midnight_after(utc_day(opened))

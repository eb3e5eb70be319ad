"""When to try again: backoff with full jitter and the 90-minute retry window.

The window counts from `Source.error_streak_started`, which is stored in the
database, so a restart of the workers does not give a failing source another
90 minutes. The arithmetic lives here, apart from the engine, so it can be
tested on its own.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta

from django.conf import settings

BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(minutes=15)


def retry_window() -> timedelta:
    """How long a streak of generic failures is retried before Error."""
    return settings.COLLECTION_RETRY_WINDOW


def backoff_delay(attempt: int, rng: random.Random | None = None) -> timedelta:
    """Full jitter: a uniform delay in [0, min(cap, base * 2**(attempt-1))].

    Full jitter spreads the retries of many sources failing together (an
    outage) so they do not come back in lock-step against the 4/s limit.
    """
    attempt = max(1, attempt)
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(attempt - 1, 20))
    return timedelta(seconds=(rng or random).uniform(0, ceiling.total_seconds()))


def window_end(streak_started: datetime) -> datetime:
    """The last moment a failing streak is still retried."""
    return streak_started + retry_window()


def exhausted(streak_started: datetime, now: datetime) -> bool:
    """Whether a failure at `now` ends the streak with an Error."""
    return now >= window_end(streak_started)


def next_retry_at(
    streak_started: datetime,
    attempt: int,
    now: datetime,
    rng: random.Random | None = None,
) -> datetime:
    """When to retry after the `attempt`-th failure of a streak.

    Never later than the window's end, so the last try happens right at 90
    minutes and a failure then is the one that gives up.
    """
    return min(now + backoff_delay(attempt, rng), window_end(streak_started))


def next_utc_midnight(now: datetime) -> datetime:
    """00:00 UTC of the day after `now`: when KnowBe4's daily quota resets."""
    today = now.astimezone(UTC).date()
    return datetime.combine(today + timedelta(days=1), time.min, tzinfo=UTC)

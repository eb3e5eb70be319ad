"""What the stages of one run share: ids, budget, the source and the result.

A small object passed down the pipeline instead of one class whose methods
share `self`; it holds ids and counts, the decrypted key only to scrub it
out of messages (never stored, logged or put in a result).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime

from collectors.knowbe4.client import scrub
from collectors.models import Source
from collectors.ratelimit import BudgetSpent

__all__ = [
    "Abandon",
    "BudgetSpent",
    "Finish",
    "QuotaBlocked",
    "RunContext",
    "RunResult",
]


@dataclass
class RunResult:
    """What one run did; safe to store as a task result (no secrets)."""

    source_id: int
    outcome: str
    requests: int = 0
    pages: int = 0
    stored: int = 0
    more: bool = False  # Stopped by its budget with work left: due again now.

    def __str__(self) -> str:
        return (
            f"source {self.source_id}: {self.outcome}, {self.requests} request(s), "
            f"{self.pages} page(s), {self.stored} new message(s)"
        )


@dataclass
class RunContext:
    """One run: who holds the lease, how long it may take, what it did."""

    source_id: int
    owner: str
    deadline: float  # time.monotonic() past which no page is started
    max_pages: int
    result: RunResult
    source: Source | None = None
    secret: str = field(default="", repr=False)
    key_hash: str = ""
    api: str = "events"  # which KnowBe4 API the key is for (the source's kind)
    limiter: object = None
    budget: int | None = None  # the key's daily budget, when known
    dropped_counts: dict[str, int] = field(default_factory=dict)
    batch: object = None  # the open `store.Batch` of the reader's page loop

    def scrub(self, text: str) -> str:
        """The key, also URL-encoded or in base64, out of a message or log."""
        return scrub(text, self.secret, "[redacted]") if self.secret else text

    def out_of_budget(self, extra: int = 0) -> bool:
        """Whether the run's page or time budget is spent (`extra` pages on)."""
        return (
            self.result.pages + extra >= self.max_pages
            or time.monotonic() >= self.deadline
        )


@dataclass(frozen=True)
class Finish:
    """A reader's clean end: the next attempt time and extra columns."""

    next_at: datetime
    values: dict = field(default_factory=dict)


class Abandon(Exception):
    """Pages could not be committed: lease lost, source stopping or gone."""


class QuotaBlocked(Exception):
    """Another run already found the key's daily quota spent."""

    def __init__(self, until: datetime) -> None:
        super().__init__("quota blocked")
        self.until = until

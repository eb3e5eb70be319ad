"""Readers: what a run reads once the pipeline holds the lease and the key.

A reader gets the run context (source, decrypted key, limiter, budget,
result) and returns a `Finish`: when the source is due next and any of its
own bookkeeping columns to set with it. Everything around it is shared:
the lease and the states (`lifecycle`), the limiter and quota (`ratelimit`),
the page store with quarantine and checkpoint (`store`), the failure
handling and health events (`failures`). KnowBe4's events stream is
`daypages.EventsReader`; the Reporting API's datasets are
`snapshots.SnapshotReader`, with the same `read()`, chosen in `reader_for`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from collectors.engine.context import Finish, RunContext
from collectors.engine.daypages import EventsReader
from collectors.engine.snapshots import SnapshotReader
from collectors.models import Source

__all__ = ["Finish", "Reader", "reader_for"]


class Reader(Protocol):
    """One kind of collection: reads, stores, and says when it is due next."""

    name: str

    def read(self, ctx: RunContext, now: datetime) -> Finish: ...


def reader_for(source: Source) -> Reader:
    """The reader that collects this source: its kind's."""
    if source.kind == "reporting":
        return SnapshotReader()
    return EventsReader()

"""One collection run as a pipeline (see `pipeline.run`).

    pipeline   run(source_id): lease -> prepare -> a reader -> finish; every
               failure classified by `failures`; never raises
    readers    which reader collects a source; `daypages` is KnowBe4's
               events day/page stream, and a snapshot reader (Reporting)
               plugs in beside it
    window     which days and pages are due
    fetch      the page fetcher: one page ahead, the limiter, short 429 waits
    store      event -> row, the raw INSERT, a page with its quarantine rows
               and its checkpoint in one transaction (with the pages that
               arrived meanwhile: `store.Batch`)
    failures   config / quota / throttled / generic -> health event + schedule
    sqlite     SQLite during a run: the WAL checkpointed by a thread beside
               it, a bigger page cache
    context    the small run context every stage is passed

Stages import downward only: pipeline -> readers -> stages -> context ->
`collectors.lifecycle` -> `collectors.models`.
"""

from __future__ import annotations

from collectors.engine.context import RunResult
from collectors.engine.pipeline import run

__all__ = ["RunResult", "run"]

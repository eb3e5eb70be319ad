"""One collection run of one source: lease -> prepare -> read -> finish.

`run(source_id)` is what the django-q2 task and `manage.py collect` call. It
never raises: every failure is classified (the seed's error types, see
`failures`), recorded as a health event and turned into a next attempt time,
and the run returns a `RunResult` that says what happened (ids and counts
only, never the key).

Why it cannot lose or duplicate an event:
- a per-source lease (one conditional UPDATE, `lifecycle.take_lease`) keeps
  a second delivery of the same task from running at the same time;
- each page's new messages and the checkpoint after it move in ONE
  transaction (with the pages that arrived meanwhile, `store.Batch`) that
  also checks the lease is still ours and the source not being deleted, and
  no transaction is open while the run waits for KnowBe4 or the limiter;
- (source, event id) is unique in the database, so a page read twice adds
  only the events not stored yet.
"""

from __future__ import annotations

import logging
import time
import traceback
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from collectors import crypto, governor, health, lifecycle, ratelimit
from collectors.choices import SourceState
from collectors.engine import failures, sqlite
from collectors.engine.context import Abandon, QuotaBlocked, RunContext, RunResult
from collectors.engine.readers import reader_for
from collectors.knowbe4.client import ConfigError
from collectors.models import Source

logger = logging.getLogger(__name__)


def run(
    source_id: int,
    *,
    budget_seconds: float | None = None,
    max_pages: int | None = None,
) -> RunResult:
    """Collect what is due for one source; never raises.

    Takes the lease or returns at once ("lease_held") without a request.
    `budget_seconds`/`max_pages` bound the work (defaults from settings
    COLLECTION_RUN_BUDGET_SECONDS/COLLECTION_MAX_PAGES_PER_RUN); a run cut
    short sets `more` and leaves the source due at once.
    """
    owner = lifecycle.new_owner()
    try:
        if not lifecycle.take_lease(source_id, owner):
            exists = Source.objects.filter(pk=source_id).exists()
            return RunResult(source_id, "lease_held" if exists else "gone")
    except Exception:  # The database itself is unavailable: nothing to record.
        logger.exception("source %s: could not take the lease", source_id)
        return RunResult(source_id, "failed")
    budget = budget_seconds or settings.COLLECTION_RUN_BUDGET_SECONDS
    ctx = RunContext(
        source_id=source_id,
        owner=owner,
        deadline=time.monotonic() + budget,
        max_pages=max_pages or settings.COLLECTION_MAX_PAGES_PER_RUN,
        result=RunResult(source_id, "collected"),
    )
    try:
        with sqlite.tuned():
            execute(ctx)
    except Exception:  # Even recording the outcome failed (database gone).
        logger.error(
            "source %s: run failed\n%s",
            source_id,
            ctx.scrub(traceback.format_exc()),
        )
        ctx.result.outcome = "failed"
    finally:
        try:
            lifecycle.release_lease(source_id, owner)
        except Exception:
            logger.exception("source %s: could not release the lease", source_id)
    logger.info("%s", ctx.result)
    return ctx.result


def execute(ctx: RunContext) -> RunResult:
    """The run under its lease: collect, or classify whatever went wrong."""
    try:
        collect(ctx)
    except Exception as exc:
        failures.handle(ctx, exc)
    return ctx.result


def collect(ctx: RunContext) -> None:
    """The happy path: prepare the source, let its reader read, finish."""
    now = timezone.now()
    if not prepare(ctx, now):
        return
    finish = reader_for(ctx.source).read(ctx, now)
    if failures.reconfigured_meanwhile(ctx):
        return  # Saved or restarted meanwhile: due at once with new settings.
    values = dict(finish.values)
    if ctx.result.requests:
        values["last_success_at"] = timezone.now()
    if not lifecycle.finish_run(ctx.source, ctx.owner, finish.next_at, **values):
        raise Abandon
    health.resolve(ctx.source)
    governor.review(ctx.source, ctx.budget)
    ctx.result.outcome = "more" if ctx.result.more else "caught_up"


def prepare(ctx: RunContext, now: datetime) -> bool:
    """Load the source and walk Pending -> Started -> Initialized: the key
    decrypted, the Base URL still allowed, the key's limiter and quota.
    False when there is nothing to do now (Error, not due)."""
    source = Source.objects.select_related("collector").get(pk=ctx.source_id)
    ctx.source = source
    if source.state == SourceState.STOPPING:
        raise lifecycle.SourceStopping
    if source.state == SourceState.ERROR:
        ctx.result.outcome = "error_state"
        return False
    if source.next_attempt_at and source.next_attempt_at > now:
        ctx.result.outcome = "not_due"
        return False
    started = lifecycle.mark_started(source, "Collection run started")
    if source.state == SourceState.PENDING and not started:
        lifecycle.refresh_state(source)
    if source.base_url is None:
        raise ConfigError(
            "unknown_base_url",
            f"The Base URL '{source.base_url_key}' is no longer allowed.",
        )
    ctx.secret = source.get_api_key()
    ctx.key_hash = crypto.key_fingerprint(ctx.secret)
    ctx.api = source.kind
    ctx.dropped_counts = dict(source.dropped_fields or {})
    lifecycle.advance(
        source, SourceState.INITIALIZED, "Configuration loaded and API key decrypted"
    )
    blocked = ratelimit.quota_blocked_until(ctx.key_hash, ctx.api)
    if blocked and blocked > now:
        raise QuotaBlocked(blocked)
    group = governor.siblings(source)
    ctx.budget = governor.budget_of(group, ctx.key_hash)[0]
    # Every request of the run is taken from the key's budget before it goes.
    ctx.limiter = ratelimit.limiter_for(ctx.key_hash, ctx.api, ctx.budget)
    return True

"""What a failed run does: the seed's error types, as one table of handlers.

When does a source go to Error?
- ThirdPartyConfig (401/403, an unknown Base URL, an unreadable key): at
  once, and no request until a user edits or restarts it (`config_error`);
- ThirdPartyGeneric (5xx, timeouts, garbage) and FirstPartyGeneric (our own
  failures): after 90 minutes of retries with backoff from the first failure
  of the streak (`generic_error`, arithmetic in `retry.py`);
- never for Limit Exceeded (a Warning until the quota resets, `quota`) or 429
  Too Many Requests (not an error at all, `throttled`).
A failure of a run whose source a user saved meanwhile belongs to the old
settings: the source is due at once instead (`lifecycle.reconfigured_since`).
"""

from __future__ import annotations

import logging
import traceback
from datetime import UTC, datetime, timedelta

from django.utils import timezone

from collectors import crypto, health, ledger, lifecycle, ratelimit, retry
from collectors.choices import ErrorType, Severity
from collectors.engine.context import Abandon, BudgetSpent, QuotaBlocked, RunContext
from collectors.knowbe4.client import (
    ConfigError,
    QuotaExceeded,
    TooManyRequests,
    TransientError,
)
from collectors.models import Source

logger = logging.getLogger(__name__)


def handle(ctx: RunContext, exc: Exception) -> None:
    """Classify a run's failure and record it; never raises."""
    try:
        _classify(ctx, exc)
    except lifecycle.SourceStopping:
        delete_source(ctx)
    except Exception:  # Even recording the failure failed (database down).
        ctx.result.outcome = "failed"
        logger.error(
            "source %s: could not record a failure\n%s",
            ctx.source_id,
            ctx.scrub(traceback.format_exc()),
        )


def _classify(ctx: RunContext, exc: Exception) -> None:
    if isinstance(exc, lifecycle.SourceStopping):
        delete_source(ctx)
    elif isinstance(exc, Abandon):
        after_abandon(ctx)
    elif isinstance(exc, Source.DoesNotExist):
        ctx.result.outcome = "gone"
    elif isinstance(exc, (ConfigError, crypto.KeyUnreadable)):
        config_error(ctx, exc)
    elif isinstance(exc, BudgetSpent):
        budget_spent(ctx)
    elif isinstance(exc, QuotaBlocked):
        quota(ctx, exc.until, None)
    elif isinstance(exc, QuotaExceeded):
        quota(ctx, None, exc)
    elif isinstance(exc, TooManyRequests):
        throttled(ctx, exc)
    elif isinstance(exc, TransientError):
        generic_error(ctx, ErrorType.THIRD_PARTY_GENERIC, exc.code, exc.message)
    else:
        logger.error(
            "source %s: internal error\n%s",
            ctx.source_id,
            ctx.scrub("".join(traceback.format_exception(exc))),
        )
        generic_error(
            ctx,
            ErrorType.FIRST_PARTY_GENERIC,
            type(exc).__name__,
            f"Internal error while collecting ({type(exc).__name__}: "
            f"{ctx.scrub(str(exc))[:300]}).",
        )


def delete_source(ctx: RunContext) -> None:
    """Stopping: finish the removal a user asked for."""
    deleted = lifecycle.finish_stop(ctx.source_id)
    ctx.result.outcome = "deleted" if deleted else "gone"


def after_abandon(ctx: RunContext) -> None:
    """Pages were rolled back: find out why and act on it."""
    state = lifecycle.current_state(ctx.source_id)
    if state is None:
        ctx.result.outcome = "gone"
    elif state == lifecycle.SourceState.STOPPING:
        delete_source(ctx)
    else:
        ctx.result.outcome = "lease_lost"
        logger.warning("source %s: lease lost, page abandoned", ctx.source_id)


def reconfigured_meanwhile(ctx: RunContext) -> bool:
    """Whether a user saved the source while this run used the old settings.

    A failure then belongs to the old configuration: the new one gets a
    fresh try at once instead of an Error it never earned.
    """
    if ctx.source is None or not lifecycle.reconfigured_since(ctx.source, ctx.owner):
        return False
    ctx.result.outcome = "reconfigured"
    logger.info("source %s: saved during the run; retrying now", ctx.source_id)
    return True


def config_error(ctx: RunContext, exc: Exception) -> None:
    """ThirdPartyConfig: Error at once, no request until edited/restarted."""
    if reconfigured_meanwhile(ctx):
        return
    source = ctx.source or Source.objects.get(pk=ctx.source_id)
    if isinstance(exc, crypto.KeyUnreadable):
        code, message, fix = "key_unreadable", str(exc), health.FIX_KEY_UNREADABLE
    else:
        code, message, fix = exc.code, exc.message, health.FIX_CONFIG
    message = ctx.scrub(message)
    lifecycle.enter_error(source, ctx.owner, message, ErrorType.THIRD_PARTY_CONFIG)
    health.record(
        source,
        ErrorType.THIRD_PARTY_CONFIG,
        code=code,
        message=message,
        suggested_fix=fix,
        severity=Severity.ERROR,
    )
    ctx.result.outcome = "config_error"
    logger.warning("source %s: configuration error %s", ctx.source_id, code)


def quota(ctx: RunContext, until: datetime | None, exc: QuotaExceeded | None) -> None:
    """Limit Exceeded: wait for the quota to reset; not a retry streak."""
    now = timezone.now()
    if until is None:
        wait = exc.retry_after if exc else None
        if wait:
            until = now + timedelta(seconds=wait)
        else:
            until = ledger.window(ctx.api, ctx.key_hash, now).resets_at
        ratelimit.mark_quota_exhausted(ctx.key_hash, until, ctx.api)
        if ctx.api == ledger.EVENTS:  # The Reporting API's limit is documented.
            ledger.learn(ctx.api, ctx.key_hash)
    lifecycle.schedule(ctx.source_id, ctx.owner, until, streak=None)
    _quota_warning(ctx, until)
    ctx.result.outcome = "quota_exceeded"


def _quota_warning(ctx: RunContext, until: datetime) -> None:
    """The Warning of a spent daily quota, with the time it frees up."""
    when = until.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if ctx.source is not None and ctx.source.kind == "reporting":
        what = "The daily limit of this Reporting API key is spent"
        rule = "The limit is 2,000 requests plus the licensed users per 24 hours."
    else:
        what = "The daily request quota of this API key is spent (Limit Exceeded)"
        rule = "The quota is ten requests per licensed seat per day."
    health.record(
        ctx.source,
        ErrorType.THIRD_PARTY_GENERIC,
        code="limit_exceeded",
        message=f"{what}. Collection resumes at {when}.",
        suggested_fix=(
            f"Nothing to do: collection resumes on its own at {when}. {rule}"
        ),
        severity=Severity.WARNING,
    )
    logger.warning("source %s: daily quota spent until %s", ctx.source_id, when)


def budget_spent(ctx: RunContext) -> None:
    """The key's known daily budget is used up: the pages read so far are
    stored and nothing more is sent; the source waits for the reset instead
    of causing a Limit Exceeded. Planned, so a collecting source gets no
    health event (the projection warns instead); a source whose key is not
    checked yet (Started, Initialized) gets a Warning saying so and when."""
    until = ledger.window(ctx.api, ctx.key_hash).resets_at
    lifecycle.schedule(ctx.source_id, ctx.owner, until, streak=None)
    ctx.result.outcome = "budget_spent"
    logger.info("source %s: daily budget used up; next at %s", ctx.source_id, until)
    source = ctx.source
    if ctx.api == ledger.REPORTING:
        # The rolling limit is KnowBe4's documented one: say when it frees up.
        _quota_warning(ctx, until)
        return
    if source is None or source.state not in (
        lifecycle.SourceState.STARTED,
        lifecycle.SourceState.INITIALIZED,
    ):
        return
    when = until.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    health.record(
        source,
        ErrorType.THIRD_PARTY_GENERIC,
        code="budget_spent",
        message=(
            f"The daily request budget of this API key ({ctx.budget:,} requests) "
            "is used up, so the key has not been checked yet: the one request "
            f"that checks it is sent when the quota resets, at {when}."
        ),
        suggested_fix=(
            f"Nothing to do: the key is checked at {when}. If the account has "
            "more licensed users than Licensed users says, raise it (Advanced)."
        ),
        severity=Severity.WARNING,
    )


def throttled(ctx: RunContext, exc: TooManyRequests) -> None:
    """429 Too Many Requests: not an error; come back after Retry-After."""
    now = timezone.now()
    wait = (
        timedelta(seconds=exc.retry_after)
        if exc.retry_after is not None
        else retry.backoff_delay(1)
    )
    lifecycle.schedule(ctx.source_id, ctx.owner, now + wait)
    ctx.result.outcome = "throttled"
    logger.debug(
        "source %s: 429 Too Many Requests, next try in %ss",
        ctx.source_id,
        int(wait.total_seconds()),
    )


def generic_error(ctx: RunContext, error_type: str, code: str, message: str) -> None:
    """5xx, timeouts, garbage, our own failures: back off for up to 90 min."""
    source = ctx.source or Source.objects.get(pk=ctx.source_id)
    now = timezone.now()
    message = ctx.scrub(message)
    started = source.error_streak_started or now
    if retry.exhausted(started, now):
        if not reconfigured_meanwhile(ctx):
            _give_up(ctx, source, error_type, code, message, started)
        return
    until = retry.window_end(started).astimezone(UTC).strftime("%H:%M UTC")
    fix = (
        f"KnowBe4 is unavailable; retrying until {until}."
        if error_type == ErrorType.THIRD_PARTY_GENERIC
        else f"{health.FIX_FIRST_PARTY} Retrying until {until}."
    )
    event = health.record(
        source,
        error_type,
        code=code,
        message=message,
        suggested_fix=fix,
        severity=Severity.WARNING,
    )
    next_at = retry.next_retry_at(started, event.count, now)
    lifecycle.schedule(ctx.source_id, ctx.owner, next_at, streak=started)
    ctx.result.outcome = "retrying"
    logger.warning(
        "source %s: %s %s, retry at %s",
        ctx.source_id,
        error_type,
        code,
        next_at.isoformat(timespec="seconds"),
    )


def _give_up(
    ctx: RunContext,
    source: Source,
    error_type: str,
    code: str,
    message: str,
    started: datetime,
) -> None:
    """The retry window is over: Error, until a user restarts or edits."""
    lifecycle.enter_error(
        source, ctx.owner, f"Retries exhausted: {message}", error_type, streak=started
    )
    health.record(
        source,
        error_type,
        code=code,
        message=f"Retries exhausted after 90 minutes: {message}",
        suggested_fix=(
            "Collection has stopped. Check that KnowBe4 is reachable, then "
            "restart the source (or save it again)."
        ),
        severity=Severity.ERROR,
    )
    ctx.result.outcome = "retries_exhausted"
    logger.error("source %s: retries exhausted (%s)", ctx.source_id, code)

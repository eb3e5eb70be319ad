"""One delivery run of one output: lease, batches, checkpoint, failures.

`run(output_id)` is what the django-q2 task and `manage.py deliver` call. It
never raises: every failure is classified with the seed's error types,
recorded as a health event and turned into a next attempt time.

Why a crash at any moment loses nothing:
- the checkpoint (the last message id covered) moves only in the UPDATE that
  follows a 2xx answer, and that UPDATE checks the lease is still ours;
- before a batch goes on the wire `inflight_until` is raised to its end, so
  if the process dies (or the request times out) the next run re-sends the
  same messages and counts them as a replay: at least once, never zero;
- message ids are allocated before their transaction commits, so on a
  database with concurrent writers (PostgreSQL) a lower id can become
  visible after a higher one. A run therefore never moves past a hole in
  the ids until the message after the hole is HOLE_WAIT old: by then any
  transaction that held the missing id has committed or rolled back.
"""

from __future__ import annotations

import email.utils
import logging
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from alerts import egress
from collectors import crypto, health, lifecycle, retry
from collectors.choices import ErrorType, Severity
from collectors.models import LogMessage
from collectors.search import category_matcher
from outputs import formats
from outputs.models import Output

logger = logging.getLogger(__name__)

LEASE = timedelta(seconds=240)
RUN_BUDGET_SECONDS = 120.0
REQUEST_TIMEOUT = 30.0
# Rows read per query: enough for a full batch after filtering.
READ_AHEAD = 2000
HOLE_WAIT = timedelta(seconds=60)
# Failed requests retried inside the run before it hands over to the schedule.
INLINE_ATTEMPTS = 3
INLINE_RETRY_SECONDS = 1.0
# A 429 whose Retry-After is at most this is waited out in the run.
INLINE_RETRY_AFTER = 5.0
CONFIG_STATUSES = (401, 403, 404)
FIX_CONFIG = (
    "Check the output's URL and token (and that the token may send to this "
    "endpoint), then save the output: delivery waits until it is edited."
)

sleep = time.sleep  # Replaced by tests that must not really wait.


def _setting(name: str, default):
    return getattr(settings, name, default)


# --- the lease (the rules of collectors.collection, on Output rows) -----------


def take_lease(output_id: int, owner: str) -> bool:
    """One conditional UPDATE; a lease held by a dead process of this host
    (SIGKILL, OOM) is taken over at once rather than after it expires."""
    now = timezone.now()
    values = {
        "lease_owner": owner,
        "lease_expires": now + _setting("OUTPUT_LEASE", LEASE),
    }
    free = Q(lease_expires__isnull=True) | Q(lease_expires__lt=now)
    if Output.objects.filter(free, pk=output_id).update(**values):
        return True
    held = (
        Output.objects.filter(pk=output_id)
        .values_list("lease_owner", flat=True)
        .first()
    )
    if held and lifecycle.owner_is_dead(held):
        logger.info("output %s: taking over the lease of a dead worker", output_id)
        return bool(
            Output.objects.filter(pk=output_id, lease_owner=held).update(**values)
        )
    return False


def release_lease(output_id: int, owner: str) -> None:
    Output.objects.filter(pk=output_id, lease_owner=owner).update(
        lease_owner="", lease_expires=None, dispatched_at=None
    )


def _dead_holders() -> list[tuple[int, str]]:
    """(output id, owner) of leases held by dead processes of this host."""
    held = Output.objects.filter(lease_expires__gte=timezone.now()).exclude(
        lease_owner=""
    )
    return [
        (pk, owner)
        for pk, owner in held.values_list("pk", "lease_owner")
        if lifecycle.owner_is_dead(owner)
    ]


def dead_leases() -> list[int]:
    """Ids of outputs whose lease is held by a dead process of this host."""
    return [pk for pk, _ in _dead_holders()]


def free_dead_leases() -> list[int]:
    """Give back the leases (and dispatch marks) of dead processes of this
    host, so the dispatcher queues those outputs at once rather than after
    the lease runs out; conditional on the dead owner. Returns the ids."""
    freed = []
    for pk, owner in _dead_holders():
        if Output.objects.filter(pk=pk, lease_owner=owner).update(
            lease_owner="", lease_expires=None, dispatched_at=None
        ):
            logger.info("output %s: freed the lease of a dead worker", pk)
            freed.append(pk)
    return freed


# --- results and signals ------------------------------------------------------


@dataclass
class DeliveryResult:
    """What one run did; safe to store as a task result (no URL, no token)."""

    output_id: int
    outcome: str
    requests: int = 0
    batches: int = 0
    delivered: int = 0
    replayed: int = 0
    more: bool = False  # Stopped by its budget with messages left.

    def __str__(self) -> str:
        return (
            f"output {self.output_id}: {self.outcome}, {self.requests} request(s), "
            f"{self.batches} batch(es), {self.delivered} message(s) delivered, "
            f"{self.replayed} replayed"
        )


class _Abandon(Exception):
    """The lease was lost (or the output deleted) under the run."""


class _Rejected(Exception):
    """The endpoint refused a batch; `kind` says how to react."""

    def __init__(self, kind: str, code: str, message: str, wait=None) -> None:
        super().__init__(message)
        self.kind, self.code, self.message, self.wait = kind, code, message, wait


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None if absent."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - timezone.now()).total_seconds())


def classify(response) -> _Rejected | None:
    """None for a 2xx; otherwise what kind of refusal the answer is."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    if status in CONFIG_STATUSES:
        return _Rejected(
            ErrorType.THIRD_PARTY_CONFIG,
            f"http_{status}",
            f"The endpoint answered {status} {response.reason or ''}".strip()
            + ": the URL or token is wrong, or the token lacks permission.",
        )
    if status == 429:
        wait = retry_after_seconds(response.headers.get("Retry-After"))
        return _Rejected("throttled", "http_429", "429 Too Many Requests", wait)
    return _Rejected(
        ErrorType.THIRD_PARTY_GENERIC,
        f"http_{status}",
        f"The endpoint answered {status} {response.reason or ''}".strip() + ".",
    )


# --- the run --------------------------------------------------------------------


def run(output_id: int, *, budget_seconds: float | None = None) -> DeliveryResult:
    """Deliver what is pending for one output; never raises."""
    owner = lifecycle.new_owner()
    try:
        if not take_lease(output_id, owner):
            exists = Output.objects.filter(pk=output_id).exists()
            return DeliveryResult(output_id, "lease_held" if exists else "gone")
    except Exception:
        logger.exception("output %s: could not take the lease", output_id)
        return DeliveryResult(output_id, "failed")
    budget = budget_seconds or _setting("OUTPUT_RUN_BUDGET_SECONDS", RUN_BUDGET_SECONDS)
    delivery = _Delivery(output_id, owner, time.monotonic() + budget)
    try:
        result = delivery.execute()
    except Exception:  # Even recording the outcome failed (database gone).
        logger.exception("output %s: run failed", output_id)
        result = delivery.result
        result.outcome = "failed"
    finally:
        try:
            release_lease(output_id, owner)
        except Exception:
            logger.exception("output %s: could not release the lease", output_id)
    logger.info("%s", result)
    return result


class _Delivery:
    """The state of one run; `execute` is the whole of it."""

    def __init__(self, output_id: int, owner: str, deadline: float) -> None:
        self.output_id = output_id
        self.owner = owner
        self.deadline = deadline
        self.output: Output | None = None
        self.result = DeliveryResult(output_id, "caught_up")
        self.url = ""
        self.token = ""

    def execute(self) -> DeliveryResult:
        try:
            self._deliver()
        except _Abandon:
            self.result.outcome = "lease_lost"
        except Output.DoesNotExist:
            self.result.outcome = "gone"
        except crypto.KeyUnreadable:
            self._config_error(
                "secret_unreadable",
                "The stored URL or token cannot be decrypted (the encryption "
                "keys changed): enter them again in the output's settings.",
            )
        except egress.EgressRefused as exc:
            self._config_error("destination_refused", str(exc))
        except _Rejected as exc:
            if exc.kind == ErrorType.THIRD_PARTY_CONFIG:
                self._config_error(exc.code, exc.message)
            elif exc.kind == "throttled":
                self._throttled(exc.wait)
            else:
                self._generic_error(exc.kind, exc.code, exc.message)
        except egress.EgressError as exc:
            self._generic_error(
                ErrorType.THIRD_PARTY_GENERIC, type(exc).__name__, str(exc)
            )
        except Exception as exc:
            logger.error(
                "output %s: internal error\n%s",
                self.output_id,
                self._scrub(traceback.format_exc()),
            )
            self._generic_error(
                ErrorType.FIRST_PARTY_GENERIC,
                type(exc).__name__,
                f"Internal error while delivering ({type(exc).__name__}).",
            )
        return self.result

    def _scrub(self, text: str) -> str:
        for secret in (self.url, self.token):
            if secret:
                text = text.replace(secret, "[redacted]")
        return text

    # The happy path.
    def _deliver(self) -> None:
        output = Output.objects.get(pk=self.output_id)
        self.output = output
        if not output.enabled:
            self.result.outcome = "disabled"
            return
        if output.error_type == ErrorType.THIRD_PARTY_CONFIG:
            self.result.outcome = "config_error"
            return
        if output.next_attempt_at and output.next_attempt_at > timezone.now():
            self.result.outcome = "not_due"
            return
        self.url, self.token = output.get_url(), output.get_token()
        egress.check_destination(self.url)
        pattern = output.category_pattern
        matcher = category_matcher(pattern) if pattern.strip("*") else None
        while True:
            if time.monotonic() >= self.deadline:
                self.result.more = True
                self.result.outcome = "more"
                break
            if self.result.requests and self._changed_meanwhile():
                break
            rows = self._read()
            if not rows:
                break
            wanted = [r for r in rows if output.wants(r.source_id, r.category, matcher)]
            batch = formats.first_batch(output, wanted, self.token)
            if batch is None:
                self._advance(rows[-1].pk, None)
                continue
            covers = (
                rows[-1].pk if batch.count == len(wanted) else batch.message_ids[-1]
            )
            self._send(batch, covers)
        self._finish()

    def _changed_meanwhile(self) -> bool:
        """Whether a user disabled or edited the output since the run began:
        the next batch must not go to an old URL, or to a disabled output.
        An edited one is queued again at once (`more`) with its new settings."""
        now = (
            Output.objects.filter(pk=self.output_id)
            .values_list("enabled", "config_version")
            .first()
        )
        if now is None:
            raise Output.DoesNotExist
        enabled, version = now
        if not enabled:
            self.result.outcome = "disabled"
            return True
        if version != self.output.config_version:
            self.result.outcome = "reconfigured"
            self.result.more = True
            return True
        return False

    def _read(self) -> list[formats.Row]:
        """The next messages after the checkpoint, in id order, stopping
        before a hole in the ids whose next message is younger than HOLE_WAIT
        (its id may belong to a transaction that has not committed yet)."""
        start = self.output.checkpoint
        limit = _setting("OUTPUT_READ_AHEAD", READ_AHEAD)
        found = (
            LogMessage.objects.filter(pk__gt=start)
            .order_by("pk")
            .values_list(*formats.ROW_COLUMNS, "receipt_time")[:limit]
        )
        settled = timezone.now() - _setting("OUTPUT_HOLE_WAIT", HOLE_WAIT)
        rows: list[formats.Row] = []
        expected = start + 1
        for values in found:
            if values[0] != expected and values[-1] > settled:
                self.result.outcome = "waiting"
                break
            rows.append(formats.Row(*values[:-1]))
            expected = values[0] + 1
        return rows

    def _advance(self, covers: int, batch: formats.Batch | None) -> None:
        """Move the checkpoint to `covers` (after a 2xx, or over messages
        the filter skips), renewing the lease; abandon if it is not ours."""
        output = self.output
        now = timezone.now()
        inflight = output.inflight_until
        values: dict = {
            "checkpoint": covers,
            "lease_expires": now + _setting("OUTPUT_LEASE", LEASE),
            "inflight_until": inflight if inflight and inflight > covers else None,
        }
        if batch is not None:
            values.update(
                delivered=F("delivered") + batch.count,
                batches=F("batches") + 1,
                last_delivery_at=now,
                error_streak_started=None,
                failures=0,
                error_type="",
            )
        moved = Output.objects.filter(
            pk=output.pk, lease_owner=self.owner, checkpoint=output.checkpoint
        ).update(**values)
        if not moved:
            raise _Abandon
        output.checkpoint, output.inflight_until = covers, values["inflight_until"]
        output.error_streak_started = None if batch else output.error_streak_started

    def _send(self, batch: formats.Batch, covers: int) -> None:
        """POST one batch until a 2xx, retrying inside the run a few times.

        Messages at or below `inflight_until` may have reached the endpoint
        already (a run died, or a request timed out, while they were on the
        wire): sending them again is a replay, and is counted.
        """
        output = self.output
        prior = output.inflight_until
        maybe_taken = sum(1 for pk in batch.message_ids if pk <= (prior or 0))
        timeout = _setting("OUTPUT_REQUEST_TIMEOUT", REQUEST_TIMEOUT)
        for attempt in range(1, INLINE_ATTEMPTS + 1):
            if maybe_taken:
                self._count_replay(maybe_taken)
                maybe_taken = 0
            self._mark_inflight(max(covers, prior or 0))
            self.result.requests += 1
            try:
                response = egress.post(
                    self.url, data=batch.body, headers=batch.headers, timeout=timeout
                )
            except egress.EgressError:
                # No answer: the endpoint may have taken the batch, so the
                # in-flight mark stays and the next sending is a replay.
                maybe_taken, prior = batch.count, self.output.inflight_until
                if not self._may_retry_inline(attempt, None):
                    raise
                continue
            rejected = classify(response)
            if rejected is None:
                self._advance(covers, batch)
                self.result.batches += 1
                self.result.delivered += batch.count
                return
            # A definite refusal: this attempt was not taken.
            self._mark_inflight(prior)
            if rejected.kind == ErrorType.THIRD_PARTY_CONFIG:
                raise rejected
            if not self._may_retry_inline(attempt, rejected):
                raise rejected

    def _count_replay(self, messages: int) -> None:
        self._update(
            replays=F("replays") + 1,
            replayed_messages=F("replayed_messages") + messages,
        )
        self.result.replayed += messages

    def _update(self, **values) -> None:
        """An UPDATE of this output that requires the lease to be ours."""
        if not Output.objects.filter(pk=self.output_id, lease_owner=self.owner).update(
            **values
        ):
            raise _Abandon

    def _mark_inflight(self, until: int | None) -> None:
        if self.output.inflight_until != until:
            self._update(inflight_until=until)
            self.output.inflight_until = until

    def _may_retry_inline(self, attempt: int, rejected: _Rejected | None) -> bool:
        """Wait and retry the same batch in this run, or give up to the
        schedule (a long Retry-After, the last attempt, the end of budget)."""
        if attempt >= INLINE_ATTEMPTS:
            return False
        if rejected is not None and rejected.kind == "throttled":
            wait = rejected.wait if rejected.wait is not None else INLINE_RETRY_AFTER
            if wait > INLINE_RETRY_AFTER:
                return False
        else:
            base = _setting("OUTPUT_INLINE_RETRY_SECONDS", INLINE_RETRY_SECONDS)
            wait = base * 2 ** (attempt - 1)
        if time.monotonic() + wait >= self.deadline:
            return False
        sleep(wait)
        return True

    def _finish(self) -> None:
        """A clean end: resolve this output's open health events."""
        self._update(next_attempt_at=None, error_streak_started=None, failures=0)
        health.resolve(self.output)

    # Failures.
    def _set(self, **values) -> None:
        Output.objects.filter(pk=self.output_id, lease_owner=self.owner).update(
            **values
        )

    def _note_error(self, message: str) -> str:
        message = self._scrub(message)[:500]
        self._set(last_error=message, last_error_at=timezone.now())
        return message

    def _reconfigured_meanwhile(self) -> bool:
        """A failure of the old configuration does not block a newer one."""
        current = (
            Output.objects.filter(pk=self.output_id)
            .values_list("config_version", flat=True)
            .first()
        )
        if self.output is None or current in (None, self.output.config_version):
            return False
        self.result.outcome = "reconfigured"
        return True

    def _config_error(self, code: str, message: str) -> None:
        """ThirdPartyConfig: no retry until the output is edited."""
        output = self.output or Output.objects.get(pk=self.output_id)
        if self._reconfigured_meanwhile():
            return
        message = self._note_error(message)
        self._set(error_type=ErrorType.THIRD_PARTY_CONFIG, next_attempt_at=None)
        health.record(
            output,
            ErrorType.THIRD_PARTY_CONFIG,
            code=code,
            message=message,
            suggested_fix=FIX_CONFIG,
            severity=Severity.ERROR,
        )
        self.result.outcome = "config_error"
        logger.warning("output %s: configuration error %s", self.output_id, code)

    def _throttled(self, wait: float | None) -> None:
        """429 with a long Retry-After: come back then; not an error."""
        delay = timedelta(seconds=wait) if wait is not None else retry.backoff_delay(1)
        self._set(next_attempt_at=timezone.now() + delay)
        self.result.outcome = "throttled"

    def _generic_error(self, error_type: str, code: str, message: str) -> None:
        """5xx, timeouts, our own failures: back off and retry, for ever.

        An output that gave up would stop forwarding silently; instead the
        health event turns from Warning into Error once the streak is older
        than the retry window, and retries go on at the backoff's cap.
        """
        output = self.output or Output.objects.get(pk=self.output_id)
        now = timezone.now()
        message = self._note_error(message)
        started = output.error_streak_started or now
        failures = output.failures + 1
        long = retry.exhausted(started, now)
        next_at = now + retry.backoff_delay(failures)
        self._set(
            error_streak_started=started, failures=failures, next_attempt_at=next_at
        )
        when = next_at.astimezone(UTC).strftime("%H:%M:%S UTC")
        health.record(
            output,
            error_type,
            code=code,
            message=(
                f"Failing since {started:%Y-%m-%d %H:%M} UTC: {message}"
                if long
                else message
            ),
            suggested_fix=(
                f"Delivery is retried with backoff (next try at {when}); nothing "
                "is lost meanwhile. Check that the endpoint is up."
                if error_type == ErrorType.THIRD_PARTY_GENERIC
                else f"{health.FIX_FIRST_PARTY} Next try at {when}."
            ),
            severity=Severity.ERROR if long else Severity.WARNING,
        )
        self.result.outcome = "retrying"
        logger.warning(
            "output %s: %s %s, retry at %s", self.output_id, error_type, code, when
        )

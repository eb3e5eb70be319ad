"""The source lifecycle: states, leases, dispatch and scheduling, in one place.

A newcomer asking "when does a source go to Error?" reads this module and
`engine/failures.py`. With `models.py`, it is the only writer of a source's
bookkeeping columns (state, checkpoint, lease, dispatch mark, retry streak,
next attempt); `tests/test_layout.py` greps for any other writer.

- States move only along `SOURCE_TRANSITIONS` (`choices.py`, so that
  `Source.transition` in models.py checks it too): `advance()` for the
  engine's forward moves, `enter_error()` for Error, `finish_stop()` for a
  deleted source.
- A run holds a per-source lease (`take_lease`, renewed by every committed
  page in `commit_page`, given back by `release_lease`); a lease whose holder
  is a dead process of this host is taken over at once.
- `due_sources()`/`claim()` are what the dispatcher queues; `schedule()` sets
  when a source is due next and the retry streak.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from collectors.choices import SOURCE_TRANSITIONS, SourceState, may_move
from collectors.models import Source

logger = logging.getLogger(__name__)

__all__ = ["SOURCE_TRANSITIONS", "may_move"]

COLLECTING_STATES = (
    SourceState.STARTED,
    SourceState.INITIALIZED,
    SourceState.AUTHENTICATED,
    SourceState.COLLECTING,
)
# `schedule(..., streak=KEEP)` leaves the retry streak as it is.
KEEP = object()


class SourceStopping(Exception):
    """A user deleted the source meanwhile: its removal is to be finished."""


def lease_duration() -> timedelta:
    """Shorter than Q_CLUSTER["retry"], longer than one run's budget."""
    return settings.COLLECTION_LEASE


def dispatch_grace() -> timedelta:
    """A queued task not picked up within this time is queued again."""
    return settings.COLLECTION_DISPATCH_GRACE


# --- states -------------------------------------------------------------------


def current_state(source_id: int) -> str | None:
    """The state in the database now, or None when the source is gone."""
    return Source.objects.filter(pk=source_id).values_list("state", flat=True).first()


def refresh_state(source: Source) -> None:
    """After a refused move: stop if the user deleted the source meanwhile,
    else take the state the database holds."""
    state = current_state(source.pk)
    if state is None:
        raise Source.DoesNotExist
    if state == SourceState.STOPPING:
        raise SourceStopping
    source.state = state


def advance(source: Source, to_state: str, reason: str) -> bool:
    """Move forward along the seed's states when the table allows it from the
    current one; never over a user's Stopping (raises SourceStopping)."""
    if source.state == to_state or not may_move(source.state, to_state):
        return False
    if to_state in (SourceState.ERROR, SourceState.PENDING, SourceState.STOPPING):
        raise ValueError(f"advance() moves forward only, not to {to_state}")
    if source.transition(to_state, reason, expect=source.state):
        return True
    refresh_state(source)
    return False


def mark_started(source: Source, reason: str = "Collection task created") -> bool:
    """Pending -> Started: a collection task now exists for the source.

    The one function for this move. A task exists once the dispatcher has
    queued it (`claim`) or when a run starts without one (the `collect`
    command, a run delivered after an edit put the source back to Pending):
    the engine's `prepare`. True when the source is now collecting."""
    if source.state != SourceState.PENDING:
        return source.state in COLLECTING_STATES
    return source.transition(SourceState.STARTED, reason, expect=SourceState.PENDING)


def enter_error(
    source: Source,
    owner: str,
    reason: str,
    error_type: str,
    *,
    streak: datetime | None | object = KEEP,
) -> None:
    """Error: no further request until a user edits or restarts the source."""
    schedule(source.pk, owner, None, streak=streak)
    if not source.transition(
        SourceState.ERROR, reason, error_type=error_type, expect=source.state
    ):
        refresh_state(source)


def finish_stop(source_id: int) -> bool:
    """Stopping: delete the source (and its collector with its last source
    when that is being deleted); messages stay. Whether it was deleted."""
    deleted = Source.finish_removal(source_id)
    logger.info("source %s: deleted (messages kept)", source_id)
    return deleted


# --- leases -------------------------------------------------------------------


def new_owner() -> str:
    """host:pid:random, so a lease left by a killed process can be recognised."""
    return f"{socket.gethostname()[:36]}:{os.getpid()}:{uuid.uuid4().hex[:16]}"


def owner_is_dead(owner: str) -> bool:
    """Whether `owner` is a process of this host that no longer runs."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname()[:36] or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # A killed child not yet reaped by its parent is a zombie: dead too.
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def take_lease(source_id: int, owner: str) -> bool:
    """Take the source's lease with one conditional UPDATE; False if held.

    A lease whose holder was a process of this host that has died (SIGKILL,
    OOM) is taken over at once rather than after it expires.
    """
    now = timezone.now()
    values = {"lease_owner": owner, "lease_expires": now + lease_duration()}
    free = Q(lease_expires__isnull=True) | Q(lease_expires__lt=now)
    if Source.objects.filter(free, pk=source_id).update(**values):
        return True
    held = (
        Source.objects.filter(pk=source_id)
        .values_list("lease_owner", flat=True)
        .first()
    )
    if held and owner_is_dead(held):
        logger.info("source %s: taking over the lease of a dead worker", source_id)
        return bool(
            Source.objects.filter(pk=source_id, lease_owner=held).update(**values)
        )
    return False


def _dead_holders() -> list[tuple[int, str]]:
    """(source id, owner) of unexpired leases held by dead processes of this
    host: only sources being collected right now are looked at."""
    held = Source.objects.filter(lease_expires__gte=timezone.now()).exclude(
        lease_owner=""
    )
    return [
        (pk, owner)
        for pk, owner in held.values_list("pk", "lease_owner")
        if owner_is_dead(owner)
    ]


def dead_leases() -> list[int]:
    """Ids of sources whose lease is held by a dead process of this host."""
    return [pk for pk, _ in _dead_holders()]


def free_dead_leases() -> list[int]:
    """Give back the leases (and dispatch marks) held by dead processes of
    this host, so the dispatcher queues those sources at once instead of after
    the lease and the dispatch grace run out. Conditional on the dead owner: a
    live worker that took the lease meanwhile keeps it. Returns the ids."""
    freed = []
    for pk, owner in _dead_holders():
        if Source.objects.filter(pk=pk, lease_owner=owner).update(
            lease_owner="", lease_expires=None, dispatched_at=None
        ):
            logger.info("source %s: freed the lease of a dead worker", pk)
            freed.append(pk)
    return freed


def release_lease(source_id: int, owner: str) -> None:
    """Give the lease back (and the dispatch mark) if it is still ours."""
    Source.objects.filter(pk=source_id, lease_owner=owner).update(
        lease_owner="", lease_expires=None, dispatched_at=None
    )


def _ours(source_id: int, owner: str) -> QuerySet[Source]:
    """The source while this run holds its lease and no user deleted it."""
    return Source.objects.filter(pk=source_id, lease_owner=owner).exclude(
        state=SourceState.STOPPING
    )


# --- checkpoint and schedule ----------------------------------------------------


def commit_page(
    source: Source,
    owner: str,
    *,
    cursor_day: date | None,
    cursor_page: int,
    last_complete_day: date | None,
    dropped_fields: dict[str, int],
    now: datetime,
    **progress,
) -> bool:
    """Move the checkpoint past stored pages and renew the lease; call it in
    the pages' transaction. False (roll them back) when the lease is no
    longer ours or the source is being deleted. `progress`: a reader's own
    bookkeeping columns of the same moment (today's poll, say)."""
    moved = _ours(source.pk, owner).update(
        cursor_day=cursor_day,
        cursor_page=cursor_page,
        last_complete_day=last_complete_day,
        dropped_fields=dropped_fields,
        lease_expires=now + lease_duration(),
        error_streak_started=None,
        last_success_at=now,
        **progress,
    )
    if moved:
        source.cursor_day, source.cursor_page = cursor_day, cursor_page
        source.last_complete_day = last_complete_day
        source.error_streak_started = None
        for name, value in progress.items():
            setattr(source, name, value)
    return bool(moved)


def finish_run(source: Source, owner: str, next_at: datetime, **values) -> bool:
    """A clean end of a run: due again at `next_at`, the streak over. False
    when the lease was lost or the source is being deleted meanwhile."""
    return bool(
        _ours(source.pk, owner).update(
            next_attempt_at=next_at, error_streak_started=None, **values
        )
    )


def schedule(
    source_id: int,
    owner: str,
    next_at: datetime | None,
    *,
    streak: datetime | None | object = KEEP,
) -> None:
    """When the source is due next (None: not until a user acts), and the
    start of its failure streak (KEEP leaves it), while the lease is ours."""
    values: dict[str, object] = {"next_attempt_at": next_at}
    if streak is not KEEP:
        values["error_streak_started"] = streak
    Source.objects.filter(pk=source_id, lease_owner=owner).update(**values)


def reconfigured_since(source: Source, owner: str) -> bool:
    """Whether a user saved the source since this run read it; if so it is
    due at once with a fresh streak, so its new settings get their own try."""
    current = (
        Source.objects.filter(pk=source.pk)
        .values_list("config_version", flat=True)
        .first()
    )
    if current is None or current == source.config_version:
        return False
    schedule(source.pk, owner, None, streak=None)
    return True


# --- dispatch -----------------------------------------------------------------


def _not_queued(now: datetime) -> Q:
    return Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=now - dispatch_grace())


def due_sources(now: datetime | None = None) -> QuerySet[Source]:
    """Sources a run should look at now: never Error, never leased or queued.

    Pending ones start; Stopping ones finish their removal; collecting ones
    whose next attempt time has come continue.
    """
    now = now or timezone.now()
    free = Q(lease_expires__isnull=True) | Q(lease_expires__lt=now)
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    wanted = Q(state__in=(SourceState.PENDING, SourceState.STOPPING)) | Q(
        due, state__in=COLLECTING_STATES
    )
    return Source.objects.filter(free, _not_queued(now), wanted).order_by("pk")


def claim(source: Source, now: datetime | None = None) -> bool:
    """Mark the source queued (one conditional UPDATE) and move Pending -> Started.

    The conditional UPDATE keeps two dispatchers from queuing it twice.
    """
    now = now or timezone.now()
    if not Source.objects.filter(_not_queued(now), pk=source.pk).update(
        dispatched_at=now
    ):
        return False
    mark_started(source)
    return True

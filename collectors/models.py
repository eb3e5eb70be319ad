"""The domain model: hosted collectors, KnowBe4 API sources, the Fields schema,
health events, collected log messages and the API-key usage the limiter shares.

Rules about states and health live here, next to the data they govern; the
source lifecycle (`lifecycle.py`) and the engine (`engine/`) call these
methods. Only this module and `lifecycle.py` write a source's bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models.functions import Coalesce, Lower
from django.urls import reverse
from django.utils import timezone

from collectors import crypto
from collectors.choices import (
    ErrorType,
    HealthEventName,
    Severity,
    SourceState,
    may_move,
)
from collectors.message_stats import (  # noqa: F401 - re-exported for views
    ACTIVITY_HOURS,
    NO_ACTIVITY,
    RECENT_RATE_WINDOW,
    Activity,
    LogMessageQuerySet,
)
from collectors.names import validate_display_name


@dataclass(frozen=True)
class NextAttempt:
    """When a source is collected next: a kind, maybe a time, and the words."""

    kind: str  # now | after_fix | stopping | at | due
    at: datetime | None
    text: str


@dataclass(frozen=True)
class BackfillProgress:
    """A backfill's progress: days done of the window, events, ETA."""

    start: date
    end: date
    days_done: int
    days_total: int
    stored: int
    recent: int
    eta: timedelta | None
    running: bool

    @property
    def percent(self) -> int:
        return int(100 * self.days_done / self.days_total) if self.days_total else 0

    @property
    def eta_text(self) -> str:
        """The ETA in words, or why there is none."""
        if not self.running:
            return "paused"
        if self.eta is None:
            if not self.days_done:
                return "ETA after the first day is stored"
            return "no events stored in the last 10 minutes"
        minutes = max(1, round(self.eta.total_seconds() / 60))
        if minutes < 90:
            return f"about {minutes} min left"
        hours = minutes / 60
        if hours < 48:
            return f"about {hours:.0f} h left"
        return f"about {hours / 24:.0f} days left"


class HostedCollector(models.Model):
    """A hosted collector: a named group of sources, like Sumo Logic's."""

    # The name its health events are filed under (see `collectors.health`).
    HEALTH_RESOURCE_TYPE = "Collector"

    name = models.CharField(max_length=128, validators=[validate_display_name])
    description = models.TextField(max_length=1024, blank=True)
    category = models.CharField(max_length=1024, blank=True)
    # Set by Delete: its sources are Stopping and the row goes once they are gone.
    deleting_since = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(Lower("name"), name="collector_name_unique_ci"),
        ]
        # The app's permissions, named after Sumo Logic's capabilities. Migration
        # 0004_roles makes the roles (groups) out of them and
        # `collectors.permissions.require` checks them in every view.
        permissions = [
            ("view_collectors", "View Collectors"),
            ("download_search_results", "Download Search Results"),
            ("manage_collectors", "Manage Collectors"),
            ("manage_fields", "Manage Fields"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_deleting(self) -> bool:
        return self.deleting_since is not None

    def request_delete(self) -> int:
        """Delete, as a source delete does: every source moves to Stopping and
        the engine finishes each (a run in flight stops writing at its next
        page); the collector row goes once its sources are gone, at once when
        it has none. Returns how many sources are stopping."""
        now = timezone.now()
        HostedCollector.objects.filter(pk=self.pk, deleting_since__isnull=True).update(
            deleting_since=now
        )
        self.deleting_since = self.deleting_since or now
        for source in self.sources.exclude(state=SourceState.STOPPING):
            source.request_stop()
        HostedCollector.finish_deletions(pk=self.pk)
        return self.sources.count()

    @staticmethod
    def finish_deletions(pk: int | None = None) -> int:
        """Delete the collectors being deleted that have no source left (one,
        or all of them: the dispatcher sweeps); return how many went."""
        gone = HostedCollector.objects.filter(deleting_since__isnull=False).exclude(
            models.Exists(Source.objects.filter(collector=models.OuterRef("pk")))
        )
        if pk is not None:
            gone = gone.filter(pk=pk)
        deleted = 0
        for collector in gone:
            collector.delete()
            deleted += 1
        return deleted

    def open_health_counts(self) -> tuple[int, int]:
        """(open errors, open warnings) of the collector and all its sources."""
        return HealthEvent.objects.open().for_collector(self).severity_counts()


class Source(models.Model):
    """A KnowBe4 API source: configuration, state and collection progress.

    The API key is stored encrypted (`api_key_encrypted`) and shown only as its
    last four characters (`api_key_hint`). `config_version` grows on every edit;
    the engine compares it to clear a ThirdPartyConfig error.
    """

    HEALTH_RESOURCE_TYPE = "Source"

    collector = models.ForeignKey(
        HostedCollector, models.CASCADE, related_name="sources"
    )
    name = models.CharField(max_length=128, validators=[validate_display_name])
    description = models.TextField(max_length=1024, blank=True)
    category = models.CharField("source category", max_length=1024, blank=True)
    base_url_key = models.CharField("base URL", max_length=64)
    api_key_encrypted = models.TextField(editable=False)
    api_key_hint = models.CharField(max_length=4, editable=False)
    config_version = models.PositiveIntegerField(default=1)
    # The same bounds as the source form's, so admin cannot store a look-back
    # of 99,999 days either.
    initial_lookback_days = models.PositiveSmallIntegerField(
        default=7, validators=[MinValueValidator(1), MaxValueValidator(90)]
    )
    rescan_days = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(0), MaxValueValidator(14)]
    )
    # Advanced. The re-scan window is re-read every this many minutes (None:
    # settings.COLLECTION_RESCAN_INTERVAL), not only when a day closes.
    rescan_interval_minutes = models.PositiveIntegerField(
        "re-scan interval (minutes)",
        null=True,
        blank=True,
        validators=[MinValueValidator(15), MaxValueValidator(7 * 24 * 60)],
    )
    # Opt-in: today's events as they arrive, read every `today_poll_minutes`.
    collect_today = models.BooleanField(
        "collect today's events as they arrive", default=False
    )
    today_poll_minutes = models.PositiveSmallIntegerField(
        "poll interval (minutes)",
        default=15,
        validators=[MinValueValidator(5), MaxValueValidator(24 * 60)],
    )
    # The daily request budget is 10 x this (KnowBe4's quota); None: learned
    # from the first Limit Exceeded.
    licensed_users = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(10_000_000)],
    )

    state = models.CharField(
        max_length=16, choices=SourceState.choices, default=SourceState.PENDING
    )
    state_changed = models.DateTimeField(default=timezone.now)
    error_type = models.CharField(max_length=32, choices=ErrorType.choices, blank=True)

    # Checkpoint: every day up to `last_complete_day` is stored; within
    # `cursor_day`, pages before `cursor_page` are stored.
    last_complete_day = models.DateField(null=True, blank=True)
    cursor_day = models.DateField(null=True, blank=True)
    cursor_page = models.PositiveIntegerField(default=1)
    # When the re-scan window was last read (a closed-day pass or the clock).
    last_rescan_at = models.DateTimeField(null=True, blank=True)
    # Today's poll (collect_today): the day being polled, the page to read
    # again next (its last read page: new events land at the end), and when.
    today_day = models.DateField(null=True, blank=True)
    today_page = models.PositiveIntegerField(default=1)
    today_read_at = models.DateTimeField(null=True, blank=True)

    # Retry bookkeeping survives restarts: the 90-minute window counts from here.
    error_streak_started = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_success_at = models.DateTimeField(null=True, blank=True)

    # Per-source lease so a duplicate task delivery cannot run twice at once.
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_expires = models.DateTimeField(null=True, blank=True)
    # When the dispatcher last queued a task, so a queued task is not queued
    # again every minute before a worker picks it up.
    dispatched_at = models.DateTimeField(null=True, blank=True)

    # Fields set on the source but absent from the schema: {key: messages dropped}.
    dropped_fields = models.JSONField(default=dict, blank=True)

    # Which API the source reads: KnowBe4's User Event stream ("events") or
    # the KMSAT Reporting API's snapshots ("reporting", engine/snapshots.py).
    kind = models.CharField(
        max_length=16,
        choices=[("events", "KnowBe4"), ("reporting", "KnowBe4 KMSAT Reporting")],
        default="events",
        db_default="events",
    )
    # A Reporting source's settings ({"data_types", "poll_hours",
    # "licensed_users", "recipients_days"}, see knowbe4/records.py) and its
    # snapshot checkpoint (the plan, the task and page reached, the request
    # windows), committed with each page.
    reporting = models.JSONField(default=dict, blank=True)
    snapshot = models.JSONField(default=dict, blank=True, editable=False)

    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["collector__name", "name"]
        constraints = [
            models.UniqueConstraint(
                "collector", Lower("name"), name="source_name_unique_in_collector_ci"
            ),
        ]
        indexes = [models.Index(fields=["state", "next_attempt_at"])]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        """Save; a new source's timeline starts with its creation in Pending."""
        adding = self._state.adding
        super().save(*args, **kwargs)
        if adding:
            StateTransition.objects.create(
                source=self, from_state="", to_state=self.state, reason="Created"
            )

    def get_absolute_url(self) -> str:
        return reverse("source-detail", args=[self.pk])

    def open_health_counts(self) -> tuple[int, int]:
        """(open errors, open warnings) of this source."""
        return HealthEvent.objects.open().filter(source=self).severity_counts()

    def set_api_key(self, plain: str) -> None:
        """Encrypt and store a new API key, keeping only its last 4 characters."""
        self.api_key_encrypted = crypto.encrypt(plain)
        self.api_key_hint = plain[-4:]

    def get_api_key(self) -> str:
        """Decrypt the API key; raises crypto.KeyUnreadable, never leaks it."""
        return crypto.decrypt(self.api_key_encrypted)

    @property
    def base_url(self):
        """The allow-listed BaseUrl for this source, or None if it was removed."""
        from collectors import baseurls

        return baseurls.get(self.base_url_key)

    def transition(
        self,
        to_state: str,
        reason: str = "",
        *,
        error_type: str = "",
        expect: str | None = None,
    ) -> bool:
        """Move to `to_state` and record it, unless the state changed under us.

        Only moves the state machine allows (`choices.SOURCE_TRANSITIONS`).
        The UPDATE is conditional on the state we last read (or `expect`), so a
        worker can never overwrite a Stopping set by a user meanwhile. Returns
        whether the move happened.
        """
        now = timezone.now()
        current = self.state if expect is None else expect
        if current == to_state and (to_state != SourceState.ERROR or not error_type):
            return False
        if not may_move(current, to_state):
            return False
        error_type = error_type if to_state == SourceState.ERROR else ""
        moved = Source.objects.filter(pk=self.pk, state=current).update(
            state=to_state, state_changed=now, error_type=error_type, updated=now
        )
        if moved:
            StateTransition.objects.create(
                source=self,
                from_state=current,
                to_state=to_state,
                at=now,
                reason=reason[:500],
            )
            self.state, self.state_changed, self.error_type = to_state, now, error_type
        return bool(moved)

    def _clear_retry(self) -> None:
        Source.objects.filter(pk=self.pk).update(
            error_streak_started=None, next_attempt_at=None
        )
        self.error_streak_started = self.next_attempt_at = None

    def reconfigured(self, *, reauthenticate: bool = False) -> None:
        """Called after an edit: a new configuration version, and a fresh start
        for a source in Error (a ThirdPartyConfig error waits for exactly this).

        `reauthenticate` (a new API key or Base URL) sends any collecting source
        back to Pending, so the next run walks Started, Initialized and
        Authenticated again and a wrong key shows red at once, not when the
        next day closes. Other edits keep a healthy source collecting.
        """
        self._bump_config_version()
        if self.state == SourceState.ERROR:
            self._back_to_pending("Source configuration updated")
        elif reauthenticate and self.state != SourceState.STOPPING:
            self._back_to_pending("API key or Base URL changed: authenticating again")

    def restart(self) -> bool:
        """The Restart action: any source but a Pending or Stopping one goes back
        to Pending, keeping its checkpoint, and authenticates again at the next
        dispatch. A run in flight sees the new config version and leaves the
        source due at once rather than scheduling its next day."""
        if self.state in (SourceState.PENDING, SourceState.STOPPING):
            return False
        self._bump_config_version()
        return self._back_to_pending("Restarted by a user")

    @property
    def can_restart(self) -> bool:
        return self.state not in (SourceState.PENDING, SourceState.STOPPING)

    def _bump_config_version(self) -> None:
        Source.objects.filter(pk=self.pk).update(
            config_version=models.F("config_version") + 1
        )
        self.refresh_from_db(fields=["config_version"])

    def _back_to_pending(self, reason: str) -> bool:
        self._clear_retry()
        return self.transition(SourceState.PENDING, reason)

    def request_stop(self) -> bool:
        """Delete: move to Stopping; the worker finishes the removal."""
        if self.state == SourceState.STOPPING:
            return False
        return self.transition(SourceState.STOPPING, "Deleted by a user")

    @staticmethod
    def finish_removal(source_id: int) -> bool:
        """The engine's last step for a Stopping source: delete it (messages
        and history stay, their links go NULL), then its collector if that is
        being deleted and this was its last source. Whether it was deleted."""
        collector_id = (
            Source.objects.filter(pk=source_id, state=SourceState.STOPPING)
            .values_list("collector_id", flat=True)
            .first()
        )
        if collector_id is None:
            return False
        deleted, _ = Source.objects.filter(
            pk=source_id, state=SourceState.STOPPING
        ).delete()
        HostedCollector.finish_deletions(pk=collector_id)
        return bool(deleted)

    @property
    def is_neutral(self) -> bool:
        """Pending and Stopping sources are not collecting: drawn neutral."""
        return self.state in (SourceState.PENDING, SourceState.STOPPING)

    def is_running(self, now: datetime) -> bool:
        """A collection run holds the lease right now."""
        return bool(
            self.lease_owner and self.lease_expires and self.lease_expires > now
        )

    def next_attempt(self, now: datetime) -> NextAttempt:
        """When collection of this source happens next, said truthfully.

        The one place that decides it, for the source page, the Collection
        page and the refresh endpoint: a run in progress is "now"; a source in
        Error makes no request until a user edits or restarts it; a Stopping
        source is only removed; otherwise the stored time, or the next
        dispatch (every minute) when that time has come.
        """
        if self.state == SourceState.STOPPING:
            return NextAttempt("stopping", None, "none: the source is being deleted")
        if self.state == SourceState.ERROR:
            return NextAttempt(
                "after_fix", None, "after you edit or restart the source"
            )
        if self.is_running(now):
            return NextAttempt("now", None, "now, collecting")
        if self.next_attempt_at and self.next_attempt_at > now:
            local = timezone.localtime(self.next_attempt_at)  # the user's zone
            return NextAttempt(
                "at", self.next_attempt_at, f"{local:%Y-%m-%d %H:%M:%S %Z}"
            )
        return NextAttempt("due", None, "due now: at the next dispatch (each minute)")

    def backfill_window_start(self) -> date:
        """The first day the initial look-back reads, as counted from the day
        the source was created (the engine's first run follows at once)."""
        from collectors.days import last_collectable_day

        last = last_collectable_day(self.created or timezone.now())
        return last - timedelta(days=max(1, self.initial_lookback_days) - 1)

    def backfill_progress(
        self, now: datetime, stored: int, recent: int
    ) -> BackfillProgress | None:
        """How far the source is from having every closed day, or None when it
        is (nearly) caught up.

        The window runs from the look-back's first day to the newest closed
        day; days done are those up to the checkpoint's last complete day.
        `stored` is the events stored by the source and `recent` those stored
        in the last RECENT_RATE_WINDOW: the ETA assumes the remaining days hold
        as many events per day as the days done, stored at the recent rate.
        """
        from collectors.days import last_collectable_day

        if self.kind != "events":
            return None  # Reporting snapshots have no closed days to catch up on
        if self.state == SourceState.STOPPING:
            return None  # being deleted: it will never catch up
        running = self.state != SourceState.ERROR
        last = last_collectable_day(now)
        start = self.backfill_window_start()
        if last < start:
            return None
        total = (last - start).days + 1
        done_through = self.last_complete_day
        done = 0 if done_through is None else (done_through - start).days + 1
        done = max(0, min(total, done))
        if done_through is not None and (last - done_through).days < 2:
            return None
        if not running and not done:
            return None  # in Error before any day was stored: no backfill yet
        eta = None
        if running and done and recent:
            per_day = stored / done
            rate = recent / RECENT_RATE_WINDOW.total_seconds()
            eta = timedelta(seconds=round((total - done) * per_day / rate))
        return BackfillProgress(
            start=start,
            end=last,
            days_done=done,
            days_total=total,
            stored=stored,
            recent=recent,
            eta=eta,
            running=running,
        )


class SourceField(models.Model):
    """One "Fields" row of a source: a key/value stamped on its messages."""

    source = models.ForeignKey(Source, models.CASCADE, related_name="fields")
    key = models.CharField(max_length=255)
    value = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                "source", Lower("key"), name="source_field_key_unique_ci"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


class FieldDefinition(models.Model):
    """A field of the Fields table schema (Manage Data > Logs > Fields).

    A source's field is kept on its messages only while a definition with the
    same name exists and is enabled; otherwise it is dropped, as in Sumo.
    """

    name = models.CharField(max_length=255)
    enabled = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(Lower("name"), name="field_definition_unique_ci"),
        ]

    def __str__(self) -> str:
        return self.name

    def sources_using(self) -> int:
        """How many sources set a field of this name (keys match
        case-insensitively); a field in use may not be deleted."""
        return (
            SourceField.objects.alias(lkey=Lower("key"))
            .filter(lkey=Lower(models.Value(self.name)))
            .count()
        )


class StateTransition(models.Model):
    """One change of a source's state, kept as a timeline (like a flip log).

    The first row of a source is its creation (`from_state` blank, to
    Pending). Rows outlive their source: the FK goes NULL on deletion and the
    stored id and names still say whose history it was.
    """

    source = models.ForeignKey(
        Source, models.SET_NULL, null=True, blank=True, related_name="transitions"
    )
    source_ref = models.PositiveBigIntegerField("source id", null=True, blank=True)
    source_name = models.CharField(max_length=128, blank=True)
    collector_name = models.CharField(max_length=128, blank=True)
    from_state = models.CharField(
        max_length=16, choices=SourceState.choices, blank=True
    )
    to_state = models.CharField(max_length=16, choices=SourceState.choices)
    at = models.DateTimeField(default=timezone.now)
    reason = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [
            models.Index(fields=["source", "at"]),
            models.Index(fields=["source_ref", "at"]),
        ]

    def __str__(self) -> str:
        who = self.source_name or self.source_ref
        return f"{who}: {self.from_state} → {self.to_state}"

    def save(self, *args, **kwargs) -> None:
        """Copy the source's id and names, so the row still reads after deletion."""
        if self.source is not None and not self.source_ref:
            self.source_ref = self.source.pk
            self.source_name = self.source.name
            self.collector_name = self.source.collector.name
        super().save(*args, **kwargs)


class HealthEventQuerySet(models.QuerySet):
    """Queries for the Health column, tooltip, panel and Health Events page."""

    def open(self) -> HealthEventQuerySet:
        return self.filter(resolved_at__isnull=True)

    def for_collector(self, collector: HostedCollector | int) -> HealthEventQuerySet:
        """Events of the collector itself and of every source in it, including
        deleted ones (by the stored collector id, no join)."""
        pk = collector if isinstance(collector, int) else collector.pk
        return self.filter(collector_ref=pk)

    def for_resource(self, resource_type: str, resource_id: int) -> HealthEventQuerySet:
        """Events of one resource, live or deleted (see `collectors.health`)."""
        return self.filter(resource_type=resource_type, resource_id=resource_id)

    def severity_counts(self, per: str | None = None, *, correlate=None):
        """Error and warning counts: the one place they are computed.

        - no argument: (errors, warnings) of these events, in one query;
        - `per` (a column, "source_id" or "resource_id"): {value: (errors,
          warnings)} in one GROUP BY, for many resources at once;
        - `correlate` (lookups naming an OuterRef, `{"source": OuterRef("pk")}`):
          (errors, warnings) as correlated COUNT subqueries, to annotate a
          list of rows (and filter on them) within its own query.
        """
        by = {
            "errors": models.Count("pk", filter=models.Q(severity=Severity.ERROR)),
            "warnings": models.Count("pk", filter=models.Q(severity=Severity.WARNING)),
        }
        if correlate is not None:
            return tuple(
                Coalesce(
                    models.Subquery(
                        self.filter(severity=severity, **correlate)
                        .order_by()
                        .annotate(n=models.Func(models.F("pk"), function="COUNT"))
                        .values("n")[:1],
                        output_field=models.IntegerField(),
                    ),
                    0,
                )
                for severity in (Severity.ERROR, Severity.WARNING)
            )
        if per is None:
            counts = self.aggregate(**by)
            return counts["errors"], counts["warnings"]
        rows = self.values_list(per).annotate(**by).order_by()
        return {key: (errors, warnings) for key, errors, warnings in rows}

    def bulk_create(self, objs, *args, **kwargs):
        """As `save`, fill the stored resource columns of each new event."""
        for obj in objs:
            obj.fill_resource()
        return super().bulk_create(objs, *args, **kwargs)


class HealthEvent(models.Model):
    """A detected problem with a resource (the Health Event Index).

    The resource is named by stored columns, `resource_type` ("Source",
    "Collector", or another app's type such as "Connection" or "Output"),
    `resource_id` and `resource_name`, plus the id and name of the collector
    it belongs to, so an event outlives its resource: the page still lists,
    filters and opens it. `source` and `collector` are live links for the
    collectors app's own resources; they go NULL when the resource is deleted.
    `collectors.health` is the API that writes these rows.

    One open event per (resource type, resource id, event name): repeats bump
    `count` and `last_seen`; a success sets `resolved_at`.
    """

    resource_type = models.CharField(max_length=32)
    resource_id = models.PositiveBigIntegerField()
    resource_name = models.CharField(max_length=255, blank=True)
    collector_ref = models.PositiveBigIntegerField(
        "collector id", null=True, blank=True
    )
    collector_name = models.CharField(max_length=128, blank=True)
    source = models.ForeignKey(
        Source, models.SET_NULL, null=True, blank=True, related_name="health_events"
    )
    collector = models.ForeignKey(
        HostedCollector,
        models.SET_NULL,
        null=True,
        blank=True,
        related_name="health_events",
    )
    event_name = models.CharField(max_length=32, choices=HealthEventName.choices)
    error_type = models.CharField(max_length=32, choices=ErrorType.choices)
    severity = models.CharField(max_length=8, choices=Severity.choices)
    error_code = models.CharField(max_length=64, blank=True)
    message = models.TextField()
    suggested_fix = models.TextField(blank=True)
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    count = models.PositiveIntegerField(default=1)
    resolved_at = models.DateTimeField(null=True, blank=True)

    objects = HealthEventQuerySet.as_manager()

    class Meta:
        ordering = ["-last_seen", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["resource_type", "resource_id", "event_name"],
                condition=models.Q(resolved_at__isnull=True),
                name="one_open_health_event_per_resource",
            ),
        ]
        indexes = [
            models.Index(fields=["source", "resolved_at"]),
            models.Index(fields=["collector", "resolved_at"]),
            models.Index(
                fields=["resource_type", "resource_id", "resolved_at"],
                name="health_resource",
            ),
            models.Index(
                fields=["collector_ref", "resolved_at"], name="health_in_collector"
            ),
            models.Index(fields=["-last_seen"]),
        ]

    def __str__(self) -> str:
        return f"{self.event_name} ({self.get_severity_display()})"

    def save(self, *args, **kwargs) -> None:
        self.fill_resource()
        super().save(*args, **kwargs)

    def fill_resource(self) -> None:
        """Name the resource from the `source` or `collector` link when the
        writer gave only that (other apps set the stored columns themselves)."""
        if self.resource_type:
            return
        if self.source is not None:
            self.resource_type = Source.HEALTH_RESOURCE_TYPE
            self.resource_id = self.source.pk
            self.resource_name = self.source.name
            self.collector_ref = self.source.collector_id
            self.collector_name = self.source.collector.name
        elif self.collector is not None:
            self.resource_type = HostedCollector.HEALTH_RESOURCE_TYPE
            self.resource_id = self.collector.pk
            self.resource_name = self.collector.name
            self.collector_ref = self.collector.pk
            self.collector_name = self.collector.name

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None

    @property
    def live_resource(self):
        """The resource if it still exists, else None (set in bulk by
        `health.attach_resources` on list pages)."""
        if not hasattr(self, "_live_resource"):
            from collectors import health

            health.attach_resources([self])
        return self._live_resource

    @property
    def resource_url(self) -> str:
        """A link to the live resource's page, or "" (deleted, or no page)."""
        live = self.live_resource
        return live.get_absolute_url() if hasattr(live, "get_absolute_url") else ""

    def fix_actions(self) -> tuple[str, ...]:
        """The buttons its suggested fix calls for: "edit" when the source's
        settings are at fault (ThirdPartyConfig) or collection stopped, and
        "restart" while the source waits in Error for exactly that. A retrying
        warning fixes itself and offers nothing."""
        source = self.source
        if not self.is_open or source is None or source.state == SourceState.STOPPING:
            return ()
        actions = []
        in_error = source.state == SourceState.ERROR
        if self.error_type == ErrorType.THIRD_PARTY_CONFIG or in_error:
            actions.append("edit")
        if in_error:
            actions.append("restart")
        return tuple(actions)


class LogMessage(models.Model):
    """One collected KnowBe4 user event or Reporting record version, with
    Sumo-style metadata.

    `raw` is the event's (record's) JSON as received. Metadata is copied at
    collection time so that messages survive the deletion (or later edits) of
    their source. The database enforces one row per (source, data type,
    event or record id, content hash): an event once, a Reporting record once
    per version (`content_hash` of its JSON; empty for events).
    """

    # No index of its own: the unique constraint and `msg_source_time` both
    # start with it (a third B-tree to update would slow every INSERT).
    source = models.ForeignKey(
        Source,
        models.SET_NULL,
        null=True,
        blank=True,
        related_name="messages",
        db_index=False,
    )
    event_id = models.CharField(max_length=64)
    raw = models.TextField()
    message_time = models.DateTimeField()
    receipt_time = models.DateTimeField(default=timezone.now)
    source_name = models.CharField("_source", max_length=128)
    source_category = models.CharField("_sourceCategory", max_length=1024, blank=True)
    collector_name = models.CharField("_collector", max_length=128)
    fields = models.JSONField(default=dict, blank=True)
    event_type = models.CharField(max_length=255, blank=True)
    risk_level = models.SmallIntegerField(null=True, blank=True)
    user_email = models.CharField(max_length=254, blank=True)
    # "events" for User Events, else a Reporting data type (knowbe4/records.py).
    data_type = models.CharField(max_length=32, default="events", db_default="events")
    content_hash = models.CharField(
        max_length=64, blank=True, default="", db_default=""
    )

    objects = LogMessageQuerySet.as_manager()

    class Meta:
        ordering = ["-message_time", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["source", "data_type", "event_id", "content_hash"],
                name="log_message_once_per_version",
            ),
        ]
        # Ascending, though pages read newest first: messages arrive oldest
        # first, so a new row goes to the index's last leaf (migration 0019).
        indexes = [
            models.Index(fields=["message_time", "id"], name="msg_time"),
            models.Index(
                fields=["source_category", "message_time"], name="msg_category_time"
            ),
            models.Index(fields=["source", "message_time"], name="msg_source_time"),
            # The Overview's "new event types": has this type occurred before?
            models.Index(fields=["event_type", "message_time"], name="msg_type_time"),
            # The Overview's aggregates read one data type's time range of these
            # columns only: covering them spares a table row read per message
            # (5x faster). Led by the data type, it also serves the Messages
            # data-type filter and the Overview's Reporting panels.
            models.Index(
                fields=[
                    "data_type",
                    "message_time",
                    "event_type",
                    "risk_level",
                    "user_email",
                    "source",
                    "source_category",
                ],
                name="msg_overview",
            ),
            # The Collection page's activity: a source's messages by receipt.
            models.Index(fields=["source", "receipt_time"], name="msg_source_receipt"),
        ]

    def __str__(self) -> str:
        return self.event_id

    @property
    def data_type_label(self) -> str:
        """ "User events", "Phishing recipient", ...: the Messages column."""
        from collectors.knowbe4.records import MESSAGE_TYPES

        return MESSAGE_TYPES.get(self.data_type, self.data_type)


class ApiKeyUsage(models.Model):
    """Request accounting per API key and API, shared by every worker and host.

    `key_hash` is `crypto.key_fingerprint(key)`, never the key; `api` says
    which KnowBe4 API the key is for (a User Event key and a Reporting key are
    different keys with different limits, so their rows never mix). `recent`
    holds the times of the last requests (the per-second and burst limiter),
    `used` the requests made in the current quota window, which opened at
    `window_opened_at` and gives them back at `window_resets_at`
    (`days.quota_resets_at`), and `quota_reset_at` when a `Limit Exceeded`
    answer says collection may resume. `ledger.take` counts a request.
    """

    class Api(models.TextChoices):
        EVENTS = "events", "User Event API"
        REPORTING = "reporting", "Reporting API"

    api = models.CharField(max_length=16, choices=Api.choices, default=Api.EVENTS)
    key_hash = models.CharField(max_length=64)
    recent = models.JSONField(default=list, blank=True)
    used = models.PositiveIntegerField(default=0)
    window_opened_at = models.DateTimeField(null=True, blank=True)
    window_resets_at = models.DateTimeField(null=True, blank=True)
    quota_reset_at = models.DateTimeField(null=True, blank=True)
    # The daily budget KnowBe4 showed: requests made when Limit Exceeded came.
    learned_budget = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["api", "key_hash"], name="apikeyusage_one_row_per_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.api} {self.key_hash[:8]}"


class UserPreference(models.Model):
    """What one user chose for how pages are shown: the time zone of times.

    Stored times stay UTC; this only changes how they are drawn (pages and
    the human columns of exports). "Browser" uses the zone the user's browser
    reports (a cookie set by static/js/layout.js), UTC until it is known.
    """

    class TimeZoneMode(models.TextChoices):
        UTC = "utc", "UTC"
        BROWSER = "browser", "My browser's time zone"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, models.CASCADE, related_name="preference"
    )
    time_zone = models.CharField(
        max_length=16, choices=TimeZoneMode.choices, default=TimeZoneMode.UTC
    )

    def __str__(self) -> str:
        return f"{self.user_id}: {self.time_zone}"


class QuarantinedEventQuerySet(models.QuerySet):
    """Queries for the quarantine list and its Warning."""

    def pending(self) -> QuarantinedEventQuerySet:
        """Rows still waiting: not stored by a Reprocess yet."""
        return self.filter(reprocessed_at__isnull=True)


class QuarantinedEvent(models.Model):
    """An event KnowBe4 sent that could not be stored as it is (or a whole
    page whose events could not be told apart), kept verbatim.

    Collection moves past it; Reprocess on the source page tries it again
    (after an upgrade that fixes the cause) and sets `reprocessed_at` once it
    is stored. The same bytes are kept once per source (`digest`), so a page
    read again in the re-scan window adds no second copy.
    """

    source = models.ForeignKey(Source, models.CASCADE, related_name="quarantined")
    day = models.DateField()
    page = models.PositiveIntegerField()
    event_id = models.CharField(max_length=64, blank=True)
    # "events" for a User Event (or a page of them); else the Reporting data
    # type the record was read as, and the id of the record it only exists
    # under (a group's member: the group), so Reprocess stores it as that
    # type's version (`engine/versions.py`).
    data_type = models.CharField(max_length=32, default="events", db_default="events")
    parent = models.CharField(max_length=64, blank=True, default="", db_default="")
    reason_code = models.CharField(max_length=32)
    reason = models.CharField(max_length=500)
    raw = models.BinaryField()
    digest = models.CharField(max_length=64)
    created = models.DateTimeField(default=timezone.now)
    reprocessed_at = models.DateTimeField(null=True, blank=True)

    objects = QuarantinedEventQuerySet.as_manager()

    class Meta:
        ordering = ["created", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["source", "digest"], name="quarantined_once_per_source"
            ),
        ]
        indexes = [models.Index(fields=["source", "reprocessed_at"])]

    def __str__(self) -> str:
        return f"{self.source_id} {self.day} p{self.page}: {self.reason_code}"

    @property
    def raw_text(self) -> str:
        """The raw bytes as text for display (undecodable bytes replaced)."""
        return bytes(self.raw).decode("utf-8", "replace")


class ConnectionTest(models.Model):
    """One press of Test connection on the source form: who and when.

    Kept for a minute so that tries can be limited per user across every web
    process (see `collectors.connection`); never the key or the URL.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE)
    at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return f"{self.user_id} at {self.at:%H:%M:%S}"

"""Outputs: where collected messages are forwarded, and how far each got.

An `Output` is one destination (Sumo Logic HTTP Logs Source, Splunk HTTP
Event Collector or a generic NDJSON webhook) with its own checkpoint over
`LogMessage` ids. The checkpoint moves only after the endpoint answered a
batch with a 2xx, so a crash at any moment re-sends at most the batch that
was in flight (at least once; every record carries the message id).
"""

from __future__ import annotations

from datetime import datetime

from django.db import models
from django.db.models import Count, Min, Q
from django.db.models.functions import Lower
from django.urls import reverse
from django.utils import timezone

from collectors import crypto
from collectors.choices import ErrorType
from collectors.models import HealthEvent, LogMessage, Source
from collectors.search import MAX_EXPANDED_CATEGORIES, category_matcher, category_q


class OutputFormat(models.TextChoices):
    """The three destinations an output can speak to."""

    SUMO = "sumo", "Sumo Logic HTTP Logs Source"
    HEC = "hec", "Splunk HTTP Event Collector"
    NDJSON = "ndjson", "Generic NDJSON webhook"


# The Outputs table's narrow column.
SHORT_FORMAT = {
    OutputFormat.SUMO: "Sumo Logic",
    OutputFormat.HEC: "Splunk HEC",
    OutputFormat.NDJSON: "NDJSON",
}


class OutputStatus(models.TextChoices):
    """What the Outputs page says about an output's delivery."""

    DISABLED = "disabled", "Disabled"
    DELIVERING = "delivering", "Delivering"
    RETRYING = "retrying", "Retrying"
    ERROR = "error", "Error"


def mask_url(url: str) -> str:
    """Scheme and host only: the path of a Sumo HTTP source URL *is* its
    secret (the collector token), so nothing after the host is shown."""
    scheme, sep, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}{sep}{host}/…" if sep else "…"


def mask_token(token: str) -> str:
    """A token shown as its last four characters."""
    return f"…{token[-4:]}" if len(token) > 8 else "…"


class OutputQuerySet(models.QuerySet):
    """Queries for the Outputs page and the dispatcher."""

    def with_backlogs(self) -> list[Output]:
        """The outputs with `backlog_count` and `backlog_oldest` set, from one
        aggregate over the messages (plus one query listing categories), so
        the page costs the same for one output or fifty."""
        outputs = list(self)
        if not outputs:
            return outputs
        known = _known_categories_or_none()
        aggregates = {}
        for output in outputs:
            pending = output.pending_q(known)
            aggregates[f"n{output.pk}"] = Count("pk", filter=pending)
            aggregates[f"t{output.pk}"] = Min("receipt_time", filter=pending)
        low = min(o.checkpoint for o in outputs)
        figures = LogMessage.objects.filter(pk__gt=low).aggregate(**aggregates)
        counts = _open_health_counts([o.pk for o in outputs])
        for output in outputs:
            output.backlog_count = figures[f"n{output.pk}"] or 0
            output.backlog_oldest = figures[f"t{output.pk}"]
            output.open_errors, output.open_warnings = counts.get(output.pk, (0, 0))
        return outputs


def _open_health_counts(ids: list[int]) -> dict[int, tuple[int, int]]:
    """{output id: (open errors, open warnings)} in one query."""
    return (
        HealthEvent.objects.open()
        .filter(resource_type=Output.HEALTH_RESOURCE_TYPE, resource_id__in=ids)
        .severity_counts(per="resource_id")
    )


def _known_categories_or_none() -> list[str] | None:
    """The stored categories, or None when there are too many to list."""
    from collectors.search import known_categories

    known = known_categories()
    return known if len(known) <= MAX_EXPANDED_CATEGORIES else None


class Output(models.Model):
    """One forwarding destination, its filter, batching and progress.

    The URL and token are stored encrypted (MultiFernet, `collectors.crypto`)
    and shown masked. `checkpoint` is the highest message id the endpoint has
    accepted with everything before it; `inflight_until` is set while a batch
    is on the wire, so a run that finds it above the checkpoint knows the
    previous attempt's fate is unknown and counts the re-send as a replay.
    `config_version` grows on every edit: a ThirdPartyConfig error
    (401/403/404) waits for exactly that.
    """

    name = models.CharField(max_length=128)
    format = models.CharField(max_length=16, choices=OutputFormat.choices)
    enabled = models.BooleanField(default=True)

    url_encrypted = models.TextField(editable=False)
    url_hint = models.CharField("URL", max_length=300, editable=False)
    token_encrypted = models.TextField(blank=True, editable=False)
    token_hint = models.CharField("token", max_length=8, blank=True, editable=False)

    # Filter: both optional. The category pattern is Sumo-style (`Security/*`).
    category_pattern = models.CharField(max_length=1024, blank=True)
    source = models.ForeignKey(
        Source, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # "collector / source" of the chosen source, kept when it is deleted: a
    # filter on a deleted source then matches nothing rather than everything.
    source_label = models.CharField(max_length=260, blank=True)

    # Format options.
    sumo_host = models.CharField("X-Sumo-Host", max_length=128, blank=True)
    hec_sourcetype = models.CharField(
        "sourcetype", max_length=128, default="knowbe4:user_event"
    )
    hec_index = models.CharField("index", max_length=80, blank=True)
    compress = models.BooleanField("gzip", default=True)
    max_batch_count = models.PositiveIntegerField(default=1000)
    max_batch_bytes = models.PositiveIntegerField(default=1_000_000)

    # Progress.
    checkpoint = models.BigIntegerField(default=0)
    inflight_until = models.BigIntegerField(null=True, blank=True)
    delivered = models.BigIntegerField(default=0)
    batches = models.BigIntegerField(default=0)
    replays = models.PositiveIntegerField(default=0)
    replayed_messages = models.BigIntegerField(default=0)
    last_delivery_at = models.DateTimeField(null=True, blank=True)

    # Failures and retries (the seed's error types).
    config_version = models.PositiveIntegerField(default=1)
    error_type = models.CharField(max_length=32, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    error_streak_started = models.DateTimeField(null=True, blank=True)
    failures = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    # Per-output lease, as for sources (`collectors.collection`).
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_expires = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)

    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    # How `collectors.health` files this output's health events.
    HEALTH_RESOURCE_TYPE = "Output"

    objects = OutputQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(Lower("name"), name="output_name_unique_ci"),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        """Its row on the Outputs page, which every role that sees health
        events may open (the edit form needs Manage Collectors)."""
        return f"{reverse('outputs')}#output-{self.pk}"

    # Secrets.
    def set_url(self, url: str) -> None:
        self.url_encrypted = crypto.encrypt(url)
        self.url_hint = mask_url(url)

    def get_url(self) -> str:
        """Decrypt the URL; raises crypto.KeyUnreadable, never leaks it."""
        return crypto.decrypt(self.url_encrypted)

    def set_token(self, token: str) -> None:
        self.token_encrypted = crypto.encrypt(token) if token else ""
        self.token_hint = mask_token(token) if token else ""

    def get_token(self) -> str:
        return crypto.decrypt(self.token_encrypted) if self.token_encrypted else ""

    # Filter.
    @property
    def filters_source(self) -> bool:
        return bool(self.source_label)

    def pending_q(self, known_categories: list[str] | None = None) -> Q:
        """Messages after the checkpoint that this output forwards.

        `known_categories` (the stored categories) turns the pattern into an
        IN list without a query per output; None lets the database match.
        """
        q = Q(pk__gt=self.checkpoint)
        if self.filters_source:
            q &= Q(source_id=self.source_id) if self.source_id else Q(pk__in=[])
        pattern = self.category_pattern
        if pattern.strip("*"):
            if known_categories is None:
                q &= category_q(pattern)
            else:
                matcher = category_matcher(pattern)
                matching = [c for c in known_categories if matcher.fullmatch(c)]
                q &= Q(source_category__in=matching)
        return q

    def wants(self, source_id: int | None, category: str, matcher) -> bool:
        """Whether one read message passes the filter (the delivery run reads
        every id after the checkpoint and filters here, so a message whose
        category appeared meanwhile cannot be skipped by a stale IN list)."""
        if self.filters_source and (not self.source_id or source_id != self.source_id):
            return False
        return matcher is None or bool(matcher.fullmatch(category))

    def backlog(self) -> tuple[int, datetime | None]:
        """(messages not delivered yet, receipt time of the oldest one)."""
        figures = LogMessage.objects.filter(self.pending_q()).aggregate(
            n=Count("pk"), oldest=Min("receipt_time")
        )
        return figures["n"], figures["oldest"]

    # Health, drawn with collectors' icon and panel (collectors/status.py).
    health_activity = "delivery"

    @property
    def health_panel_url(self) -> str:
        return reverse("output-health", args=[self.pk])

    @property
    def last_success_at(self) -> datetime | None:
        return self.last_delivery_at

    @property
    def is_neutral(self) -> bool:
        """A disabled output is drawn neutral unless something is wrong."""
        return not self.enabled

    def open_health_counts(self) -> tuple[int, int]:
        return (
            HealthEvent.objects.open()
            .for_resource(self.HEALTH_RESOURCE_TYPE, self.pk)
            .severity_counts()
        )

    # State.
    @property
    def status(self) -> str:
        if not self.enabled:
            return OutputStatus.DISABLED
        if self.error_type == ErrorType.THIRD_PARTY_CONFIG:
            return OutputStatus.ERROR
        if self.error_streak_started:
            return OutputStatus.RETRYING
        return OutputStatus.DELIVERING

    @property
    def short_format(self) -> str:
        return SHORT_FORMAT.get(self.format, self.format)

    def get_status_display(self) -> str:
        return OutputStatus(self.status).label

    def reconfigured(self) -> None:
        """After an edit: a new configuration version and a fresh start, so a
        ThirdPartyConfig error (which waits for an edit) is retried now."""
        Output.objects.filter(pk=self.pk).update(
            config_version=models.F("config_version") + 1,
            error_type="",
            error_streak_started=None,
            failures=0,
            next_attempt_at=None,
        )
        self.refresh_from_db(
            fields=[
                "config_version",
                "error_type",
                "error_streak_started",
                "failures",
                "next_attempt_at",
            ]
        )

    def set_enabled(self, enabled: bool) -> None:
        """Disable or enable; enabling also clears a waiting retry."""
        values: dict = {"enabled": enabled, "updated": timezone.now()}
        if enabled:
            values["next_attempt_at"] = None
        Output.objects.filter(pk=self.pk).update(**values)
        self.enabled = enabled

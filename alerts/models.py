"""Monitors, notification connections, the trigger history and the
Notifications log.

A monitor reads the collectors app's sources, health events and messages and
never writes them. Its `triggered` flag flips only through one conditional
UPDATE (`Monitor.flip`), so two overlapping checks cannot both notify for the
same change. Connection URLs and secrets are encrypted with the same
MultiFernet as API keys and only ever shown masked.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

from django.db import models
from django.db.models.functions import Lower
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.utils import timezone

from collectors import crypto


class MonitorKind(models.TextChoices):
    HEALTH = "health", "Health monitor"
    LOG = "log", "Log monitor"


class HealthCondition(models.TextChoices):
    """What a health monitor watches, on each source of its scope."""

    SOURCE_ERROR = "source_error", "A source enters Error"
    WARNING_OPEN = "warning_open", "A Warning stays open longer than N minutes"
    STALE = "stale", "No new message stored for N hours"
    QUOTA = "quota", "The daily quota is projected to run out"


class Scope(models.TextChoices):
    ALL = "all", "All sources"
    COLLECTOR = "collector", "The sources of one collector"
    SOURCES = "sources", "Chosen sources"


class ConnectionKind(models.TextChoices):
    EMAIL = "email", "Email"
    WEBHOOK = "webhook", "Webhook (signed JSON)"
    SLACK = "slack", "Slack incoming webhook"
    TEAMS = "teams", "Microsoft Teams webhook"


class ConnectionQuerySet(models.QuerySet):
    def with_health(self) -> list[Connection]:
        """The connections with `open_errors` / `open_warnings` set from one
        query, so the list draws every status icon without a query per row."""
        from collectors.choices import Severity
        from collectors.models import HealthEvent

        connections = list(self)
        rows = (
            HealthEvent.objects.open()
            .filter(
                resource_type=Connection.HEALTH_RESOURCE_TYPE,
                resource_id__in=[c.pk for c in connections],
            )
            .values_list("resource_id", "severity")
            .annotate(n=models.Count("pk"))
            .order_by()
        )
        counts: dict[int, list[int]] = {}
        for pk, severity, n in rows:
            counts.setdefault(pk, [0, 0])[0 if severity == Severity.ERROR else 1] += n
        for c in connections:
            c.open_errors, c.open_warnings = counts.get(c.pk, (0, 0))
        return connections


class Connection(models.Model):
    """Where notifications go: email addresses or a webhook URL.

    The URL (which for Slack and Teams *is* the credential) and the webhook's
    HMAC secret are stored encrypted; pages show `masked_url` only.
    """

    HEALTH_RESOURCE_TYPE = "Connection"

    name = models.CharField(max_length=128)
    kind = models.CharField(max_length=16, choices=ConnectionKind.choices)
    recipients = models.TextField(
        blank=True, help_text="Email addresses, separated by commas."
    )
    url_encrypted = models.TextField(blank=True, editable=False)
    url_hint = models.CharField(max_length=300, blank=True, editable=False)
    secret_encrypted = models.TextField(blank=True, editable=False)
    # Delivery failures in a row; a health event is opened past a threshold.
    failures = models.PositiveIntegerField(default=0, editable=False)
    last_success_at = models.DateTimeField(null=True, blank=True, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    objects = ConnectionQuerySet.as_manager()

    # Health, drawn with the collectors' icon and panel (collectors/status.py).
    health_activity = "delivery"
    is_neutral = False

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(Lower("name"), name="connection_name_unique_ci"),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("connections") + f"#connection-{self.pk}"

    @property
    def health_panel_url(self) -> str:
        return reverse("connection-health", args=[self.pk])

    def open_health_counts(self) -> tuple[int, int]:
        from collectors.models import HealthEvent

        return (
            HealthEvent.objects.open()
            .for_resource(self.HEALTH_RESOURCE_TYPE, self.pk)
            .severity_counts()
        )

    @property
    def is_email(self) -> bool:
        return self.kind == ConnectionKind.EMAIL

    def recipient_list(self) -> list[str]:
        return [a.strip() for a in self.recipients.split(",") if a.strip()]

    def set_url(self, url: str) -> None:
        """Encrypt the URL; keep a hint naming the host and the last 4 chars."""
        self.url_encrypted = crypto.encrypt(url)
        self.url_hint = mask_url(url)

    def get_url(self) -> str:
        """The decrypted URL; raises crypto.KeyUnreadable, never leaks it."""
        return crypto.decrypt(self.url_encrypted)

    def set_secret(self, secret: str) -> None:
        self.secret_encrypted = crypto.encrypt(secret)

    def get_secret(self) -> str:
        return crypto.decrypt(self.secret_encrypted)

    @property
    def destination(self) -> str:
        """What the pages and the Notifications log show as "to"."""
        return self.recipients if self.is_email else self.url_hint


def mask_url(url: str) -> str:
    """`https://hooks.slack.com/…WXYZ`: scheme and host, never the path,
    query or credentials (a Slack URL's path is its secret)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…{url[-4:]}"


class Monitor(models.Model):
    """A condition checked every minute, notifying its connections when it
    becomes true (triggers) and when it becomes false again (resolves).

    Health monitors watch sources (`scope`); log monitors count the messages
    matching a saved Messages filter (`query`, the page's GET parameters)
    stored in the last `window_minutes`.
    """

    name = models.CharField(max_length=128)
    kind = models.CharField(max_length=8, choices=MonitorKind.choices)
    enabled = models.BooleanField(default=True)
    connections = models.ManyToManyField(Connection, blank=True)

    condition = models.CharField(
        max_length=16, choices=HealthCondition.choices, blank=True
    )
    scope = models.CharField(max_length=16, choices=Scope.choices, default=Scope.ALL)
    collector = models.ForeignKey(
        "collectors.HostedCollector", models.SET_NULL, null=True, blank=True
    )
    sources = models.ManyToManyField("collectors.Source", blank=True)
    warning_minutes = models.PositiveIntegerField(default=30)
    stale_hours = models.PositiveIntegerField(default=24)

    query = models.JSONField(default=dict, blank=True)
    threshold = models.PositiveIntegerField(default=0)
    window_minutes = models.PositiveIntegerField(default=60)
    per_user = models.BooleanField(default=False)

    triggered = models.BooleanField(default=False, editable=False)
    changed_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        permissions = [
            ("view_monitors", "View Monitors"),
            ("manage_monitors", "Manage Monitors"),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("monitor-detail", args=[self.pk])

    def describe(self) -> str:
        """The condition in words, for the list, the history and notifications."""
        if self.kind == MonitorKind.LOG:
            who = "any one user has" if self.per_user else "there are"
            return (
                f"{who} more than {self.threshold} matching "
                f"message{pluralize(self.threshold)} stored in the last "
                f"{self.window_minutes} minute{pluralize(self.window_minutes)}"
            )
        text = {
            HealthCondition.SOURCE_ERROR: "a source is in Error",
            HealthCondition.WARNING_OPEN: (
                f"a Warning is open for more than {self.warning_minutes} "
                f"minute{pluralize(self.warning_minutes)}"
            ),
            HealthCondition.STALE: (
                f"a source stored no message for {self.stale_hours} "
                f"hour{pluralize(self.stale_hours)}"
            ),
            HealthCondition.QUOTA: "a source's daily quota is projected to run out",
        }
        return text.get(self.condition, self.condition)

    def flip(self, active: bool, now) -> bool:
        """Record a change of condition, once: the UPDATE only matches while
        the stored flag still has the old value, so of two overlapping checks
        exactly one sees the change (and notifies)."""
        changed = Monitor.objects.filter(pk=self.pk, triggered=not active).update(
            triggered=active, changed_at=now, last_checked_at=now
        )
        if changed:
            self.triggered, self.changed_at = active, now
        return bool(changed)


class Trigger(models.Model):
    """One change of a monitor: it triggered or it resolved (the history)."""

    TRIGGERED = "triggered"
    RESOLVED = "resolved"

    monitor = models.ForeignKey(Monitor, models.CASCADE, related_name="triggers")
    state = models.CharField(
        max_length=12, choices=[(TRIGGERED, "Triggered"), (RESOLVED, "Resolved")]
    )
    at = models.DateTimeField(default=timezone.now)
    summary = models.TextField()
    # What matched: counts, users, sources and up to 10 messages (cut short).
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["monitor", "-at"])]

    def __str__(self) -> str:
        return f"{self.monitor_id} {self.state} at {self.at:%Y-%m-%d %H:%M}"


class NotificationStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"


class Notification(models.Model):
    """One message to one connection, with its delivery attempts.

    `key` is the idempotency key sent with every attempt, so a receiver that
    got a notification whose answer was lost can drop the repeat. The body is
    built once (`payload`) and is the same on every attempt.
    """

    trigger = models.ForeignKey(
        Trigger, models.SET_NULL, null=True, blank=True, related_name="notifications"
    )
    connection = models.ForeignKey(
        Connection, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    monitor_name = models.CharField(max_length=128, blank=True)
    connection_name = models.CharField(max_length=128)
    kind = models.CharField(max_length=16, choices=ConnectionKind.choices)
    destination = models.CharField(max_length=1024, blank=True)
    is_test = models.BooleanField(default=False)
    key = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    payload = models.JSONField(default=dict)
    status = models.CharField(
        max_length=8,
        choices=NotificationStatus.choices,
        default=NotificationStatus.PENDING,
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    lease_until = models.DateTimeField(null=True, blank=True)
    last_result = models.CharField(max_length=500, blank=True)
    created = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"]),
            models.Index(fields=["-created", "-id"], name="notification_created"),
        ]

    def __str__(self) -> str:
        return f"{self.connection_name} ({self.status})"


class Attempt(models.Model):
    """One delivery attempt of a notification: when, and what came back."""

    notification = models.ForeignKey(
        Notification, models.CASCADE, related_name="attempt_log"
    )
    at = models.DateTimeField(default=timezone.now)
    ok = models.BooleanField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    result = models.CharField(max_length=500)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.notification_id} at {self.at:%H:%M:%S}: {self.result}"

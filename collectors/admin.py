"""Django admin for every model of the app.

The API key is never shown: the Source admin excludes the encrypted column and
shows only the 4-character hint. Records written by the engine (health events,
log messages, state transitions, API-key usage) are read-only here.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin

from collectors import names
from collectors.forms import CollectorForm, FieldDefinitionForm
from collectors.models import (
    ApiKeyUsage,
    ConnectionTest,
    FieldDefinition,
    HealthEvent,
    HostedCollector,
    LogMessage,
    QuarantinedEvent,
    Source,
    SourceField,
    StateTransition,
    UserPreference,
)


def bidi_visible(field: str, label: str):
    """A list column showing `field` with bidi controls made visible, as the
    app's pages do: text from KnowBe4 cannot reorder the row around it."""

    def column(obj) -> str:
        return names.show_bidi(str(getattr(obj, field) or ""))

    return admin.display(description=label, ordering=field)(column)


class BidiVisibleValuesFilter(admin.AllValuesFieldListFilter):
    """The distinct values of a text column, bidi controls made visible."""

    def choices(self, changelist):
        for choice in super().choices(changelist):
            yield {**choice, "display": names.show_bidi(str(choice["display"]))}


class ReadOnlyAdmin(admin.ModelAdmin):
    """Browse and search only: these rows are facts recorded by the engine."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class SourceInline(admin.TabularInline):
    model = Source
    fields = ["name", "category", "state", "base_url_key", "api_key_hint"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(HostedCollector)
class HostedCollectorAdmin(admin.ModelAdmin):
    """Collectors, with the app's form: its name rules and same-name check."""

    form = CollectorForm
    list_display = ["name", "category", "created", "updated"]
    search_fields = ["name", "description", "category"]
    list_filter = ["created"]
    inlines = [SourceInline]


class SourceFieldInline(admin.TabularInline):
    """Shown, not edited: the source form checks the naming rules and schema."""

    model = SourceField
    fields = ["key", "value"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class SourceAdminForm(forms.ModelForm):
    """The source's settings that admin may change.

    Not the Base URL: a new Base URL needs the API key typed again (or the
    stored key would be sent to the new host), and admin never takes the key;
    the source form does both.
    """

    class Meta:
        model = Source
        fields = [
            "collector",
            "name",
            "description",
            "category",
            "initial_lookback_days",
            "rescan_days",
        ]

    def clean(self) -> dict:
        """The source form's same-name rule, in the collector chosen here."""
        cleaned = super().clean()
        collector, name = cleaned.get("collector"), cleaned.get("name")
        if collector and name:
            others = Source.objects.filter(collector=collector).exclude(
                pk=self.instance.pk
            )
            if names.same_name_ids(others.values_list("pk", "name"), name):
                self.add_error(
                    "name", f"This collector already has a source named “{name}”."
                )
        return cleaned


@admin.register(Source)
class SourceAdmin(admin.ModelAdmin):
    """Sources; the encrypted key column is excluded, its hint read-only."""

    form = SourceAdminForm

    list_display = [
        "name",
        "collector",
        "kind",
        "category",
        "state",
        "error_type",
        "base_url_key",
        "api_key_hint",
        "config_version",
        "last_success_at",
    ]
    list_filter = ["state", "error_type", "base_url_key", "collector"]
    search_fields = ["name", "category", "collector__name"]
    list_select_related = ["collector"]
    exclude = ["api_key_encrypted"]
    readonly_fields = [
        "kind",
        "reporting",
        "base_url",
        "api_key_hint",
        "state",
        "state_changed",
        "error_type",
        "config_version",
        "last_complete_day",
        "cursor_day",
        "cursor_page",
        "error_streak_started",
        "next_attempt_at",
        "last_success_at",
        "lease_owner",
        "lease_expires",
        "dropped_fields",
        "created",
        "updated",
    ]
    inlines = [SourceFieldInline]

    @admin.display(description="Base URL")
    def base_url(self, obj: Source) -> str:
        """Shown only: change it on the source's Edit page, with the key."""
        entry = obj.base_url
        return (
            entry.choice_label if entry else f"{obj.base_url_key} (no longer offered)"
        )

    def has_add_permission(self, request) -> bool:
        """Sources are added through the KnowBe4 form, which takes the key."""
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        """Deleting goes through Stopping (the source's Delete action), so that
        a run in flight ends cleanly; admin would remove the row outright."""
        return False

    def save_model(self, request, obj, form, change) -> None:
        """An edit here is a reconfiguration too (new config version)."""
        super().save_model(request, obj, form, change)
        if change:
            obj.reconfigured()


@admin.register(FieldDefinition)
class FieldDefinitionAdmin(admin.ModelAdmin):
    """The Fields page's rules here too: naming rules and the 200-field cap on
    add, no renaming, and no deleting a field that a source uses."""

    form = FieldDefinitionForm
    list_display = ["name", "enabled", "created"]
    list_filter = ["enabled"]
    search_fields = ["name"]
    actions = None  # A bulk delete would skip the in-use check.

    def get_fields(self, request, obj=None) -> list[str]:
        return ["name", "enabled"]

    def get_readonly_fields(self, request, obj=None) -> list[str]:
        return ["name"] if obj else []

    def has_delete_permission(self, request, obj=None) -> bool:
        if obj is not None and obj.sources_using():
            return False
        return super().has_delete_permission(request, obj)


@admin.register(StateTransition)
class StateTransitionAdmin(ReadOnlyAdmin):
    list_display = [
        "at",
        "source_name",
        "collector_name",
        "from_state",
        "to_state",
        bidi_visible("reason", "reason"),
    ]
    list_filter = ["to_state", "from_state"]
    search_fields = ["source_name", "collector_name", "reason"]
    date_hierarchy = "at"


@admin.register(HealthEvent)
class HealthEventAdmin(ReadOnlyAdmin):
    list_display = [
        "event_name",
        "severity",
        "resource_type",
        "resource_name",
        "collector_name",
        "error_code",
        "count",
        "first_seen",
        "last_seen",
        "resolved_at",
    ]
    list_filter = [
        "severity",
        "event_name",
        "error_type",
        "resource_type",
        "resolved_at",
    ]
    search_fields = ["message", "error_code", "resource_name", "collector_name"]


@admin.register(LogMessage)
class LogMessageAdmin(ReadOnlyAdmin):
    list_display = [
        "event_id",
        "message_time",
        bidi_visible("event_type", "event type"),
        "risk_level",
        bidi_visible("user_email", "user email"),
        "source_name",
        bidi_visible("source_category", "_sourceCategory"),
        "collector_name",
    ]
    # Few filters and no date hierarchy: each costs a DISTINCT over a table
    # that grows by millions of rows.
    list_filter = [("event_type", BidiVisibleValuesFilter)]
    search_fields = ["=event_id", "user_email", "source_name"]
    list_select_related = ["source"]
    show_full_result_count = False


@admin.register(QuarantinedEvent)
class QuarantinedEventAdmin(ReadOnlyAdmin):
    list_display = ["created", "source", "day", "page", "event_id", "reason_code"]
    list_filter = ["reason_code", "reprocessed_at"]
    list_select_related = ["source"]
    fields = [
        "source",
        "day",
        "page",
        "event_id",
        "reason_code",
        "reason",
        "raw_text",
        "created",
        "reprocessed_at",
    ]
    readonly_fields = fields


@admin.register(ConnectionTest)
class ConnectionTestAdmin(ReadOnlyAdmin):
    """Presses of Test connection (kept a minute, for the per-user limit)."""

    list_display = ["at", "user"]
    list_select_related = ["user"]


@admin.register(ApiKeyUsage)
class ApiKeyUsageAdmin(ReadOnlyAdmin):
    """Only a fingerprint of each key is stored; never the key itself."""

    list_display = [
        "__str__",
        "used",
        "window_opened_at",
        "window_resets_at",
        "quota_reset_at",
    ]
    list_filter = ["api"]
    search_fields = ["key_hash"]


@admin.register(UserPreference)
class UserPreferenceAdmin(admin.ModelAdmin):
    """Each user's time zone choice (users change their own on Preferences)."""

    list_display = ["user", "time_zone"]
    list_filter = ["time_zone"]
    search_fields = ["user__username"]


class SuperuserChangesOnly:
    """django-q2's admin, read-only for staff: a Schedule names any Python
    function to run, and resubmitting a task runs it again, so only a
    superuser may add, change, delete or resubmit."""

    def has_add_permission(self, request, *args) -> bool:
        return request.user.is_superuser and super().has_add_permission(request, *args)

    def has_change_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser and super().has_delete_permission(request, obj)

    def get_actions(self, request):
        return super().get_actions(request) if request.user.is_superuser else {}


def _lock_django_q_admin() -> None:
    """Re-register django-q2's models with `SuperuserChangesOnly` in front."""
    from django_q import admin as q_admin  # registers them first
    from django_q import models as q_models

    for model, model_admin in (
        (q_models.Schedule, q_admin.ScheduleAdmin),
        (q_models.Success, q_admin.TaskAdmin),
        (q_models.Failure, q_admin.FailAdmin),
        (q_models.OrmQ, q_admin.QueueAdmin),
    ):
        if admin.site.is_registered(model):
            admin.site.unregister(model)
            locked = type(model_admin.__name__, (SuperuserChangesOnly, model_admin), {})
            admin.site.register(model, locked)


_lock_django_q_admin()

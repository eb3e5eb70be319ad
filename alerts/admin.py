"""Django admin for the alerts app: read-mostly, secrets never shown.

Connections are edited on the Connections page (which encrypts URL and
secret); here they are listed with the masked URL only.
"""

from __future__ import annotations

from django.contrib import admin

from alerts.models import Attempt, Connection, Monitor, Notification, Trigger


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "destination", "failures"]
    fields = ["name", "kind", "recipients", "url_hint", "failures"]
    readonly_fields = ["kind", "recipients", "url_hint", "failures"]

    def has_add_permission(self, request) -> bool:
        return False  # the Connections page encrypts the URL and secret


@admin.register(Monitor)
class MonitorAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "enabled", "triggered", "changed_at"]
    list_filter = ["kind", "enabled", "triggered"]
    readonly_fields = ["triggered", "changed_at", "last_checked_at"]


@admin.register(Trigger)
class TriggerAdmin(admin.ModelAdmin):
    list_display = ["monitor", "state", "at", "summary"]
    list_select_related = ["monitor"]

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class AttemptInline(admin.TabularInline):
    model = Attempt
    extra = 0
    can_delete = False
    readonly_fields = ["at", "ok", "status_code", "result"]


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["created", "monitor_name", "connection_name", "status", "attempts"]
    list_filter = ["status", "kind"]
    exclude = ["connection", "trigger"]
    readonly_fields = [
        f.name
        for f in Notification._meta.fields
        if f.name not in ("id", "connection", "trigger")
    ]
    inlines = [AttemptInline]

    def has_add_permission(self, request) -> bool:
        return False

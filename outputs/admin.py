"""Outputs in Django admin: browse and search only. The URL and token are
never shown (only their masked hints); outputs are edited on the Outputs
page, whose form encrypts the secrets and bumps the configuration version."""

from __future__ import annotations

from django.contrib import admin

from collectors.admin import ReadOnlyAdmin
from outputs.models import Output


@admin.register(Output)
class OutputAdmin(ReadOnlyAdmin):
    list_display = [
        "name",
        "format",
        "enabled",
        "url_hint",
        "checkpoint",
        "delivered",
        "replays",
        "error_type",
        "last_delivery_at",
    ]
    list_filter = ["format", "enabled", "error_type"]
    search_fields = ["name", "category_pattern", "source_label"]
    exclude = ["url_encrypted", "token_encrypted", "lease_owner"]

"""The alerts app: monitors, notification connections and the egress seam."""

from __future__ import annotations

from django.apps import AppConfig


class AlertsConfig(AppConfig):
    """Reads the collectors app's messages and health events, never writes them."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "alerts"
    verbose_name = "Alerts"

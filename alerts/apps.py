"""The alerts app: monitors, notification connections and the egress seam."""

from __future__ import annotations

from django.apps import AppConfig


class AlertsConfig(AppConfig):
    """Reads the collectors app's messages and health events, never writes them."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "alerts"
    verbose_name = "Alerts"

    def ready(self) -> None:
        from collectors import crypto

        # Rotated by `manage.py rotate_keys`, sampled by the key check.
        crypto.register_encrypted(
            "alerts.Connection", "url_encrypted", "secret_encrypted"
        )

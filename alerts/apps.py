"""The alerts app: monitors, notification connections and the egress seam."""

from __future__ import annotations

from django.apps import AppConfig


class AlertsConfig(AppConfig):
    """Reads the collectors app's messages and health events, never writes them."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "alerts"
    verbose_name = "Alerts"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from alerts.schedules import register
        from collectors import crypto, schedules

        # After `migrate` the monitor checks run, as collection's dispatcher does.
        post_migrate.connect(schedules.after_migrate(register), sender=self, weak=False)

        # Rotated by `manage.py rotate_keys`, sampled by the key check.
        crypto.register_encrypted(
            "alerts.Connection", "url_encrypted", "secret_encrypted"
        )

"""App config for the outputs app: forwarding collected messages."""

from __future__ import annotations

from django.apps import AppConfig


class OutputsConfig(AppConfig):
    """Outputs deliver collected messages to Sumo Logic, Splunk HEC or any
    NDJSON endpoint. The app reads `collectors.LogMessage` and never writes
    collectors' rows (health events go through `collectors.health`)."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "outputs"
    label = "outputs"
    verbose_name = "Outputs"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from collectors import crypto, schedules
        from outputs.schedules import register

        # Rotated by `manage.py rotate_keys`, sampled by the key check.
        crypto.register_encrypted("outputs.Output", "url_encrypted", "token_encrypted")
        # After `migrate` the dispatcher schedule exists, as collection's does.
        post_migrate.connect(schedules.after_migrate(register), sender=self, weak=False)

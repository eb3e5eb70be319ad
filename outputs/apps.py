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

        from collectors import crypto

        # Rotated by `manage.py rotate_keys`, sampled by the key check.
        crypto.register_encrypted("outputs.Output", "url_encrypted", "token_encrypted")
        post_migrate.connect(register_schedule, sender=self)


def register_schedule(sender, using: str = "default", **kwargs) -> None:
    """After `migrate`: the dispatcher schedule exists without
    `setup_schedules`, as collection's does."""
    from django.db import connections

    from outputs.schedules import register

    if "django_q_schedule" not in connections[using].introspection.table_names():
        return  # django_q not migrated (yet): its own migrate run comes later
    register(using)

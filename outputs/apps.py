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

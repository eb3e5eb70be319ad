"""App config for the collectors app."""

from __future__ import annotations

from django.apps import AppConfig


class CollectorsConfig(AppConfig):
    """KnowBe4 API sources, their collection and health."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "collectors"
    verbose_name = "Collection"

    def ready(self) -> None:
        from collectors import (
            checks,  # noqa: F401 - registers the encryption-key checks
            health,  # noqa: F401 - connects its signal handlers
            navigation,  # noqa: F401 - connects the sign-in hook
            timezones,  # noqa: F401 - connects the sign-in hook
        )

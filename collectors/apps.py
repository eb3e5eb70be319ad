"""App config for the collectors app."""

from __future__ import annotations

from django.apps import AppConfig


class CollectorsConfig(AppConfig):
    """KnowBe4 API sources, their collection and health."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "collectors"
    verbose_name = "Collection"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from collectors import (
            checks,  # noqa: F401 - registers the encryption-key checks
            health,  # noqa: F401 - connects its signal handlers
            navigation,  # noqa: F401 - connects the sign-in hook
            schedules,
            timezones,  # noqa: F401 - connects the sign-in hook
        )

        post_migrate.connect(
            schedules.after_migrate(_register_schedules), sender=self, weak=False
        )


def _register_schedules(using: str) -> None:
    """After `migrate`: the schedules exist without `setup_schedules` (a
    deployment that runs only migrate and qcluster still dispatches)."""
    from collectors.tasks import ensure_schedules

    ensure_schedules(using)

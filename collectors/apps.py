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
            timezones,  # noqa: F401 - connects the sign-in hook
        )

        post_migrate.connect(register_schedules, sender=self)


def register_schedules(sender, using: str = "default", **kwargs) -> None:
    """After `migrate`: the schedules exist without `setup_schedules` (a
    deployment that runs only migrate and qcluster still dispatches)."""
    from django.db import connections

    from collectors.tasks import ensure_schedules

    if "django_q_schedule" not in connections[using].introspection.table_names():
        return  # django_q not migrated (yet): its own migrate run comes later
    ensure_schedules(using)

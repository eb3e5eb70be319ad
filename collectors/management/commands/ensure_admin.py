"""Make sure an administrator account exists (used by `make run`)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

USERNAME = "admin"
RESET_HINT = ".venv/bin/python manage.py changepassword admin"


@dataclass(frozen=True)
class AdminAccount:
    """What `make run` tells the user about the administrator account.

    `password` is set only when it was generated just now: it is shown once and
    stored nowhere in clear (only its hash is in the database).
    """

    created: bool
    password: str | None = None
    from_env: bool = False

    def lines(self) -> list[str]:
        """The account's lines of the start-up banner."""
        if self.password:
            return [
                f"Sign in as '{USERNAME}' with password: {self.password}",
                "(shown only this once: note it now)",
            ]
        if self.created and self.from_env:
            return [f"Sign in as '{USERNAME}' (password from ADMIN_PASSWORD)."]
        return [
            f"Sign in as '{USERNAME}' (created on an earlier run).",
            f"Forgot its password? Reset it with: {RESET_HINT}",
        ]


def ensure_admin() -> AdminAccount:
    """Create the 'admin' superuser when missing, with ADMIN_PASSWORD or a
    generated password."""
    User = get_user_model()
    if User.objects.filter(username=USERNAME).exists():
        return AdminAccount(created=False)
    from_env = bool(os.environ.get("ADMIN_PASSWORD"))
    password = os.environ.get("ADMIN_PASSWORD") or secrets.token_urlsafe(12)
    User.objects.create_superuser(USERNAME, "", password)
    return AdminAccount(
        created=True, password=None if from_env else password, from_env=from_env
    )


class Command(BaseCommand):
    help = "Create the 'admin' superuser if missing; print a generated password once."

    def handle(self, *args, **options) -> None:
        for line in ensure_admin().lines():
            self.stdout.write(line)

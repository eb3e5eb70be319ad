"""Make sure an administrator account exists (used by `make run`)."""

from __future__ import annotations

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the 'admin' superuser if missing; print a generated password once."

    def handle(self, *args, **options) -> None:
        User = get_user_model()
        if User.objects.filter(username="admin").exists():
            self.stdout.write("Administrator 'admin' exists.")
            return
        password = os.environ.get("ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        User.objects.create_superuser("admin", "", password)
        if os.environ.get("ADMIN_PASSWORD"):
            self.stdout.write(
                "Created administrator 'admin' (password from ADMIN_PASSWORD)."
            )
        else:
            # Printed once, stored nowhere in clear: only the hash is in the database.
            self.stdout.write(
                self.style.WARNING(
                    f"Created administrator 'admin' with password: {password}\n"
                    "This is the only time it is shown."
                )
            )

"""Re-encrypt every stored secret with the first key of FIELD_ENCRYPTION_KEYS.

manage.py rotate_keys                  rotate, 500 rows per transaction
manage.py rotate_keys --batch-size 100

Rotation: add the new key first (FIELD_ENCRYPTION_KEYS=new,old), restart, run
this command, then drop the old key. Rows already under the first key are left
alone, so running it again changes nothing; a row changed meanwhile (a user
saved a new key) is not overwritten.
"""

from __future__ import annotations

from django.apps import apps
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from collectors import crypto


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret (API keys, connection URLs and secrets) "
        "with the first key of FIELD_ENCRYPTION_KEYS, so the old keys can be "
        "dropped."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--batch-size",
            type=int,
            default=500,
            help="Rows read and written per transaction (default 500).",
        )

    def handle(self, *args, batch_size: int, **options) -> None:
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        if bad := crypto.invalid_key_positions(settings.FIELD_ENCRYPTION_KEYS):
            raise CommandError(
                f"FIELD_ENCRYPTION_KEYS entry {bad[0]} is not a valid Fernet key."
            )
        changed = unreadable = 0
        for label, column in crypto.ENCRYPTED_COLUMNS:
            model = apps.get_model(label)
            done, failed = self._rotate_column(model, column, batch_size)
            changed, unreadable = changed + done, unreadable + failed
        self.stdout.write(f"{changed} row{'s' if changed != 1 else ''} re-encrypted.")
        if unreadable:
            raise CommandError(
                f"{unreadable} stored secret{'s' if unreadable != 1 else ''} could "
                "not be decrypted with any configured key and were left as they "
                "are: put back the key they were encrypted with, or enter those "
                "API keys (or connection URLs) again."
            )

    def _rotate_column(self, model, column: str, batch_size: int) -> tuple[int, int]:
        """(rows changed, rows unreadable) of one column, batch by batch in pk
        order; each write is conditional on the token read, so a concurrent
        edit wins over the rotation."""
        changed = unreadable = 0
        last_pk = None
        while True:
            rows = model._default_manager.order_by("pk")
            if last_pk is not None:
                rows = rows.filter(pk__gt=last_pk)
            batch = list(rows.values_list("pk", column)[:batch_size])
            if not batch:
                return changed, unreadable
            last_pk = batch[-1][0]
            with transaction.atomic():
                for pk, token in batch:
                    if not token:
                        continue
                    try:
                        new = crypto.rotate(token)
                    except crypto.KeyUnreadable:
                        unreadable += 1
                        continue
                    if new is not None:
                        changed += model._default_manager.filter(
                            pk=pk, **{column: token}
                        ).update(**{column: new})

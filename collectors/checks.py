"""System checks of the encryption keys (`manage.py check`, `migrate`, runserver).

A malformed FIELD_ENCRYPTION_KEYS would otherwise surface only when a source
is saved (as a 500), and keys dropped too early only when a run fails to
decrypt its key: both are found here, before anything is served.
"""

from __future__ import annotations

from django.apps import apps
from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.db import DatabaseError

from collectors import crypto

# Stored tokens tried per column: the oldest and the newest rows, so the check
# stays fast however many sources exist.
SAMPLE_SIZE = 25


@register(Tags.security)
def check_encryption_keys(app_configs=None, **kwargs) -> list:
    """An Error for an empty FIELD_ENCRYPTION_KEYS or an entry that is not a
    Fernet key (named by position: the value is a secret)."""
    keys = list(getattr(settings, "FIELD_ENCRYPTION_KEYS", []))
    if not keys:
        return [
            Error(
                "FIELD_ENCRYPTION_KEYS is empty.",
                hint="Set at least one Fernet key (see .env.example).",
                id="collectors.E001",
            )
        ]
    return [
        Error(
            f"FIELD_ENCRYPTION_KEYS entry {position} of {len(keys)} is not a valid "
            "Fernet key.",
            hint=(
                "Each entry is 32 url-safe base64-encoded bytes, comma-separated; "
                'generate one with python -c "from cryptography.fernet import '
                'Fernet; print(Fernet.generate_key().decode())".'
            ),
            id="collectors.E002",
        )
        for position in crypto.invalid_key_positions(keys)
    ]


@register(Tags.database)
def check_stored_keys_readable(app_configs=None, databases=None, **kwargs) -> list:
    """A Warning when sampled stored keys cannot be decrypted with any
    configured key (a key dropped before `rotate_keys` ran).

    A database check: it runs with `migrate` and `check --database default`.
    """
    if not databases or crypto.invalid_key_positions(
        list(getattr(settings, "FIELD_ENCRYPTION_KEYS", []))
    ):
        return []
    unreadable = 0
    for label, column in crypto.ENCRYPTED_COLUMNS:
        try:
            tokens = _sample(apps.get_model(label), column)
        except (DatabaseError, LookupError):  # Not migrated yet.
            continue
        unreadable += sum(1 for token in tokens if not _readable(token))
    if not unreadable:
        return []
    return [
        Warning(
            f"{unreadable} sampled stored secret{'s' if unreadable != 1 else ''} "
            "(API keys, connection URLs) cannot be decrypted with any key of "
            "FIELD_ENCRYPTION_KEYS.",
            hint=(
                "Put back the key they were encrypted with (after the new one), "
                "run manage.py rotate_keys, and only then drop the old key; or "
                "enter those API keys (or connection URLs) again."
            ),
            id="collectors.W001",
        )
    ]


def _sample(model, column: str) -> set[str]:
    """Tokens of the oldest and newest rows: two short indexed queries."""
    manager = model._default_manager.exclude(**{column: ""})
    oldest = manager.order_by("pk").values_list(column, flat=True)[:SAMPLE_SIZE]
    newest = manager.order_by("-pk").values_list(column, flat=True)[:SAMPLE_SIZE]
    return {*oldest, *newest}


def _readable(token: str) -> bool:
    try:
        crypto.decrypt(token)
    except crypto.KeyUnreadable:
        return False
    return True

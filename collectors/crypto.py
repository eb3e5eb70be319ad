"""Encryption of API keys at rest (MultiFernet over FIELD_ENCRYPTION_KEYS).

The first key encrypts; every key decrypts. To rotate: put a new key first,
run `manage.py rotate_keys` (which re-encrypts every stored secret with it),
then drop the old key. `ENCRYPTED_COLUMNS` lists every column this module's
tokens are stored in, so rotation and the system checks find them all.
"""

from __future__ import annotations

import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

# (app_label.Model, column) of every stored token; other apps add theirs with
# `register_encrypted` from their AppConfig.ready().
ENCRYPTED_COLUMNS: list[tuple[str, str]] = [("collectors.Source", "api_key_encrypted")]


def register_encrypted(model_label: str, *columns: str) -> None:
    """Declare columns holding tokens of this module, so that `rotate_keys`
    re-encrypts them and the system check samples them (idempotent)."""
    for column in columns:
        if (model_label, column) not in ENCRYPTED_COLUMNS:
            ENCRYPTED_COLUMNS.append((model_label, column))


class KeyUnreadable(Exception):
    """The stored secret cannot be decrypted with any configured key."""


@cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(k.encode()) for k in keys])


def fernet() -> MultiFernet:
    """The MultiFernet for the keys in settings (cached per key set)."""
    return _fernet(tuple(settings.FIELD_ENCRYPTION_KEYS))


def encrypt(plain: str) -> str:
    """Encrypt a secret for storage."""
    return fernet().encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    """Decrypt a stored secret; raise KeyUnreadable (never the secret) on failure."""
    try:
        return fernet().decrypt(token.encode()).decode()
    except (InvalidToken, ValueError, TypeError) as exc:
        raise KeyUnreadable("The stored API key cannot be decrypted.") from exc


def key_fingerprint(api_key: str) -> str:
    """A stable, non-reversible id for an API key (rate limits, logs).

    Keyed with SECRET_KEY so that a fingerprint leaked from logs cannot be
    checked against a guessed key offline.
    """
    salt = settings.SECRET_KEY.encode()
    return hashlib.blake2b(api_key.encode(), key=salt[:64], digest_size=16).hexdigest()


def invalid_key_positions(keys: list[str]) -> list[int]:
    """1-based positions of the entries that are not Fernet keys (never the
    entries themselves: they are secrets)."""
    bad = []
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key.encode())
        except (ValueError, TypeError):
            bad.append(position)
    return bad


def is_current(token: str) -> bool:
    """Whether `token` is already encrypted with the first (encrypting) key."""
    primary = Fernet(settings.FIELD_ENCRYPTION_KEYS[0].encode())
    try:
        primary.decrypt(token.encode())
    except (InvalidToken, ValueError, TypeError):
        return False
    return True


def rotate(token: str) -> str | None:
    """`token` re-encrypted with the first key, or None if it already is.

    MultiFernet.rotate makes a new token every time (new IV and timestamp), so
    a token the first key reads is left alone: running rotation twice changes
    nothing the second time. Raises KeyUnreadable when no key decrypts it.
    """
    if is_current(token):
        return None
    try:
        return fernet().rotate(token.encode()).decode()
    except (InvalidToken, ValueError, TypeError) as exc:
        raise KeyUnreadable("The stored API key cannot be decrypted.") from exc

"""Encryption of API keys at rest (MultiFernet over FIELD_ENCRYPTION_KEYS).

The first key encrypts; every key decrypts, so keys can be rotated by putting
a new key first and re-saving (or `rotate` on read) without downtime.
"""

from __future__ import annotations

import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


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

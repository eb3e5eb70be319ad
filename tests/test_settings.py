"""Settings, crypto and the Base URL allow-list."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from collectors import baseurls, crypto


def test_it_encrypts_and_decrypts(settings):
    token = crypto.encrypt("secret-value-1234")
    assert "secret-value" not in token
    assert crypto.decrypt(token) == "secret-value-1234"


def test_it_decrypts_with_a_rotated_key(settings):
    old = settings.FIELD_ENCRYPTION_KEYS[0]
    token = crypto.encrypt("rotate-me-please")
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), old]
    assert crypto.decrypt(token) == "rotate-me-please"


def test_it_reports_an_unreadable_key_without_the_secret(settings):
    token = crypto.encrypt("never-shown-9876")
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(crypto.KeyUnreadable) as info:
        crypto.decrypt(token)
    assert "never-shown" not in str(info.value)


def test_it_lists_the_seed_regions_first(settings):
    settings.KNOWBE4_EXTRA_BASE_URLS = []
    urls = [b.url for b in baseurls.all_base_urls()]
    assert urls[:3] == [
        "https://api.events.knowbe4.com",
        "https://api-eu.events.knowbe4.com",
        "https://api-ca.events.knowbe4.com",
    ]


def test_it_adds_operator_entries(settings):
    settings.KNOWBE4_EXTRA_BASE_URLS = ["Sandbox (local)|http://127.0.0.1:8765"]
    entry = baseurls.get("x-sandbox-local")
    assert entry is not None and entry.url == "http://127.0.0.1:8765"


@pytest.mark.parametrize(
    "bad", ["nolabel", "L|ftp://x", "L|http://h/path", "|http://h"]
)
def test_it_refuses_a_malformed_extra_entry(bad):
    with pytest.raises(ImproperlyConfigured):
        baseurls.parse_extra(bad)

"""Settings, crypto and the Base URL allow-list."""

from __future__ import annotations

import os
import subprocess
import sys

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


@pytest.mark.parametrize(
    ("entry", "debug"),
    [
        ("Lab|http://lab.example.org", True),
        ("Lab|http://lab.example.org", False),
        ("Lab|http://10.0.0.5:8080", True),
        ("Sandbox|http://127.0.0.1:8025", False),
        ("Sandbox|http://localhost:8025", False),
        ("Sandbox|http://[::1]:8025", False),
    ],
)
def test_it_refuses_an_extra_entry_that_would_send_the_key_in_clear(entry, debug):
    with pytest.raises(ImproperlyConfigured) as info:
        baseurls.check_extra(["Proxy|https://kb4.example.org", entry], debug=debug)
    assert repr(entry) in str(info.value)
    assert "must use https://" in str(info.value)


@pytest.mark.parametrize(
    ("entry", "debug"),
    [
        ("Proxy|https://kb4-proxy.example.org:8443", False),
        ("Proxy|https://10.0.0.5", False),
        ("Sandbox|http://127.0.0.1:8025", True),
        ("Sandbox|http://127.8.9.10:8025", True),
        ("Sandbox|http://localhost:8025", True),
        ("Sandbox|http://[::1]:8025", True),
    ],
)
def test_it_accepts_https_and_loopback_http_with_debug(entry, debug):
    assert baseurls.check_extra([entry, ""], debug=debug) == [entry]


def _start(**env) -> subprocess.CompletedProcess:
    """Start Django in a fresh process with the given environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("KNOWBE4_")}
    base.update(
        SECRET_KEY="s" * 50,
        FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        DJANGO_SETTINGS_MODULE="knowbe4sumo.settings",
        **env,
    )
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=settings_dir(),
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
    )


def settings_dir() -> str:
    from django.conf import settings

    return str(settings.BASE_DIR)


def test_it_refuses_to_start_with_an_http_extra_base_url_in_production():
    entry = "Sandbox|http://127.0.0.1:8025"
    refused = _start(DEBUG="0", KNOWBE4_EXTRA_BASE_URLS=entry)
    assert refused.returncode != 0
    assert "ImproperlyConfigured" in refused.stderr
    assert repr(entry) in refused.stderr
    assert _start(DEBUG="1", KNOWBE4_EXTRA_BASE_URLS=entry).returncode == 0

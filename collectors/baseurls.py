"""The Base URL allow-list: the seed's regions plus the operator's extra entries.

A source stores a key of this list, never a URL typed by a user, so that the
collector can only ever talk to hosts the operator has approved.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.text import slugify


@dataclass(frozen=True)
class BaseUrl:
    """One entry of the Base URL dropdown."""

    key: str
    label: str
    url: str
    location: str = ""

    @property
    def choice_label(self) -> str:
        return f"{self.label} - {self.url}"


REGIONS = (
    BaseUrl(
        "us", "US Server", "https://api.events.knowbe4.com", "training.knowbe4.com"
    ),
    BaseUrl("eu", "EU Server", "https://api-eu.events.knowbe4.com", "eu.knowbe4.com"),
    BaseUrl("ca", "CA Server", "https://api-ca.events.knowbe4.com", "ca.knowbe4.com"),
    BaseUrl("uk", "UK Server", "https://api-uk.events.knowbe4.com"),
    BaseUrl("de", "DE Server", "https://api-de.events.knowbe4.com"),
)


# The KMSAT Reporting API's hosts (`/v1/...`), another API on other hosts:
# a Reporting source stores one of these keys (or an operator's extra entry,
# which serves both APIs, as the local sandbox does).
REPORTING_REGIONS = (
    BaseUrl("kmsat-us", "US", "https://us.api.knowbe4.com"),
    BaseUrl("kmsat-eu", "EU", "https://eu.api.knowbe4.com"),
    BaseUrl("kmsat-ca", "CA", "https://ca.api.knowbe4.com"),
    BaseUrl("kmsat-uk", "UK", "https://uk.api.knowbe4.com"),
    BaseUrl("kmsat-de", "DE", "https://de.api.knowbe4.com"),
)


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (localhost, 127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_extra(entry: str, *, debug: bool = True) -> BaseUrl:
    """Parse one `Label|https://host[:port]` entry of KNOWBE4_EXTRA_BASE_URLS.

    The API key travels in a header, so the URL must be https: plain http is
    accepted only for a loopback address (the local sandbox) and only when
    `debug` is on; settings check every entry with DEBUG at startup.
    """
    label, sep, url = entry.partition("|")
    label, url = label.strip(), url.strip().rstrip("/")
    parts = urlsplit(url)
    if (
        not sep
        or not label
        or parts.scheme not in ("http", "https")
        or not parts.hostname
    ):
        raise ImproperlyConfigured(
            f"KNOWBE4_EXTRA_BASE_URLS entry {entry!r} is not 'Label|https://host[:port]'."
        )
    if parts.path or parts.query or parts.fragment:
        raise ImproperlyConfigured(
            f"KNOWBE4_EXTRA_BASE_URLS entry {entry!r} must not have a path."
        )
    if parts.scheme == "http" and not (debug and is_loopback(parts.hostname)):
        raise ImproperlyConfigured(
            f"KNOWBE4_EXTRA_BASE_URLS entry {entry!r} must use https:// (the API "
            "key is sent to it); http:// is allowed only for a loopback address "
            "(127.0.0.1, ::1, localhost) with DEBUG on."
        )
    return BaseUrl(f"x-{slugify(label)}", label, url)


def check_extra(entries: list[str], *, debug: bool) -> list[str]:
    """Every entry checked at startup (settings.py); returns the non-empty ones."""
    entries = [e for e in entries if e.strip()]
    for entry in entries:
        parse_extra(entry, debug=debug)
    return entries


def all_base_urls() -> list[BaseUrl]:
    """Every allowed Base URL, the seed's regions first."""
    return [*REGIONS, *(parse_extra(e) for e in settings.KNOWBE4_EXTRA_BASE_URLS if e)]


def get(key: str) -> BaseUrl | None:
    """The allowed Base URL for a stored key, or None if it is no longer allowed
    (an events region, a Reporting region or an operator's extra entry)."""
    return next(
        (b for b in [*all_base_urls(), *REPORTING_REGIONS] if b.key == key), None
    )


def choices() -> list[tuple[str, str]]:
    """(key, label) pairs for the form's dropdown."""
    return [(b.key, b.choice_label) for b in all_base_urls()]


def reporting_choices() -> list[tuple[str, str]]:
    """(key, label) pairs for the Reporting form's Region: the KMSAT hosts,
    then the operator's extra entries (the local sandbox serves both APIs)."""
    extra = [parse_extra(e) for e in settings.KNOWBE4_EXTRA_BASE_URLS if e]
    return [(b.key, b.choice_label) for b in [*REPORTING_REGIONS, *extra]]

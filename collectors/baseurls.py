"""The Base URL allow-list: the seed's regions plus the operator's extra entries.

A source stores a key of this list, never a URL typed by a user, so that the
collector can only ever talk to hosts the operator has approved.
"""

from __future__ import annotations

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


def parse_extra(entry: str) -> BaseUrl:
    """Parse one `Label|http(s)://host[:port]` entry of KNOWBE4_EXTRA_BASE_URLS."""
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
            f"KNOWBE4_EXTRA_BASE_URLS entry {entry!r} is not 'Label|http(s)://host[:port]'."
        )
    if parts.path or parts.query or parts.fragment:
        raise ImproperlyConfigured(
            f"KNOWBE4_EXTRA_BASE_URLS entry {entry!r} must not have a path."
        )
    return BaseUrl(f"x-{slugify(label)}", label, url)


def all_base_urls() -> list[BaseUrl]:
    """Every allowed Base URL, the seed's regions first."""
    return [*REGIONS, *(parse_extra(e) for e in settings.KNOWBE4_EXTRA_BASE_URLS if e)]


def get(key: str) -> BaseUrl | None:
    """The allowed Base URL for a stored key, or None if it is no longer allowed."""
    return next((b for b in all_base_urls() if b.key == key), None)


def choices() -> list[tuple[str, str]]:
    """(key, label) pairs for the form's dropdown."""
    return [(b.key, b.choice_label) for b in all_base_urls()]

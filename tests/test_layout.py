"""Page-wide layout on the server side: the skip link, the collapsible menu's
markup, thousands separators in counts, and no inline script or style
attribute (the coming Content Security Policy refuses both)."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from collectors import status
from collectors.choices import HealthEventName, Severity
from collectors.models import HealthEvent
from tests.cast import make_collector

pytestmark = pytest.mark.django_db


def test_it_offers_a_skip_link_to_the_main_content(admin_client):
    body = admin_client.get(reverse("collection")).content.decode()
    assert body.index('class="skip-link" href="#main"') < body.index('class="topbar"')
    assert '<main class="page" id="main" tabindex="-1">' in body


def test_it_puts_the_menu_behind_a_button_that_controls_it(admin_client):
    body = admin_client.get(reverse("messages")).content.decode()
    assert 'aria-controls="topnav" aria-expanded="false"' in body
    assert 'id="topnav"' in body
    assert "js/layout.js" in body


def test_it_separates_thousands_in_counts(admin_client, source):
    HealthEvent.objects.create(
        source=source,
        event_name=HealthEventName.THIRD_PARTY_GENERIC,
        error_type="ThirdPartyGeneric",
        severity=Severity.WARNING,
        message="Slow",
        count=12345,
    )
    event = HealthEvent.objects.get()
    for url in (
        reverse("health-events"),
        reverse("health-event-detail", args=[event.pk]),
        reverse("source-health", args=[source.pk]),
    ):
        body = admin_client.get(url).content.decode()
        assert "12,345" in body, url
    assert status.health_tooltip(1200, 1) == "1,200 errors, 1 warning"


def test_it_separates_thousands_on_the_collection_page(admin_client, settings):
    for i in range(3):
        make_collector(f"C{i}")
    body = admin_client.get(reverse("collection")).content.decode()
    assert "3 collectors" in body
    assert status.health_tooltip(0, 1000) == "0 errors, 1,000 warnings"


@pytest.mark.parametrize(
    "name",
    ["collection", "messages", "overview", "fields", "health-events", "preferences"],
)
def test_it_sends_no_inline_script_or_style(admin_client, source, name):
    body = admin_client.get(reverse(name)).content.decode()
    assert not re.search(r"<script(?![^>]*\bsrc=)", body), name
    assert not re.search(r"\sstyle=", body), name

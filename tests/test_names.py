"""Names and text from events: Unicode compatibility forms count as the same
name, and bidi control characters are shown, never obeyed."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from django.template import Context, Template
from django.urls import reverse

from collectors import names
from collectors.choices import ErrorType, HealthEventName, Severity, SourceState
from collectors.models import HealthEvent, HostedCollector, LogMessage, Source
from tests.cast import make_collector, make_source

pytestmark = pytest.mark.django_db

RLO = "\u202e"
SHOWN = "⟨U+202E⟩"


def form_data(**overrides) -> dict:
    data = {
        "name": "KnowBe4 Prod",
        "description": "",
        "category": "Security/KnowBe4",
        "base_url_key": "us",
        "api_key": "new-key-0123456789-LMNO",
        "initial_lookback_days": "7",
        "rescan_days": "1",
    }
    return {**data, **overrides}


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Battery", "Ｂａｔｔｅｒｙ"),
        ("ﬁnance", "finance"),
        ("Straße", "STRASSE"),
        ("Ⅻ events", "xii EVENTS"),
        ("café", "cafe\u0301"),
    ],
)
def test_it_counts_compatibility_forms_as_the_same_name(a, b):
    assert names.name_key(a) == names.name_key(b)


def test_it_keeps_different_names_apart():
    assert names.name_key("Battery") != names.name_key("Batteries")
    assert names.name_key("東京") != names.name_key("京都")


def test_it_refuses_a_collector_named_like_another_in_fullwidth(admin_client):
    make_collector("Battery")
    response = admin_client.post(reverse("collector-add"), {"name": "Ｂａｔｔｅｒｙ"})
    assert response.status_code == 200
    assert "already exists" in " ".join(response.context["form"].errors["name"])
    assert HostedCollector.objects.count() == 1


def test_it_lets_a_collector_keep_its_own_name_in_another_form(admin_client):
    collector = make_collector("Battery")
    url = reverse("collector-edit", args=[collector.pk])
    assert admin_client.post(url, {"name": "Ｂａｔｔｅｒｙ"}).status_code == 302
    collector.refresh_from_db()
    assert collector.name == "Ｂａｔｔｅｒｙ"


def test_it_refuses_a_source_named_like_a_sibling_in_compatibility_form(
    admin_client, collector
):
    make_source(collector, name="Finance events")
    url = reverse("source-add", args=[collector.pk])
    response = admin_client.post(url, form_data(name="ﬁnance ＥＶＥＮＴＳ"))
    assert response.status_code == 200
    assert "already has a source named" in " ".join(
        response.context["form"].errors["name"]
    )
    assert Source.objects.count() == 1
    other = make_collector("Other")
    url = reverse("source-add", args=[other.pk])
    assert (
        admin_client.post(url, form_data(name="ﬁnance ＥＶＥＮＴＳ")).status_code == 302
    )


@pytest.mark.parametrize(
    "name", [f"evil{RLO}txt.exe", "a\u2066b\u2069", "mark\u200fhere", "x\u061cy"]
)
def test_it_refuses_bidi_controls_in_names(admin_client, collector, name):
    response = admin_client.post(reverse("collector-add"), {"name": name})
    assert "direction control characters" in " ".join(
        response.context["form"].errors["name"]
    )
    url = reverse("source-add", args=[collector.pk])
    response = admin_client.post(url, form_data(name=name))
    assert "direction control characters" in " ".join(
        response.context["form"].errors["name"]
    )
    assert not Source.objects.exists()


def test_it_shows_each_bidi_control_by_its_code_point():
    text = "".join(f"{c}." for c in names.BIDI_CONTROLS)
    shown = names.show_bidi(text)
    assert not any(c in shown for c in names.BIDI_CONTROLS)
    assert shown.startswith("⟨U+061C⟩.⟨U+200E⟩.⟨U+200F⟩.⟨U+202A⟩.")
    assert shown.endswith("⟨U+2068⟩.⟨U+2069⟩.")


def test_it_escapes_as_usual_around_the_visible_marks():
    template = Template("{% load collectors_tags %}{{ text|show_bidi }}")
    html = template.render(Context({"text": f"<b>{RLO}x</b>"}))
    assert html == f"&lt;b&gt;{SHOWN}x&lt;/b&gt;"


@pytest.fixture
def hostile(collector):
    """A source whose events and health events carry a right-to-left override."""
    source = make_source(collector, state=SourceState.ERROR)
    HealthEvent.objects.create(
        source=source,
        event_name=HealthEventName.THIRD_PARTY_CONFIG,
        error_type=ErrorType.THIRD_PARTY_CONFIG,
        severity=Severity.ERROR,
        message=f"KnowBe4 answered: user {RLO}moc.evil@nimda",
        suggested_fix=f"Check {RLO}this",
    )
    source.transitions.create(
        from_state=SourceState.COLLECTING,
        to_state=SourceState.ERROR,
        reason=f"refused {RLO}key",
    )
    LogMessage.objects.create(
        source=source,
        event_id="evt-1",
        raw=json.dumps({"id": "evt-1", "description": f"click {RLO}here"}),
        message_time=datetime(2026, 11, 20, tzinfo=UTC),
        source_name=source.name,
        source_category=source.category,
        collector_name=collector.name,
        event_type=f"phish{RLO}click",
        user_email=f"{RLO}moc.evil@nimda",
    )
    return source


@pytest.mark.parametrize(
    "page",
    ["messages", "health-events", "source-health", "source-detail", "event-detail"],
)
def test_it_makes_bidi_controls_visible_on_pages_showing_event_text(
    admin_client, hostile, page
):
    url = {
        "messages": reverse("messages"),
        "health-events": reverse("health-events"),
        "source-health": reverse("source-health", args=[hostile.pk]),
        "source-detail": reverse("source-detail", args=[hostile.pk]),
        "event-detail": reverse(
            "health-event-detail", args=[hostile.health_events.get().pk]
        ),
    }[page]
    html = admin_client.get(url).content.decode()
    assert RLO not in html
    assert html.count(SHOWN) >= 1


def test_it_makes_bidi_controls_visible_in_admin_lists(admin_client, hostile):
    for name in ("logmessage", "statetransition"):
        url = reverse(f"admin:collectors_{name}_changelist")
        html = admin_client.get(url).content.decode()
        assert RLO not in html, name
        assert SHOWN in html, name
    url = reverse("admin:collectors_logmessage_changelist")
    assert admin_client.get(url, {"o": "3"}).status_code == 200  # still sortable


def test_it_makes_bidi_controls_visible_in_the_overview_chart(admin_client, hostile):
    html = admin_client.get(
        reverse("overview"), {"since": "2026-11-01", "until": "2026-11-30"}
    ).content.decode()
    at = html.find(RLO)
    assert at == -1, html[max(0, at - 200) : at + 50]

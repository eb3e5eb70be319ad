"""The KnowBe4 KMSAT Reporting source type: its tile, its form (Region, API
Key, Data types, Poll interval, Advanced) and a source added through it
collecting from the sandbox into Messages."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from collectors.engine import run
from collectors.models import LogMessage, Source
from tests.sandbox_support import REPORTING_KEY, running_sandbox

KEY = "kmsat-reporting-key-0123456789abcdef"
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def form_data(**overrides) -> dict:
    data = {
        "name": "KMSAT Prod",
        "description": "Phishing tests",
        "category": "Security/KMSAT",
        "base_url_key": "kmsat-us",
        "api_key": KEY,
        "data_types": ["phishing", "users"],
        "poll_hours": "12",
        "reporting_licensed_users": "250",
        "recipients_days": "7",
        "field_key": ["team"],
        "field_value": ["secops"],
    }
    data.update(overrides)
    return data


def add_url(collector) -> str:
    return f"/collectors/{collector.pk}/sources/new/kmsat-reporting/"


def test_it_offers_the_reporting_tile_next_to_knowbe4(admin_client, collector):
    page = admin_client.get(f"/collectors/{collector.pk}/sources/new/").content.decode()
    assert "KnowBe4 KMSAT Reporting" in page and ">KnowBe4<" in page
    assert add_url(collector) in page


def test_it_shows_the_form_in_order_with_its_defaults(admin_client, collector):
    resp = admin_client.get(add_url(collector))
    page = resp.content.decode()
    order = [
        'id="id_name"',
        'id="id_description"',
        'id="id_category"',
        'id="fields-section"',
        'id="id_base_url_key"',
        'id="id_api_key"',
        'id="id_data_types_0"',
        'id="id_poll_hours"',
        "<summary>Advanced",
        'id="id_reporting_licensed_users"',
        'id="id_recipients_days"',
    ]
    positions = [page.index(label) for label in order]
    assert positions == sorted(positions)
    for host in ("us", "eu", "ca", "uk", "de"):
        assert f"https://{host}.api.knowbe4.com" in page
    assert "api.events.knowbe4.com" not in page
    form = resp.context["form"]
    assert form["data_types"].value() == ["phishing"]
    assert form["poll_hours"].value() == 24
    assert form["recipients_days"].value() == 14
    assert "Reporting API key, not the User Event API key" in page


def test_it_saves_a_reporting_source_with_its_settings(admin_client, collector):
    resp = admin_client.post(add_url(collector), form_data())
    assert resp.status_code == 302
    source = Source.objects.get()
    assert source.kind == "reporting" and source.state == "pending"
    assert source.base_url.url == "https://us.api.knowbe4.com"
    assert source.get_api_key() == KEY and KEY not in source.api_key_encrypted
    assert source.reporting == {
        "data_types": ["phishing", "users"],
        "poll_hours": 12,
        "licensed_users": 250,
        "recipients_days": 7,
    }
    assert dict(source.fields.values_list("key", "value")) == {"team": "secops"}
    edit = admin_client.get(f"/sources/{source.pk}/edit/")
    page = edit.content.decode()
    assert "KnowBe4 KMSAT Reporting" in page and KEY not in page
    assert edit.context["form"]["poll_hours"].value() == 12
    resp = admin_client.post(
        f"/sources/{source.pk}/edit/", form_data(api_key="", poll_hours="6")
    )
    assert resp.status_code == 302
    source.refresh_from_db()
    assert source.reporting["poll_hours"] == 6 and source.get_api_key() == KEY


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"poll_hours": "0"}, "poll_hours"),
        ({"poll_hours": "25"}, "poll_hours"),
        ({"poll_hours": "x"}, "poll_hours"),
        ({"data_types": []}, "data_types"),
        ({"data_types": ["phishing", "nope"]}, "data_types"),
        ({"base_url_key": "us"}, "base_url_key"),  # an Events API host
        ({"base_url_key": "https://evil.example"}, "base_url_key"),
        ({"recipients_days": "-1"}, "recipients_days"),
        ({"reporting_licensed_users": "-5"}, "reporting_licensed_users"),
        ({"api_key": ""}, "api_key"),
        ({"api_key": "short"}, "api_key"),
    ],
)
def test_it_refuses_bad_input_and_saves_nothing(
    admin_client, collector, overrides, field
):
    resp = admin_client.post(add_url(collector), form_data(**overrides))
    assert resp.status_code == 200
    assert field in resp.context["form"].errors
    assert KEY not in resp.content.decode()
    assert not Source.objects.exists()


def test_it_lets_only_collector_managers_add_one(role_client, collector):
    viewer = role_client("Viewer")
    assert viewer.get(add_url(collector)).status_code == 403
    assert viewer.post(add_url(collector), form_data()).status_code == 403
    assert not Source.objects.exists()


def test_it_collects_a_source_added_through_the_form(
    admin_client, collector, settings, time_machine
):
    time_machine.move_to(NOW, tick=False)
    settings.KNOWBE4_RATE_LIMIT = False
    with running_sandbox(rate_limit=False, reporting={"origin": NOW.timestamp()}) as s:
        settings.KNOWBE4_EXTRA_BASE_URLS = [f"Sandbox|{s.url}"]
        resp = admin_client.post(
            add_url(collector),
            form_data(base_url_key="x-sandbox", api_key=REPORTING_KEY),
        )
        assert resp.status_code == 302
        source = Source.objects.get()
        assert run(source.pk).outcome == "caught_up"
    page = admin_client.get("/messages/", {"data_type": "phishing_recipient"})
    rows = page.context["page"].rows
    assert rows and all(m.source_name == "KMSAT Prod" for m in rows)
    assert all(m.fields == {"team": "secops"} or m.fields == {} for m in rows)
    assert LogMessage.objects.filter(source=source, data_type="user").count() == 60

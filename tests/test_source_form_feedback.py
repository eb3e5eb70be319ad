"""The source form's server side of its feedback: an error summary that links
to each problem without repeating messages, the reason a typed API key must be
entered again, and the naming rules handed to the browser."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse

from collectors import fieldnames
from tests.cast import make_collector, make_source

pytestmark = pytest.mark.django_db


def post(client, url, **data):
    base = {
        "name": "KB4",
        "base_url_key": "us",
        "api_key": "abcdefgh-123456",
        "initial_lookback_days": 7,
        "rescan_days": 1,
    }
    response = client.post(url, {**base, **data})
    assert response.status_code == 200
    return response


def test_it_shows_each_message_once_and_links_to_it(admin_client):
    url = reverse("source-add", args=[make_collector().pk])
    keys = [f"k{i}" for i in range(11)]
    response = post(admin_client, url, name="", field_key=keys, field_value=["v"] * 11)
    html = response.content.decode()
    form = response.context["form"]
    assert html.count(form.fields_error) == 1
    assert html.count("This field is required.") == 1
    assert [label for label, _ in form.error_summary()] == ["Name", "Fields"]
    assert 'href="#id_name"' in html and 'href="#add-field"' in html
    assert "Check the Fields rows" not in html


def test_it_names_the_bad_row_in_the_summary(admin_client):
    url = reverse("source-add", args=[make_collector().pk])
    response = post(
        admin_client, url, field_key=["ok", "bad key!"], field_value=["1", "2"]
    )
    html = re.sub(r"<script .*?</script>", "", response.content.decode(), flags=re.S)
    assert response.context["form"].error_summary() == [
        ("Fields, row 2", "field-key-2")
    ]
    assert 'id="field-key-2"' in html
    assert 'aria-describedby="field-key-2-error"' in html
    assert html.count(fieldnames.MESSAGES["chars"]) == 1


def test_it_says_why_the_new_key_must_be_entered_again(admin_client):
    collector = make_collector()
    response = post(admin_client, reverse("source-add", args=[collector.pk]), name="")
    html = response.content.decode()
    assert "Enter the API key again" in html
    assert "abcdefgh-123456" not in html
    source = make_source(collector, "Existing")
    response = post(admin_client, reverse("source-edit", args=[source.pk]), name="")
    assert (
        f"ending in …{source.api_key_hint}" in response.context["form"].api_key_reentry
    )
    response = post(
        admin_client, reverse("source-edit", args=[source.pk]), name="", api_key=""
    )
    assert response.context["form"].api_key_reentry == ""


def test_it_hands_the_naming_rules_to_the_browser(admin_client):
    html = admin_client.get(
        reverse("source-add", args=[make_collector().pk])
    ).content.decode()
    raw = re.search(
        r'<script id="key-rules" type="application/json">(.*?)</script>', html
    )
    rules = json.loads(raw.group(1))
    assert rules["max"] == fieldnames.MAX_KEY_LENGTH
    assert "_sourcecategory" in rules["reserved"]
    assert rules["messages"]["chars"] == fieldnames.key_error("bad key!")
    assert '<button type="button" id="add-field"' in html

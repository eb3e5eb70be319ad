"""Adding, editing and deleting a KnowBe4 API source through its form."""

from __future__ import annotations

import pytest
from django.urls import reverse

from collectors.choices import SourceState
from collectors.models import FieldDefinition, Source, StateTransition
from tests.cast import (
    API_KEY,
    SOURCE_FORM_KEY,
    make_collector,
    make_field,
    make_source,
    source_form_data,
)

pytestmark = pytest.mark.django_db

NEW_KEY = SOURCE_FORM_KEY


def test_it_shows_the_knowbe4_tile(admin_client, collector):
    response = admin_client.get(reverse("source-types", args=[collector.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "img/knowbe4-icon.svg" in html
    assert reverse("source-add", args=[collector.pk]) in html


def test_it_shows_the_form_in_the_seed_order(admin_client, collector):
    response = admin_client.get(reverse("source-add", args=[collector.pk]))
    html = response.content.decode()
    html = html[html.index('id="source-form"') :]
    labels = ["Name", "Description", "Source Category", "Fields", "Base URL", "API Key"]
    positions = [html.index(f">{label}") for label in labels]
    assert positions == sorted(positions)
    assert "+Add Field" in html
    assert "_sourceCategory" in html
    assert 'type="password"' in html
    assert "https://api-eu.events.knowbe4.com" in html
    assert "Save" in html


def test_it_embeds_the_enabled_schema_for_the_live_check(admin_client, collector):
    make_field("department")
    make_field("retired_field", enabled=False)
    response = admin_client.get(reverse("source-add", args=[collector.pk]))
    html = response.content.decode()
    assert '<script id="schema-names" type="application/json">["department"]' in html


def test_it_creates_a_pending_source(admin_client, collector):
    url = reverse("source-add", args=[collector.pk])
    response = admin_client.post(
        url, source_form_data(api_key=f"  {NEW_KEY}  "), follow=True
    )
    assert response.redirect_chain[-1][0] == reverse("collection")
    source = Source.objects.get()
    assert source.state == SourceState.PENDING
    assert source.collector == collector
    assert source.base_url_key == "us"
    assert source.get_api_key() == NEW_KEY
    assert source.api_key_hint == "LMNO"
    assert NEW_KEY not in source.api_key_encrypted
    assert "Source “KnowBe4 Prod” added" in response.content.decode()


def test_it_saves_fields_and_warns_about_dropped_ones(admin_client, collector):
    make_field("department")
    url = reverse("source-add", args=[collector.pk])
    data = source_form_data(
        field_key=["Department", "team"], field_value=["IT", "blue"]
    )
    response = admin_client.post(url, data, follow=True)
    source = Source.objects.get()
    assert dict(source.fields.values_list("key", "value")) == {
        "Department": "IT",
        "team": "blue",
    }
    assert not FieldDefinition.objects.filter(name="team").exists()
    assert "will be dropped from collected messages: team." in (
        response.content.decode()
    )


def test_it_adds_missing_fields_to_the_schema_when_ticked(admin_client, collector):
    make_field("region", enabled=False)
    url = reverse("source-add", args=[collector.pk])
    data = source_form_data(
        field_key=["team", "REGION"], field_value=["blue", "eu"], auto_add_fields="on"
    )
    response = admin_client.post(url, data, follow=True)
    assert "will be dropped" not in response.content.decode()
    schema = dict(FieldDefinition.objects.values_list("name", "enabled"))
    assert schema == {"team": True, "region": True}


def test_it_ignores_blank_field_rows(admin_client, collector):
    url = reverse("source-add", args=[collector.pk])
    admin_client.post(url, source_form_data(field_key=["", "a"], field_value=["", "1"]))
    assert list(Source.objects.get().fields.values_list("key", flat=True)) == ["a"]


def test_it_offers_operator_base_urls(admin_client, collector, settings):
    settings.KNOWBE4_EXTRA_BASE_URLS = ["Sandbox|http://127.0.0.1:8025"]
    url = reverse("source-add", args=[collector.pk])
    assert "http://127.0.0.1:8025" in admin_client.get(url).content.decode()
    admin_client.post(url, source_form_data(base_url_key="x-sandbox"))
    assert Source.objects.get().base_url.url == "http://127.0.0.1:8025"


def test_it_edits_with_a_blank_key_keeping_the_old_one(admin_client, source):
    url = reverse("source-edit", args=[source.pk])
    html = admin_client.get(url).content.decode()
    assert "Leave blank to keep the current key (ending in …wxyz)" in html
    assert "data collected from now on" in html
    assert API_KEY not in html
    response = admin_client.post(url, source_form_data(name="Renamed", api_key=""))
    assert response.status_code == 302
    source.refresh_from_db()
    assert source.name == "Renamed"
    assert source.get_api_key() == API_KEY
    assert source.config_version == 2


def test_it_requires_the_key_again_when_the_base_url_changes(admin_client, source):
    url = reverse("source-edit", args=[source.pk])
    response = admin_client.post(url, source_form_data(base_url_key="eu", api_key=""))
    assert response.status_code == 200
    errors = response.context["form"].errors["api_key"]
    assert errors == [
        "Enter the API key again: the Base URL changed, and the stored key is only "
        "ever sent to the Base URL it was entered for."
    ]
    assert "Enter the API key again" in response.content.decode()
    source.refresh_from_db()
    assert (source.base_url_key, source.name, source.config_version) == (
        "us",
        "KnowBe4 Events",
        1,
    )
    assert source.get_api_key() == API_KEY
    response = admin_client.post(url, source_form_data(base_url_key="eu"))
    assert response.status_code == 302
    source.refresh_from_db()
    assert (source.base_url_key, source.get_api_key()) == ("eu", NEW_KEY)


def test_it_says_on_the_key_field_why_a_new_base_url_needs_it(admin_client, source):
    html = admin_client.get(reverse("source-edit", args=[source.pk])).content.decode()
    assert "Changing the Base URL requires entering the key again." in html


def test_it_replaces_the_key_when_one_is_given(admin_client, source):
    admin_client.post(reverse("source-edit", args=[source.pk]), source_form_data())
    source.refresh_from_db()
    assert source.get_api_key() == NEW_KEY
    assert source.api_key_hint == "LMNO"


def test_it_shows_existing_fields_when_editing(admin_client, collector):
    make_field("dept")
    source = make_source(collector, fields={"dept": "Finance"})
    html = admin_client.get(reverse("source-edit", args=[source.pk])).content.decode()
    assert 'value="dept"' in html
    assert 'value="Finance"' in html


def test_it_replaces_fields_on_edit(admin_client, collector):
    source = make_source(collector, fields={"a": "1", "b": "2"})
    data = source_form_data(field_key=["B", "c"], field_value=["20", "3"])
    admin_client.post(reverse("source-edit", args=[source.pk]), data)
    assert dict(source.fields.values_list("key", "value")) == {"B": "20", "c": "3"}


def test_it_takes_an_error_source_back_to_pending_on_edit(admin_client, collector):
    source = make_source(
        collector, state=SourceState.ERROR, error_type="ThirdPartyConfig"
    )
    admin_client.post(reverse("source-edit", args=[source.pk]), source_form_data())
    source.refresh_from_db()
    assert source.state == SourceState.PENDING
    assert source.config_version == 2
    assert StateTransition.objects.filter(
        source=source, to_state=SourceState.PENDING
    ).exists()


def test_it_keeps_its_own_name_on_edit_but_not_a_sibling(admin_client, collector):
    make_source(collector, name="Other")
    source = make_source(collector, name="Mine")
    url = reverse("source-edit", args=[source.pk])
    assert admin_client.post(url, source_form_data(name="MINE")).status_code == 302
    response = admin_client.post(url, source_form_data(name="other"))
    assert response.status_code == 200
    assert "already has a source named" in str(response.context["form"].errors["name"])


def test_it_allows_the_same_name_in_another_collector(admin_client, source):
    other = make_collector("Staging")
    url = reverse("source-add", args=[other.pk])
    response = admin_client.post(url, source_form_data(name=source.name))
    assert response.status_code == 302
    assert Source.objects.filter(name=source.name).count() == 2


def test_it_asks_before_deleting_a_source(admin_client, source):
    url = reverse("source-delete", args=[source.pk])
    html = admin_client.get(url).content.decode()
    assert "Delete source “KnowBe4 Events”?" in html
    assert "Stopping" in html
    source.refresh_from_db()
    assert source.state == SourceState.PENDING


def test_it_moves_a_deleted_source_to_stopping(admin_client, source):
    response = admin_client.post(reverse("source-delete", args=[source.pk]))
    assert response.status_code == 302
    source.refresh_from_db()
    assert source.state == SourceState.STOPPING


def test_it_refuses_to_edit_a_stopping_source(admin_client, source):
    source.request_stop()
    response = admin_client.post(
        reverse("source-edit", args=[source.pk]), source_form_data()
    )
    assert response.status_code == 302
    source.refresh_from_db()
    assert source.name == "KnowBe4 Events"


def test_it_404s_for_an_unknown_collector_or_source(admin_client):
    assert admin_client.get(reverse("source-add", args=[999])).status_code == 404
    assert admin_client.get(reverse("source-edit", args=[999])).status_code == 404
    assert admin_client.post(reverse("source-delete", args=[999])).status_code == 404


@pytest.mark.parametrize("name", ["source-add", "source-types", "collector-edit"])
def test_it_refuses_other_methods(admin_client, collector, name):
    response = admin_client.put(reverse(name, args=[collector.pk]))
    assert response.status_code == 405

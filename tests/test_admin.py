"""Django admin: every model registered, searchable; engine records read-only;
the Source admin shows only the key's hint."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone

from collectors import models
from collectors.models import HealthEvent, LogMessage, Source
from tests.cast import API_KEY, make_field, make_source

pytestmark = pytest.mark.django_db

READ_ONLY = [
    models.HealthEvent,
    models.LogMessage,
    models.StateTransition,
    models.ApiKeyUsage,
]


def admin_url(model, action: str, *args) -> str:
    meta = model._meta
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_{action}", args=args)


def test_it_registers_every_model():
    app_models = {
        m
        for m in vars(models).values()
        if isinstance(m, type) and m.__module__ == models.__name__
    }
    app_models = {m for m in app_models if issubclass(m, models.models.Model)}
    app_models.discard(models.SourceField)  # edited inline on its source
    assert app_models <= set(admin.site._registry)


@pytest.mark.parametrize("model", list(admin.site._registry))
def test_it_lists_and_searches_each_model(admin_client, source, model):
    response = admin_client.get(admin_url(model, "changelist"), {"q": "kb4"})
    assert response.status_code == 200


def test_it_shows_the_hint_but_not_the_key(admin_client, source):
    html = admin_client.get(admin_url(Source, "change", source.pk)).content.decode()
    assert "wxyz" in html
    assert "api_key_encrypted" not in html
    assert source.api_key_encrypted not in html
    assert API_KEY not in html


def test_it_lists_sources_in_few_queries(
    admin_client, collector, django_assert_max_num_queries
):
    from tests.cast import make_source

    for i in range(20):
        make_source(collector, f"S{i}")
    with django_assert_max_num_queries(12):
        assert admin_client.get(admin_url(Source, "changelist")).status_code == 200


@pytest.mark.parametrize("model", READ_ONLY)
def test_it_makes_engine_records_read_only(rf, admin_user, model):
    model_admin = admin.site._registry[model]
    request = rf.get("/")
    request.user = admin_user
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)


def test_it_refuses_to_change_a_health_event(admin_client, source):
    event = HealthEvent.objects.create(
        source=source,
        event_name="ThirdPartyGenericError",
        error_type="ThirdPartyGeneric",
        severity="warning",
        message="slow",
    )
    url = admin_url(HealthEvent, "change", event.pk)
    assert admin_client.get(url).status_code == 200
    admin_client.post(url, {"message": "edited"})
    event.refresh_from_db()
    assert event.message == "slow"
    assert (
        admin_client.post(admin_url(HealthEvent, "delete", event.pk)).status_code == 403
    )


def test_it_shows_a_log_message(admin_client, source):
    message = LogMessage.objects.create(
        source=source,
        event_id="e-42",
        raw='{"id": "e-42"}',
        message_time=timezone.now(),
        source_name=source.name,
        collector_name=source.collector.name,
    )
    html = admin_client.get(
        admin_url(LogMessage, "change", message.pk)
    ).content.decode()
    assert "e-42" in html


def test_it_shows_the_base_url_but_never_changes_it_in_admin(admin_client, source):
    """Admin never takes the key, so it cannot change the Base URL either (the
    stored key would go to the new host): the source form does both."""
    url = admin_url(Source, "change", source.pk)
    html = admin_client.get(url).content.decode()
    assert "US Server - https://api.events.knowbe4.com" in html
    assert 'name="base_url_key"' not in html
    data = {
        "collector": source.collector.pk,
        "name": source.name,
        "description": "",
        "category": "",
        "initial_lookback_days": 7,
        "rescan_days": 1,
        "fields-TOTAL_FORMS": 0,
        "fields-INITIAL_FORMS": 0,
    }
    for base_url in ("https://evil.example", "eu"):
        response = admin_client.post(url, {**data, "base_url_key": base_url})
        assert response.status_code == 302
        source.refresh_from_db()
        assert source.base_url_key == "us"
    assert source.config_version == 3


def test_it_applies_the_field_naming_rules_in_admin(admin_client):
    from collectors.models import FieldDefinition

    for bad in ("_raw", "a..b", "1abc"):
        response = admin_client.post(
            reverse("admin:collectors_fielddefinition_add"),
            {"name": bad, "enabled": "on"},
        )
        assert response.status_code == 200
        assert response.context["adminform"].form.errors["name"]
    assert not FieldDefinition.objects.exists()


def test_it_refuses_deleting_a_field_in_use_in_admin(admin_client, collector):
    field = make_field("team")
    make_source(collector, fields={"Team": "secops"})
    url = reverse("admin:collectors_fielddefinition_delete", args=[field.pk])
    assert admin_client.post(url, {"post": "yes"}).status_code == 403
    assert type(field).objects.filter(pk=field.pk).exists()


def test_it_offers_no_hard_delete_of_a_source_in_admin(admin_client, source):
    url = reverse("admin:collectors_source_delete", args=[source.pk])
    assert admin_client.post(url, {"post": "yes"}).status_code == 403
    source.refresh_from_db()

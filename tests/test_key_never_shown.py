"""The API key never appears in a page, an admin page or the database in clear."""

from __future__ import annotations

import re

import pytest
from django.contrib import admin
from django.db import connection
from django.urls import URLPattern, URLResolver, reverse
from django.urls.converters import IntConverter
from django.urls.resolvers import RegexPattern
from django.utils import timezone

from collectors import urls as app_urls
from collectors.models import (
    ApiKeyUsage,
    HealthEvent,
    LogMessage,
    StateTransition,
)
from tests.cast import make_collector, make_field, make_source

pytestmark = pytest.mark.django_db

SECRET = "Sup3rSecret-KnowBe4-Key-7f3a9c1e5b"


@pytest.fixture
def world():
    """One of every model, around a source holding SECRET."""
    collector = make_collector()
    make_field("dept")
    source = make_source(collector, api_key=SECRET, fields={"dept": "IT"})
    source.transition("started", "Collection task created")
    event = HealthEvent.objects.create(
        source=source,
        event_name="ThirdPartyConfigError",
        error_type="ThirdPartyConfig",
        severity="error",
        error_code="401",
        message="KnowBe4 refused the API key",
    )
    message = LogMessage.objects.create(
        source=source,
        event_id="e-1",
        raw='{"id": "e-1"}',
        message_time=timezone.now(),
        source_name=source.name,
        collector_name=collector.name,
    )
    ApiKeyUsage.objects.create(key_hash="f" * 64)
    return {"collector": collector, "source": source, "event": event, "msg": message}


def app_patterns(patterns) -> list[URLPattern]:
    """Every named URL pattern the app defines, includes followed."""
    found = []
    for p in patterns:
        if isinstance(p, URLResolver):
            found += app_patterns(p.url_patterns)
        elif isinstance(p, URLPattern) and p.name:
            found.append(p)
    return found


def kwarg_sets(pattern: URLPattern, ids: set[int]) -> list[dict]:
    """Arguments to reverse a pattern with: every id for an int, every
    alternative of a regex group, a plain word otherwise."""
    if isinstance(pattern.pattern, RegexPattern):
        groups = re.findall(r"\(\?P<(\w+)>([^)]*)\)", str(pattern.pattern))
        sets: list[dict] = [{}]
        for name, body in groups:
            values = body.split("|") if re.fullmatch(r"[\w|]+", body) else ["1"]
            sets = [{**s, name: v} for s in sets for v in values]
        return sets
    converters = pattern.pattern.converters
    if not converters:
        return [{}]
    sets = [{}]
    for name, conv in converters.items():
        values = list(ids) if isinstance(conv, IntConverter) else ["x"]
        sets = [{**s, name: v} for s in sets for v in values]
    return sets


def assert_clean(response, world) -> None:
    assert response.status_code < 500, response.request["PATH_INFO"]
    raw = (
        b"".join(response.streaming_content) if response.streaming else response.content
    )
    body = raw.decode("utf-8", "replace")
    assert SECRET not in body, response.request["PATH_INFO"]
    assert world["source"].api_key_encrypted not in body


def test_it_never_shows_the_key_on_an_app_page(admin_client, world):
    ids = {obj.pk for obj in world.values()}
    checked = 0
    for pattern in app_patterns(app_urls.urlpatterns):
        for kwargs in kwarg_sets(pattern, ids):
            url = reverse(pattern.name, kwargs=kwargs)
            assert_clean(admin_client.get(url), world)
            checked += 1
    assert checked > 15


def test_it_never_shows_the_key_in_admin(admin_client, world):
    checked = 0
    for model, model_admin in admin.site._registry.items():
        info = (model._meta.app_label, model._meta.model_name)
        assert_clean(
            admin_client.get(reverse("admin:{}_{}_changelist".format(*info))), world
        )
        assert_clean(admin_client.get(reverse("admin:{}_{}_add".format(*info))), world)
        for obj in model._default_manager.all()[:3]:
            url = reverse("admin:{}_{}_change".format(*info), args=[obj.pk])
            assert_clean(admin_client.get(url), world)
            checked += 1
        del model_admin
    assert checked >= 8
    assert_clean(admin_client.get(reverse("admin:index")), world)


def test_it_never_echoes_the_key_after_a_refused_save(admin_client, world):
    source = world["source"]
    url = reverse("source-edit", args=[source.pk])
    response = admin_client.post(url, {"name": "", "api_key": SECRET + "x"})
    assert response.status_code == 200
    assert SECRET not in response.content.decode()
    url = reverse("source-add", args=[source.collector.pk])
    response = admin_client.post(url, {"name": "", "api_key": SECRET})
    assert SECRET not in response.content.decode()


def test_it_stores_no_key_in_clear(world):
    """Every column of every table of the app, read raw from the database."""
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608
            for row in cursor.fetchall():
                assert not any(SECRET in str(cell) for cell in row), table
    source = world["source"]
    assert source.get_api_key() == SECRET
    assert source.api_key_hint == SECRET[-4:]


def test_it_records_models_the_admin_can_reach(world):
    assert StateTransition.objects.exists()
    assert {m.__name__ for m in admin.site._registry} >= {
        "HostedCollector",
        "Source",
        "FieldDefinition",
        "StateTransition",
        "HealthEvent",
        "LogMessage",
        "ApiKeyUsage",
    }

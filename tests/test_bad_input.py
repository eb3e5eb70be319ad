"""Every rule of the source and collector forms: the bad value gets a message on
its field and nothing is saved; malformed POSTs never produce a 500."""

from __future__ import annotations

import pytest
from django.urls import reverse

from collectors.choices import MAX_SCHEMA_FIELDS
from collectors.models import FieldDefinition, HostedCollector, Source, SourceField
from tests.cast import make_field, make_source, source_form_data

pytestmark = pytest.mark.django_db


def post_add(client, collector, **overrides):
    return client.post(
        reverse("source-add", args=[collector.pk]), source_form_data(**overrides)
    )


def field_errors(response, name: str) -> str:
    return " ".join(response.context["form"].errors.get(name, []))


def assert_nothing_saved() -> None:
    assert not Source.objects.exists()
    assert not SourceField.objects.exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "", "This field is required."),
        ("name", "   ", "This field is required."),
        ("name", "n" * 129, "at most 128 characters"),
        ("description", "d" * 1025, "at most 1024 characters"),
        ("category", "c" * 1025, "at most 1024 characters"),
        ("base_url_key", "", "This field is required."),
        ("base_url_key", "https://evil.example", "Select a valid choice."),
        ("base_url_key", "x-unknown", "Select a valid choice."),
        ("api_key", "", "Enter the API key."),
        ("api_key", "   ", "Enter the API key."),
        ("api_key", "short12", "at least 8 characters"),
        ("api_key", "k" * 4097, "at most 4096 characters"),
        ("api_key", "abcd efgh ijkl", "may not contain spaces"),
        ("api_key", "abcdefgh\tijkl", "may not contain spaces"),
        ("api_key", "abcd\x00efghijk", "Null characters are not allowed."),
        ("api_key", "ключключключ", "printable ASCII"),
        ("api_key", "abcdefgh\x07ijk", "printable ASCII"),
        ("name", "caf\ufffd source", "could not be read"),
        ("name", "bell\x07name", "control characters"),
        ("initial_lookback_days", "0", "greater than or equal to 1"),
        ("initial_lookback_days", "91", "less than or equal to 90"),
        ("initial_lookback_days", "seven", "Enter a whole number."),
        ("rescan_days", "-1", "greater than or equal to 0"),
        ("rescan_days", "15", "less than or equal to 14"),
        ("rescan_days", "1.5", "Enter a whole number."),
    ],
)
def test_it_refuses_a_bad_value(admin_client, collector, field, value, message):
    response = post_add(admin_client, collector, **{field: value})
    assert response.status_code == 200
    assert message in field_errors(response, field)
    assert_nothing_saved()


def test_it_refuses_a_duplicate_name_case_insensitively(admin_client, collector):
    make_source(collector, name="KnowBe4 Events")
    response = post_add(admin_client, collector, name="knowbe4 EVENTS")
    assert "already has a source named" in field_errors(response, "name")
    assert Source.objects.count() == 1


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("1abc", "must start with a letter or an underscore"),
        (".abc", "must start with a letter or an underscore"),
        ("ébc", "must start with a letter or an underscore"),
        ("ab-c", "only contain letters, digits, underscores and dots"),
        ("ab c", "only contain letters, digits, underscores and dots"),
        ("abç", "only contain letters, digits, underscores and dots"),
        ("a..b", "two dots in a row"),
        ("k" * 256, "at most 255 characters"),
        ("_sourceCategory", "built-in metadata name"),
        ("_SOURCEHOST", "built-in metadata name"),
        ("_raw", "built-in metadata name"),
        ("_messageTime", "built-in metadata name"),
    ],
)
def test_it_refuses_a_bad_field_key(admin_client, collector, key, message):
    response = post_add(admin_client, collector, field_key=[key], field_value=["v"])
    assert response.status_code == 200
    form = response.context["form"]
    assert message in form.rows[0].key_error
    assert message in response.content.decode().replace("&#x27;", "'")
    assert_nothing_saved()


def test_it_refuses_a_value_without_a_key(admin_client, collector):
    response = post_add(admin_client, collector, field_key=[""], field_value=["v"])
    assert response.context["form"].rows[0].key_error == "Enter a field name."
    assert_nothing_saved()


def test_it_refuses_a_too_long_field_value(admin_client, collector):
    response = post_add(
        admin_client, collector, field_key=["a"], field_value=["v" * 201]
    )
    assert "at most 200 characters" in response.context["form"].rows[0].value_error
    assert_nothing_saved()


def test_it_refuses_a_key_given_twice(admin_client, collector):
    response = post_add(
        admin_client, collector, field_key=["dept", "DEPT"], field_value=["a", "b"]
    )
    form = response.context["form"]
    assert form.rows[0].key_error is None
    assert "given twice" in form.rows[1].key_error
    assert_nothing_saved()


def test_it_refuses_eleven_fields(admin_client, collector):
    keys = [f"f{i}" for i in range(11)]
    response = post_add(admin_client, collector, field_key=keys, field_value=keys)
    assert "at most 10 fields" in response.context["form"].fields_error
    assert "at most 10 fields" in response.content.decode()
    assert_nothing_saved()
    ten = keys[:10]
    assert (
        post_add(admin_client, collector, field_key=ten, field_value=ten).status_code
        == 302
    )


def test_it_refuses_to_grow_the_schema_past_its_cap(admin_client, collector):
    FieldDefinition.objects.bulk_create(
        FieldDefinition(name=f"f{i}") for i in range(MAX_SCHEMA_FIELDS - 1)
    )
    response = post_add(
        admin_client,
        collector,
        field_key=["new1", "new2"],
        field_value=["a", "b"],
        auto_add_fields="on",
    )
    assert "limited to 200 fields" in field_errors(response, "auto_add_fields")
    assert_nothing_saved()
    assert FieldDefinition.objects.count() == MAX_SCHEMA_FIELDS - 1


def test_it_refuses_a_bad_edit_and_keeps_the_source(admin_client, source):
    url = reverse("source-edit", args=[source.pk])
    data = source_form_data(api_key="bad key!", field_key=["_raw"], field_value=["x"])
    response = admin_client.post(url, data)
    assert "may not contain spaces" in field_errors(response, "api_key")
    source.refresh_from_db()
    assert source.config_version == 1
    assert source.name == "KnowBe4 Events"
    assert not source.fields.exists()


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"name": ["a", "b"], "api_key": ["x"] * 3},
        {"name": "x" * 100_000, "api_key": "k" * 100_000, "category": "c" * 100_000},
        {"description": "d" * 100_000, "field_key": "k" * 100_000},
        {"field_value": ["v" * 100_000] * 3},
        {"initial_lookback_days": "9" * 1000, "rescan_days": "[]"},
        {"base_url_key": "us\x00", "name": "a\x00b"},
        {"field_key": ["a\x00"], "field_value": ["b\x00"]},
        {"auto_add_fields": "maybe", "field_key": ["z"] * 50},
    ],
)
def test_it_never_fails_on_a_malformed_post(admin_client, collector, data):
    response = admin_client.post(reverse("source-add", args=[collector.pk]), data)
    assert response.status_code == 200
    assert response.context["form"].errors
    assert_nothing_saved()


def test_it_survives_invalid_utf8(admin_client, collector):
    body = b"name=%FF%FE%FD&api_key=%C3%28abcdefgh&base_url_key=%80&field_key=%E2%82"
    response = admin_client.post(
        reverse("source-add", args=[collector.pk]),
        body,
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    assert_nothing_saved()


def test_it_survives_invalid_utf8_in_multipart(admin_client, collector):
    boundary = "XyZ"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\n'.encode()
        + b"\xff\xfe bad"
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = admin_client.post(
        reverse("source-add", args=[collector.pk]),
        body,
        content_type=f"multipart/form-data; boundary={boundary}",
    )
    assert response.status_code == 200
    assert_nothing_saved()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "This field is required."),
        ("c" * 129, "at most 128 characters"),
    ],
)
def test_it_refuses_a_bad_collector_name(admin_client, value, message):
    response = admin_client.post(reverse("collector-add"), {"name": value})
    assert message in field_errors(response, "name")
    assert not HostedCollector.objects.exists()


def test_it_refuses_a_long_collector_category(admin_client):
    data = {"name": "ok", "category": "c" * 1025, "description": "d" * 1025}
    response = admin_client.post(reverse("collector-add"), data)
    assert "at most 1024 characters" in field_errors(response, "category")
    assert "at most 1024 characters" in field_errors(response, "description")
    assert not HostedCollector.objects.exists()


def test_it_refuses_a_duplicate_collector_name(admin_client, collector):
    response = admin_client.post(reverse("collector-add"), {"name": "PRODUCTION"})
    assert "already exists" in field_errors(response, "name")
    assert HostedCollector.objects.count() == 1


@pytest.mark.parametrize(
    "data",
    [{}, {"name": ["a", "x" * 200]}, {"name": "x" * 100_000}, {"name": "a\x00"}],
)
def test_it_never_fails_on_a_malformed_collector_post(admin_client, data):
    response = admin_client.post(reverse("collector-add"), data)
    assert response.status_code == 200
    assert not HostedCollector.objects.exists()


def test_it_keeps_fields_schema_unchanged_on_refusal(admin_client, collector):
    make_field("dept", enabled=False)
    post_add(
        admin_client,
        collector,
        name="",
        field_key=["dept"],
        field_value=["x"],
        auto_add_fields="on",
    )
    assert not FieldDefinition.objects.get(name="dept").enabled


def test_it_refuses_a_collector_name_mangled_by_invalid_utf8(admin_client):
    response = admin_client.post(
        reverse("collector-add"),
        b"name=%FF%FE%FD",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    assert "could not be read" in " ".join(response.context["form"].errors["name"])
    assert not HostedCollector.objects.exists()

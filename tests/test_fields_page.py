"""Manage Data > Logs > Fields: the schema, its rules and its capacity."""

from __future__ import annotations

import pytest
from django.urls import reverse

from collectors.choices import MAX_SCHEMA_FIELDS
from collectors.models import FieldDefinition
from tests.cast import make_collector, make_field, make_source

pytestmark = pytest.mark.django_db


def add(client, name):
    return client.post(reverse("field-add"), {"name": name})


def test_it_lists_the_schema_with_usage(admin_client, django_assert_num_queries):
    make_field("department")
    make_field("region", enabled=False)
    make_field("unused")
    collector = make_collector()
    make_source(collector, "A", fields={"Department": "IT", "region": "eu"})
    make_source(collector, "B", fields={"department": "HR"})
    admin_client.get(reverse("fields"))
    # session, user, the schema with counts, the sources using them
    with django_assert_num_queries(4):
        response = admin_client.get(reverse("fields"))
    usage = {
        d.name: (d.enabled, d.source_count) for d in response.context["definitions"]
    }
    assert usage == {
        "department": (True, 2),
        "region": (False, 1),
        "unused": (True, 0),
    }
    html = response.content.decode()
    assert "3 of 200 fields" in html
    assert "Enabled" in html
    assert "Disabled" in html


def test_it_links_the_sources_that_use_each_field(admin_client):
    make_field("department")
    make_field("unused")
    collector = make_collector("Prod")
    a = make_source(collector, "A", fields={"Department": "IT"})
    b = make_source(collector, "B", fields={"department": "HR"})
    for n in range(6):
        make_source(collector, f"More{n}", fields={"DEPARTMENT": "x"})
    response = admin_client.get(reverse("fields"))
    rows = {d.name: d for d in response.context["definitions"]}
    department = rows["department"]
    assert [u["name"] for u in department.users] == [
        "A",
        "B",
        "More0",
        "More1",
        "More2",
    ]
    assert department.more_users == 3
    assert rows["unused"].users == []
    html = response.content.decode()
    assert f'href="{a.get_absolute_url()}"' in html
    assert f'href="{b.get_absolute_url()}"' in html
    assert "and 3 more" in html


def test_it_adds_a_field(admin_client):
    response = add(admin_client, "  team.lead_1 ")
    assert response.status_code == 302
    assert FieldDefinition.objects.get().name == "team.lead_1"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "This field is required."),
        ("9lives", "must start with a letter or an underscore"),
        ("a-b", "only contain letters, digits, underscores and dots"),
        ("a..b", "two dots in a row"),
        ("_sourceName", "built-in metadata name"),
        ("_index", "built-in metadata name"),
        ("x" * 256, "at most 255 characters"),
        ("x\x00", "Null characters are not allowed."),
    ],
)
def test_it_refuses_a_bad_name(admin_client, name, message):
    response = add(admin_client, name)
    assert response.status_code == 200
    assert message in " ".join(response.context["form"].errors["name"])
    assert not FieldDefinition.objects.exists()


def test_it_refuses_a_duplicate_case_insensitively(admin_client):
    make_field("Department")
    response = add(admin_client, "department")
    assert "already in the schema" in str(response.context["form"].errors["name"])
    assert FieldDefinition.objects.count() == 1


def test_it_refuses_the_201st_field(admin_client):
    FieldDefinition.objects.bulk_create(
        FieldDefinition(name=f"f{i}") for i in range(MAX_SCHEMA_FIELDS)
    )
    html = admin_client.get(reverse("fields")).content.decode()
    assert "200 of 200 fields" in html
    response = add(admin_client, "one_more")
    assert "schema is full" in str(response.context["form"].errors["name"])
    assert FieldDefinition.objects.count() == MAX_SCHEMA_FIELDS


def test_it_disables_and_enables(admin_client):
    field = make_field("dept")
    assert (
        admin_client.post(reverse("field-disable", args=[field.pk])).status_code == 302
    )
    field.refresh_from_db()
    assert not field.enabled
    admin_client.post(reverse("field-enable", args=[field.pk]))
    field.refresh_from_db()
    assert field.enabled


def test_it_deletes_an_unused_field(admin_client):
    field = make_field("dept")
    admin_client.post(reverse("field-delete", args=[field.pk]))
    assert not FieldDefinition.objects.exists()


def test_it_refuses_to_delete_a_field_in_use(admin_client, collector):
    field = make_field("dept")
    make_source(collector, fields={"DEPT": "x"})
    response = admin_client.post(reverse("field-delete", args=[field.pk]), follow=True)
    assert "is used by 1 source" in response.content.decode()
    assert FieldDefinition.objects.exists()


@pytest.mark.parametrize(
    "name", ["field-add", "field-enable", "field-disable", "field-delete"]
)
def test_it_answers_405_to_a_get_on_a_change(admin_client, name):
    field = make_field("dept")
    args = [] if name == "field-add" else [field.pk]
    assert admin_client.get(reverse(name, args=args)).status_code == 405
    field.refresh_from_db()
    assert field.enabled


def test_it_404s_for_an_unknown_field(admin_client):
    assert admin_client.post(reverse("field-delete", args=[999])).status_code == 404


def test_it_survives_a_malformed_add(admin_client):
    response = admin_client.post(
        reverse("field-add"),
        b"name=%FF%FE",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    assert not FieldDefinition.objects.exists()


def test_it_runs_the_same_queries_however_large_the_schema(
    admin_client, django_assert_num_queries
):
    collector = make_collector()
    for n in range(40):
        make_field(f"field{n}")
    for n in range(10):
        make_source(collector, f"S{n}", fields={f"field{n}": "x", f"Field{n + 1}": "y"})
    with django_assert_num_queries(4):
        response = admin_client.get(reverse("fields"))
    assert "40 of 200 fields" in response.content.decode()

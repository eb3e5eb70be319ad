"""Hosted collectors: add, edit, delete (with a count of the sources that go)."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from collectors import engine
from collectors.choices import SourceState
from collectors.models import HostedCollector, LogMessage, Source
from tests.cast import make_collector, make_source

pytestmark = pytest.mark.django_db


def test_it_adds_a_collector(admin_client):
    data = {"name": "Production", "description": "Main", "category": "prod"}
    response = admin_client.post(reverse("collector-add"), data, follow=True)
    assert response.redirect_chain[-1][0] == reverse("collection")
    collector = HostedCollector.objects.get()
    assert (collector.name, collector.description, collector.category) == (
        "Production",
        "Main",
        "prod",
    )
    assert "Hosted collector “Production” added." in response.content.decode()


def test_it_shows_the_add_form(admin_client):
    html = admin_client.get(reverse("collector-add")).content.decode()
    assert 'name="name"' in html
    assert 'name="description"' in html
    assert 'name="category"' in html


def test_it_edits_a_collector(admin_client, collector):
    url = reverse("collector-edit", args=[collector.pk])
    assert 'value="Production"' in admin_client.get(url).content.decode()
    response = admin_client.post(url, {"name": "PRODUCTION", "category": "x"})
    assert response.status_code == 302
    collector.refresh_from_db()
    assert collector.name == "PRODUCTION"


def test_it_refuses_a_name_taken_by_another(admin_client, collector):
    other = make_collector("Staging")
    url = reverse("collector-edit", args=[other.pk])
    response = admin_client.post(url, {"name": "production"})
    assert "already exists" in str(response.context["form"].errors["name"])
    other.refresh_from_db()
    assert other.name == "Staging"


def test_it_says_how_many_sources_a_delete_stops(admin_client, collector):
    make_source(collector, "A")
    make_source(collector, "B")
    html = admin_client.get(
        reverse("collector-delete", args=[collector.pk])
    ).content.decode()
    assert "2 sources" in html
    assert "stopped and deleted" in html
    assert HostedCollector.objects.exists()


def test_it_deletes_an_empty_collector(admin_client, collector):
    url = reverse("collector-delete", args=[collector.pk])
    assert "no sources" in admin_client.get(url).content.decode()
    assert admin_client.post(url).status_code == 302
    assert not HostedCollector.objects.exists()


def test_it_deletes_a_collector_keeping_collected_messages(admin_client, source):
    LogMessage.objects.create(
        source=source,
        event_id="evt-1",
        raw="{}",
        message_time=timezone.now(),
        source_name=source.name,
        collector_name=source.collector.name,
    )
    admin_client.post(reverse("collector-delete", args=[source.collector.pk]))
    assert Source.objects.get().state == SourceState.STOPPING
    assert engine.run(source.pk).outcome == "deleted"
    assert not HostedCollector.objects.exists()
    assert not Source.objects.exists()
    message = LogMessage.objects.get()
    assert message.source is None
    assert message.collector_name == "Production"


def test_it_refuses_a_get_that_would_delete(admin_client, collector):
    admin_client.get(reverse("collector-delete", args=[collector.pk]))
    assert HostedCollector.objects.exists()


@pytest.mark.parametrize("method", ["put", "delete", "patch"])
def test_it_answers_405_to_other_methods(admin_client, collector, method):
    url = reverse("collector-delete", args=[collector.pk])
    assert getattr(admin_client, method)(url).status_code == 405

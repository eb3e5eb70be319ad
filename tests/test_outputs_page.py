"""The Outputs pages: list with backlog and health, add/edit with masked
secrets, enable/disable, delete, and the refusals of bad input."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from collectors import health
from collectors.choices import ErrorType, Severity
from collectors.models import HealthEvent, LogMessage
from outputs.models import Output
from tests.cast import make_collector, make_messages, make_output, make_source

SUMO_URL = (
    "https://endpoint4.collection.sumologic.com/receiver/v1/http/"
    "ZaVnC4dhaV0xSECRETPATHxZaVnC4dhaV0x=="
)
HEC_TOKEN = "c0ffee00-SECRET-TOKEN-9876"


def form_data(**kw) -> dict:
    data = {
        "name": "To Sumo",
        "format": "sumo",
        "url": SUMO_URL,
        "token": "",
        "category_pattern": "",
        "source": "",
        "start_from": "all",
        "sumo_host": "",
        "hec_sourcetype": "knowbe4:user_event",
        "hec_index": "",
        "compress": "on",
        "max_batch_count": "1000",
        "max_batch_bytes": "1000000",
    }
    return {**data, **kw}


def test_it_lists_outputs_with_backlog_health_and_progress(
    admin_client, django_assert_num_queries
):
    source = make_source(make_collector(), category="Security/KnowBe4")
    ids = make_messages(source, 30)
    old = timezone.now() - timedelta(hours=3)
    LogMessage.objects.filter(pk=ids[10]).update(receipt_time=old)
    first = make_output(SUMO_URL, "A", format="sumo", checkpoint=ids[9], replays=2)
    make_output("https://siem.example.com/a", "B", category_pattern="Audit/*")
    make_output("https://siem.example.com/c", "C", enabled=False)
    health.record(
        first,
        ErrorType.THIRD_PARTY_GENERIC,
        code="http_503",
        message="The endpoint answered 503.",
        severity=Severity.WARNING,
    )
    Output.objects.filter(pk=first.pk).update(last_error="The endpoint answered 503.")

    # session, user, outputs, categories, backlog aggregate, health counts
    with django_assert_num_queries(6):
        response = admin_client.get(reverse("outputs"))

    page = response.content.decode()
    rows = {o.name: o for o in response.context["outputs"]}
    assert rows["A"].backlog_count == 20 and rows["A"].backlog_oldest == old
    assert rows["B"].backlog_count == 0  # no message matches Audit/*
    assert rows["C"].backlog_count == 30
    assert "oldest collected 3\xa0hours ago" in page
    assert "The endpoint answered 503." in page
    assert 'data-status="warning"' in page and 'data-status="neutral"' in page
    assert "No successful delivery yet" in page  # the tooltip speaks of delivery
    assert "SECRETPATH" not in page
    assert "https://endpoint4.collection.sumologic.com/…" in page


def test_it_adds_an_output_with_its_url_encrypted_and_masked(admin_client):
    response = admin_client.post(reverse("output-add"), form_data())

    assert response.status_code == 302
    output = Output.objects.get()
    assert output.get_url() == SUMO_URL
    assert "SECRET" not in output.url_encrypted and "SECRET" not in output.url_hint
    edit = admin_client.get(reverse("output-edit", args=[output.pk])).content.decode()
    assert "SECRETPATH" not in edit and output.url_hint in edit


def test_it_starts_from_new_messages_when_asked(admin_client):
    ids = make_messages(make_source(make_collector()), 5)
    admin_client.post(reverse("output-add"), form_data(start_from="new"))
    assert Output.objects.get().checkpoint == ids[-1]


def test_it_keeps_the_stored_secrets_when_left_blank(admin_client):
    output = make_output(
        "https://splunk.example.com:8088/services/collector/event",
        format="hec",
        token=HEC_TOKEN,
        error_type=ErrorType.THIRD_PARTY_CONFIG,
    )
    before = output.config_version
    response = admin_client.post(
        reverse("output-edit", args=[output.pk]),
        form_data(name="Splunk", format="hec", url="", token=""),
    )
    assert response.status_code == 302
    output.refresh_from_db()
    assert output.name == "Splunk"
    assert output.get_token() == HEC_TOKEN and output.token_hint == "…9876"
    assert output.get_url().startswith("https://splunk.example.com:8088/")
    assert output.config_version == before + 1
    assert output.error_type == ""  # an edit lifts ThirdPartyConfig
    page = admin_client.get(reverse("output-edit", args=[output.pk])).content
    assert HEC_TOKEN.encode() not in page


def test_it_disables_and_enables_keeping_the_checkpoint(admin_client):
    output = make_output("https://siem.example.com/in", checkpoint=42)
    admin_client.post(reverse("output-disable", args=[output.pk]))
    output.refresh_from_db()
    assert not output.enabled and output.checkpoint == 42
    admin_client.post(reverse("output-enable", args=[output.pk]))
    output.refresh_from_db()
    assert output.enabled and output.checkpoint == 42


def test_it_deletes_an_output_but_keeps_its_health_history(admin_client):
    output = make_output("https://siem.example.com/in", "Doomed")
    event = health.record(
        output, ErrorType.THIRD_PARTY_GENERIC, code="http_500", message="down"
    )
    url = reverse("output-delete", args=[output.pk])
    assert admin_client.get(url).status_code == 200
    admin_client.post(url)
    assert not Output.objects.exists()
    event.refresh_from_db()
    assert (event.resource_type, event.resource_name) == ("Output", "Doomed")
    assert event.resource_url == ""  # deleted: the history names it, no link


def test_it_shows_the_health_panel_of_an_output(admin_client):
    output = make_output("https://siem.example.com/in", "Siem")
    health.record(
        output,
        ErrorType.THIRD_PARTY_CONFIG,
        code="http_401",
        message="The endpoint answered 401.",
        severity=Severity.ERROR,
    )
    panel = admin_client.get(reverse("output-health", args=[output.pk]))
    text = panel.content.decode()
    assert "Health Events · Output Siem" in text
    assert "ThirdPartyConfigError" in text and "answered 401" in text
    event = HealthEvent.objects.get()
    assert event.resource_url == f"/outputs/#output-{output.pk}"
    detail = admin_client.get(reverse("health-event-detail", args=[event.pk]))
    assert f'href="/outputs/#output-{output.pk}"' in detail.content.decode()


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"url": ""}, "url", "Enter the endpoint's URL."),
        ({"url": "ftp://x.example.com/"}, "url", "must start with https://"),
        ({"url": "http://x.example.com/"}, "url", "must start with https://"),
        ({"url": "https://u:p@x.example.com/"}, "url", "Token field"),
        ({"url": "https://x.example.com:99999/"}, "url", "not a valid URL"),
        ({"url": "https://x.example.com/\x00"}, "url", "Null characters"),
        ({"url": "https://x.example.com/a b"}, "url", "controls"),
        ({"format": "hec"}, "token", "needs a token"),
        ({"format": "smtp"}, "format", "Select a valid choice"),
        ({"max_batch_count": "0"}, "max_batch_count", "greater than or equal"),
        ({"max_batch_count": "x"}, "max_batch_count", "whole number"),
        ({"max_batch_bytes": "2000000"}, "max_batch_bytes", "at most 1,000,000"),
        ({"max_batch_bytes": "99999999999"}, "max_batch_bytes", "less than"),
        ({"source": "999999"}, "source", "Select a valid choice"),
        ({"source": "abc"}, "source", "Select a valid choice"),
        ({"name": ""}, "name", "required"),
        ({"category_pattern": "a\x07b"}, "category_pattern", "control"),
    ],
)
def test_it_refuses_bad_input_and_saves_nothing(admin_client, changes, field, message):
    response = admin_client.post(reverse("output-add"), form_data(**changes))
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert message in " ".join(errors.get(field, [])), errors
    assert not Output.objects.exists()


def test_it_refuses_a_duplicate_name_case_insensitively(admin_client):
    make_output("https://siem.example.com/in", "To Sumo")
    response = admin_client.post(reverse("output-add"), form_data(name="to sumo"))
    assert "already exists" in str(response.context["form"].errors["name"])


def test_it_lets_a_viewer_see_outputs_but_not_change_them(role_client):
    output = make_output(SUMO_URL, "A", format="sumo")
    viewer = role_client("Viewer")
    page = viewer.get(reverse("outputs"))
    assert page.status_code == 200 and b"Add Output" not in page.content
    assert viewer.post(reverse("output-disable", args=[output.pk])).status_code == 403
    assert viewer.post(reverse("output-add"), form_data(name="B")).status_code == 403
    output.refresh_from_db()
    assert output.enabled and Output.objects.count() == 1


@pytest.mark.django_db
def test_it_rotates_the_output_secrets_with_rotate_keys(settings):
    from io import StringIO

    from cryptography.fernet import Fernet
    from django.core.management import call_command

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [old]
    output = make_output(SUMO_URL, format="hec", token=HEC_TOKEN)
    settings.FIELD_ENCRYPTION_KEYS = [new, old]
    call_command("rotate_keys", stdout=StringIO())
    settings.FIELD_ENCRYPTION_KEYS = [new]
    output.refresh_from_db()
    assert (output.get_url(), output.get_token()) == (SUMO_URL, HEC_TOKEN)

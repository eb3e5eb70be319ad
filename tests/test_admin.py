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


def source_change_data(source, **overrides) -> dict:
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
    return {**data, **overrides}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("initial_lookback_days", 99999, "less than or equal to 90"),
        ("initial_lookback_days", 0, "greater than or equal to 1"),
        ("rescan_days", 15, "less than or equal to 14"),
        ("name", "bell\x07name", "control characters"),
        ("name", "evil\u202etxt.exe", "direction control characters"),
        ("name", "isolate\u2067x\u2069", "direction control characters"),
        ("name", "caf\ufffd", "could not be read"),
    ],
)
def test_it_applies_the_source_forms_rules_in_admin(
    admin_client, source, field, value, message
):
    url = admin_url(Source, "change", source.pk)
    response = admin_client.post(url, source_change_data(source, **{field: value}))
    assert response.status_code == 200
    errors = " ".join(response.context["adminform"].form.errors[field])
    assert message in errors
    source.refresh_from_db()
    assert (source.name, source.initial_lookback_days, source.rescan_days) == (
        "KnowBe4 Events",
        7,
        1,
    )
    assert source.config_version == 1


def test_it_accepts_the_edges_of_the_windows_in_admin(admin_client, source):
    url = admin_url(Source, "change", source.pk)
    data = source_change_data(source, initial_lookback_days=90, rescan_days=0)
    assert admin_client.post(url, data).status_code == 302
    source.refresh_from_db()
    assert (source.initial_lookback_days, source.rescan_days) == (90, 0)


def test_it_validates_the_windows_on_the_model_too(source):
    from django.core.exceptions import ValidationError

    source.initial_lookback_days, source.rescan_days = 99999, 15
    with pytest.raises(ValidationError) as info:
        source.full_clean()
    assert set(info.value.message_dict) == {"initial_lookback_days", "rescan_days"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("evil\u202eexe.txt", "direction control characters"),
        ("tab\tname", "control characters"),
        ("ＰＲＯＤＵＣＴＩＯＮ", "already exists"),
    ],
)
def test_it_applies_the_collector_forms_rules_in_admin(
    admin_client, collector, value, message
):
    response = admin_client.post(
        admin_url(models.HostedCollector, "add"), {"name": value}
    )
    assert response.status_code == 200
    assert message in " ".join(response.context["adminform"].form.errors["name"])
    assert models.HostedCollector.objects.count() == 1


def test_it_refuses_a_same_name_source_in_admin(admin_client, collector, source):
    other = make_source(collector, "Other")
    url = admin_url(Source, "change", other.pk)
    response = admin_client.post(
        url, source_change_data(other, name="ＫｎｏｗＢｅ４ ｅｖｅｎｔｓ")
    )
    assert response.status_code == 200
    assert "already has a source named" in " ".join(
        response.context["adminform"].form.errors["name"]
    )
    other.refresh_from_db()
    assert other.name == "Other"


@pytest.fixture
def staff_client(client, db):
    """A staff member (not a superuser) with every django-q2 permission."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    staff = get_user_model().objects.create_user("carol", password="pw", is_staff=True)
    staff.user_permissions.set(
        Permission.objects.filter(content_type__app_label="django_q")
    )
    client.force_login(staff)
    return client


@pytest.fixture
def schedule(db):
    from django_q.models import Schedule

    return Schedule.objects.create(
        func="collectors.tasks.dispatch", schedule_type=Schedule.MINUTES, minutes=1
    )


def test_it_keeps_django_q_schedules_read_only_for_staff(staff_client, schedule):
    from django_q.models import Schedule

    changelist = reverse("admin:django_q_schedule_changelist")
    assert staff_client.get(changelist).status_code == 200
    assert staff_client.get(reverse("admin:django_q_schedule_add")).status_code == 403
    add = staff_client.post(
        reverse("admin:django_q_schedule_add"),
        {"func": "os.system", "args": "'touch /tmp/pwned'", "schedule_type": "O"},
    )
    assert add.status_code == 403
    change_url = reverse("admin:django_q_schedule_change", args=[schedule.pk])
    page = staff_client.get(change_url)
    assert page.status_code == 200
    assert 'name="func"' not in page.content.decode()  # shown, not editable
    staff_client.post(change_url, {"func": "os.system", "schedule_type": "O"})
    delete_url = reverse("admin:django_q_schedule_delete", args=[schedule.pk])
    assert staff_client.post(delete_url, {"post": "yes"}).status_code == 403
    assert Schedule.objects.get(pk=schedule.pk).func == "collectors.tasks.dispatch"
    assert not Schedule.objects.filter(func="os.system").exists()


def test_it_keeps_django_q_tasks_read_only_for_staff(staff_client):
    from django_q.models import Failure, Success, Task

    now = timezone.now()
    for n, ok in enumerate((True, False)):
        Task.objects.create(
            id=f"task-{n}",
            name=f"task-{n}",
            func="collectors.tasks.collect_source",
            args=(1,),
            started=now,
            stopped=now,
            success=ok,
        )
    for model in (Success, Failure):
        meta = model._meta
        changelist = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
        page = staff_client.get(changelist)
        assert page.status_code == 200
        assert "task-" in page.content.decode()
        assert "resubmit" not in page.content.decode().lower()


def test_it_lets_a_superuser_edit_django_q_schedules(admin_client, schedule):
    page = admin_client.get(
        reverse("admin:django_q_schedule_change", args=[schedule.pk])
    )
    assert 'name="func"' in page.content.decode()
    assert admin_client.get(reverse("admin:django_q_schedule_add")).status_code == 200

"""Roles: every URL of the URLconf x every role -> the expected status, and a
refused POST changes nothing.

The URL list is read from the URLconf, so a page added later is covered
automatically: a URL missing from EXPECTED fails the test and says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from alerts.models import Notification
from alerts.views import MANAGE_MONITORS, VIEW_MONITORS
from collectors.models import HealthEvent
from collectors.permissions import DOWNLOAD, MANAGE, MANAGE_FIELDS, VIEW
from tests.alerts_support import make_connection, make_log_monitor
from tests.cast import (
    PASSWORD,
    ROLES,
    make_collector,
    make_field,
    make_output,
    make_source,
    make_user,
)

pytestmark = pytest.mark.django_db

ANONYMOUS = "anonymous"
NO_ROLE = "no role"
SUPERUSER = "superuser"
# What each role holds of the app's permissions.
HOLDS = {
    ANONYMOUS: set(),
    NO_ROLE: set(),
    "Viewer": {VIEW, VIEW_MONITORS},
    "Analyst": {VIEW, DOWNLOAD, VIEW_MONITORS},
    "Collector manager": {
        VIEW,
        DOWNLOAD,
        MANAGE,
        MANAGE_FIELDS,
        VIEW_MONITORS,
        MANAGE_MONITORS,
    },
    SUPERUSER: {VIEW, DOWNLOAD, MANAGE, MANAGE_FIELDS, VIEW_MONITORS, MANAGE_MONITORS},
}


@dataclass(frozen=True)
class Expect:
    """What one URL needs and answers.

    perm: the permission it requires (None: any signed-in user; `public`
    also lets anonymous visitors in). get/post: the status for a user allowed
    to use it, or 405 when the view refuses that method. args: a function of
    the world fixture giving the URL kwargs to try (a list: one per variant).
    An allowed POST is sent with an empty body and rolled back afterwards.
    """

    perm: str | None
    get: int = 200
    post: int = 405
    args: Callable[[dict], list[dict]] = field(default=lambda w: [{}])
    public: bool = False


def _pk(kind: str) -> Callable[[dict], list[dict]]:
    return lambda w: [{"pk": w[kind].pk}]


# Every named URL of knowbe4sumo.urls except Django admin's (checked apart).
# Adding a page? Add its row here: its permission and its answers.
EXPECTED: dict[str, Expect] = {
    "login": Expect(None, post=200, public=True),
    "logout": Expect(None, get=405, post=302),
    "preferences": Expect(None, post=200),
    "collection": Expect(VIEW),
    "collector-add": Expect(MANAGE, post=200),
    "collector-edit": Expect(MANAGE, post=200, args=_pk("collector")),
    "collector-delete": Expect(MANAGE, post=302, args=_pk("collector")),
    "source-types": Expect(MANAGE, args=_pk("collector")),
    "source-add": Expect(MANAGE, post=200, args=_pk("collector")),
    "source-add-reporting": Expect(MANAGE, post=200, args=_pk("collector")),
    "source-edit": Expect(MANAGE, post=200, args=_pk("source")),
    "source-delete": Expect(MANAGE, post=302, args=_pk("source")),
    "fields": Expect(MANAGE_FIELDS),
    "field-add": Expect(MANAGE_FIELDS, get=405, post=200),
    "field-enable": Expect(MANAGE_FIELDS, get=405, post=302, args=_pk("field")),
    "field-disable": Expect(MANAGE_FIELDS, get=405, post=302, args=_pk("field")),
    "field-delete": Expect(MANAGE_FIELDS, get=405, post=302, args=_pk("field")),
    "source-detail": Expect(VIEW, args=_pk("source")),
    "source-health": Expect(VIEW, args=_pk("source")),
    "source-restart": Expect(MANAGE, get=405, post=302, args=_pk("source")),
    "source-reprocess": Expect(MANAGE, get=405, post=302, args=_pk("source")),
    "source-test-connection": Expect(MANAGE, get=405, post=200),
    "source-test-connection-reporting": Expect(MANAGE, get=405, post=200),
    "source-quota-figures": Expect(MANAGE),
    "collector-health": Expect(VIEW, args=_pk("collector")),
    "collection-status": Expect(VIEW),
    "health-events": Expect(VIEW),
    "health-event-detail": Expect(VIEW, args=_pk("event")),
    "overview": Expect(VIEW),
    "messages": Expect(VIEW),
    "messages-export": Expect(
        DOWNLOAD, args=lambda w: [{"fmt": "csv"}, {"fmt": "jsonl"}]
    ),
    "monitors": Expect(VIEW_MONITORS),
    "monitor-add": Expect(MANAGE_MONITORS, post=200),
    "monitor-detail": Expect(VIEW_MONITORS, args=_pk("monitor")),
    "monitor-edit": Expect(MANAGE_MONITORS, post=200, args=_pk("monitor")),
    "monitor-toggle": Expect(MANAGE_MONITORS, get=405, post=302, args=_pk("monitor")),
    "monitor-delete": Expect(MANAGE_MONITORS, post=302, args=_pk("monitor")),
    "connections": Expect(VIEW_MONITORS),
    "connection-add": Expect(MANAGE_MONITORS, post=200),
    "connection-edit": Expect(MANAGE_MONITORS, post=200, args=_pk("connection")),
    "connection-delete": Expect(MANAGE_MONITORS, post=302, args=_pk("connection")),
    "connection-test": Expect(
        MANAGE_MONITORS, get=405, post=302, args=_pk("connection")
    ),
    "connection-health": Expect(VIEW_MONITORS, args=_pk("connection")),
    "notifications": Expect(VIEW_MONITORS),
    "notification-detail": Expect(VIEW_MONITORS, args=_pk("notification")),
    "outputs": Expect(VIEW),
    "output-add": Expect(MANAGE, post=200),
    "output-edit": Expect(MANAGE, post=200, args=_pk("output")),
    "output-enable": Expect(MANAGE, get=405, post=302, args=_pk("output")),
    "output-disable": Expect(MANAGE, get=405, post=302, args=_pk("output")),
    "output-delete": Expect(MANAGE, post=302, args=_pk("output")),
    "output-health": Expect(VIEW, args=_pk("output")),
}


def url_names(patterns=None, namespace: str = "") -> list[str]:
    """Every URL name of the root URLconf, Django admin's left out."""
    names = []
    for p in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(p, URLResolver):
            if p.app_name == "admin":
                continue
            inner = f"{namespace}{p.namespace}:" if p.namespace else namespace
            names += url_names(p.url_patterns, inner)
        elif isinstance(p, URLPattern):
            assert p.name, (
                f"URL {p.pattern} has no name: name it and add it to EXPECTED"
            )
            names.append(namespace + p.name)
    return names


@pytest.fixture
def world():
    collector = make_collector()
    source = make_source(collector)
    event = HealthEvent.objects.create(
        source=source,
        event_name="ThirdPartyConfigError",
        error_type="ThirdPartyConfig",
        severity="error",
        error_code="401",
        message="KnowBe4 refused the API key",
    )
    connection = make_connection()
    return {
        "collector": collector,
        "source": source,
        "field": make_field("dept"),
        "event": event,
        "monitor": make_log_monitor([connection]),
        "connection": connection,
        "notification": Notification.objects.create(
            connection=connection,
            connection_name=connection.name,
            kind=connection.kind,
            payload={"state": "test", "summary": "Test", "monitor": {}},
        ),
        "output": make_output("https://siem.example.com/in"),
    }


def sign_in(client, role: str):
    if role == ANONYMOUS:
        client.logout()
    elif role == SUPERUSER:
        client.force_login(
            get_user_model().objects.get_or_create(
                username="root", defaults={"is_superuser": True, "is_staff": True}
            )[0]
        )
    else:
        client.force_login(
            get_user_model().objects.get_or_create(username=f"u-{role}")[0]
        )
        user = get_user_model().objects.get(username=f"u-{role}")
        if role != NO_ROLE:
            user.groups.add(Group.objects.get(name=role))


def snapshot() -> dict:
    """Every row of every table the app's models keep (sessions aside)."""
    rows = {}
    for model in apps.get_models():
        meta = model._meta
        if not meta.managed or meta.proxy or meta.app_label == "sessions":
            continue
        rows[meta.label] = list(model._default_manager.order_by("pk").values())
    return rows


def expected(role: str, expect: Expect, method: str) -> tuple[int, bool]:
    """(status, refused) of `method` on the URL for `role`."""
    if role == ANONYMOUS and not expect.public:
        return 302, True
    if expect.perm is not None and expect.perm not in HOLDS[role]:
        return 403, True
    status = expect.get if method == "GET" else expect.post
    return status, status == 405


def test_it_knows_every_url_of_the_urlconf():
    unknown = sorted(set(url_names()) - set(EXPECTED))
    assert not unknown, (
        f"URLs without an expectation: {unknown}. Add them to EXPECTED in "
        "tests/test_roles.py with the permission they require and their answers."
    )
    gone = sorted(set(EXPECTED) - set(url_names()))
    assert not gone, f"EXPECTED names URLs that no longer exist: {gone}"


@pytest.mark.parametrize("role", list(HOLDS))
def test_it_answers_every_url_as_the_role_allows(client, world, role):
    checked = 0
    for name in url_names():
        expect = EXPECTED.get(name)
        assert expect is not None, f"{name}: add it to EXPECTED in tests/test_roles.py"
        for kwargs in expect.args(world):
            url = reverse(name, kwargs=kwargs)
            for method in ("GET", "POST"):
                sign_in(client, role)
                want, refused = expected(role, expect, method)
                before = snapshot() if method == "POST" and refused else None
                with transaction.atomic():
                    response = getattr(client, method.lower())(url)
                    transaction.set_rollback(True)
                assert response.status_code == want, (
                    f"{role} {method} {url}: {response.status_code}, expected {want}"
                )
                if want == 302 and role == ANONYMOUS:
                    assert response["Location"].startswith(reverse("login")), url
                if before is not None:
                    assert snapshot() == before, f"{role} {method} {url} changed data"
                checked += 1
    assert checked >= 2 * len(EXPECTED)


@pytest.mark.parametrize("role", [NO_ROLE, *ROLES])
def test_it_keeps_admin_for_staff_whatever_the_role(client, role):
    sign_in(client, role)
    response = client.get("/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_it_opens_admin_to_a_superuser(client):
    sign_in(client, SUPERUSER)
    assert client.get("/admin/").status_code == 200


def test_it_tells_a_user_without_a_role_to_ask_an_administrator(role_client):
    response = role_client(None).get(reverse("collection"))
    assert response.status_code == 403
    html = response.content.decode()
    assert "You have no role yet" in html
    assert "Ask an administrator" in html
    # Nothing to navigate to.
    assert f'href="{reverse("messages")}"' not in html


def test_it_says_which_ability_a_role_lacks(role_client, collector):
    client = role_client("Viewer")
    response = client.get(reverse("collector-delete", args=[collector.pk]))
    assert response.status_code == 403
    html = response.content.decode()
    assert "role Viewer" in html
    assert "add, edit, restart and delete collectors and sources" in html


def test_it_hides_what_a_viewer_cannot_use(role_client, source):
    client = role_client("Viewer")
    html = client.get(reverse("collection")).content.decode()
    assert reverse("collection") in html
    for hidden in (
        reverse("collector-add"),
        reverse("source-edit", args=[source.pk]),
        reverse("source-delete", args=[source.pk]),
        reverse("collector-edit", args=[source.collector.pk]),
        reverse("source-types", args=[source.collector.pk]),
        reverse("fields"),
    ):
        assert f'href="{hidden}"' not in html, hidden
    detail = client.get(reverse("source-detail", args=[source.pk])).content.decode()
    assert reverse("source-edit", args=[source.pk]) not in detail
    messages = client.get(reverse("messages")).content.decode()
    assert "Export CSV" not in messages


def test_it_shows_an_analyst_the_exports_and_a_manager_everything(client, source):
    sign_in(client, "Analyst")
    assert "Export CSV" in client.get(reverse("messages")).content.decode()
    sign_in(client, "Collector manager")
    html = client.get(reverse("collection")).content.decode()
    for shown in (
        reverse("collector-add"),
        reverse("source-edit", args=[source.pk]),
        reverse("source-delete", args=[source.pk]),
        reverse("fields"),
    ):
        assert f'href="{shown}"' in html, shown


def test_it_gives_each_role_its_permissions():
    for role in ROLES:
        group = Group.objects.get(name=role)
        held = {
            f"{p.content_type.app_label}.{p.codename}"
            for p in group.permissions.select_related("content_type")
            if p.content_type.app_label in ("collectors", "alerts")
        }
        assert held == HOLDS[role], role


def test_it_creates_the_roles_idempotently():
    """Running the data migration again adds nothing twice."""
    from importlib import import_module

    migration = import_module("collectors.migrations.0004_roles")
    before = {g.name: g.permissions.count() for g in Group.objects.all()}
    migration.create_roles(apps, None)
    after = {g.name: g.permissions.count() for g in Group.objects.all()}
    assert before == after
    assert set(ROLES) <= set(after)


def test_it_keeps_making_the_administrator(monkeypatch):
    monkeypatch.setenv("ADMIN_PASSWORD", "an-admin-password-42")
    call_command("ensure_admin")
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff
    assert admin.check_password("an-admin-password-42")
    assert admin.has_perm(MANAGE) and admin.has_perm(DOWNLOAD)
    call_command("ensure_admin")
    assert get_user_model().objects.filter(username="admin").count() == 1


def test_it_lets_a_role_user_sign_in_with_a_password(client):
    make_user("Viewer")
    response = client.post(
        reverse("login"), {"username": "viewer", "password": PASSWORD}
    )
    assert response.status_code == 302
    assert client.get(reverse("collection")).status_code == 200


@pytest.mark.parametrize("role", ["Viewer", "Collector manager"])
def test_it_checks_the_role_in_constant_queries(
    client, role, django_assert_num_queries
):
    """The role's permissions are read once per request, not once per row."""
    sign_in(client, role)

    def queries_for(n: int) -> int:
        for i in range(n):
            make_source(make_collector(f"{role} {n}-{i}"))
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(reverse("collection")).status_code == 200
        return len(ctx.captured_queries)

    few = queries_for(2)
    assert queries_for(10) == few
    with django_assert_num_queries(few):
        client.get(reverse("collection"))

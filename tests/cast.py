"""The small shared cast of test objects (instead of fixture files).

Factories take keyword overrides so each test says only what matters to it.
"""

from __future__ import annotations

from collectors.models import FieldDefinition, HostedCollector, Source, SourceField

API_KEY = "kb4-test-key-AbCdEfGh-0123456789-wxyz"


def make_collector(name: str = "Production", **kw) -> HostedCollector:
    kw.setdefault("category", "Security")
    return HostedCollector.objects.create(name=name, **kw)


def make_source(
    collector: HostedCollector,
    name: str = "KnowBe4 Events",
    *,
    api_key: str = API_KEY,
    base_url_key: str = "us",
    fields: dict[str, str] | None = None,
    **kw,
) -> Source:
    kw.setdefault("category", "Security/KnowBe4")
    source = Source(collector=collector, name=name, base_url_key=base_url_key, **kw)
    source.set_api_key(api_key)
    source.save()
    for key, value in (fields or {}).items():
        SourceField.objects.create(source=source, key=key, value=value)
    return source


def make_field(name: str, enabled: bool = True) -> FieldDefinition:
    return FieldDefinition.objects.create(name=name, enabled=enabled)


# The roles migration 0004_roles creates; None is a signed-in user with no role.
ROLES = ("Viewer", "Analyst", "Collector manager")
PASSWORD = "pw-role-user-123!"


def make_user(role: str | None = None, username: str | None = None, **kw):
    """A user in one of ROLES (or with none), password PASSWORD."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    username = username or (role or "norole").lower().replace(" ", "-")
    user = get_user_model().objects.create_user(username, password=PASSWORD, **kw)
    if role is not None:
        user.groups.add(Group.objects.get(name=role))
    return user

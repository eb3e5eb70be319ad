"""The small shared cast of test objects (instead of fixture files).

Factories take keyword overrides so each test says only what matters to it.
"""

from __future__ import annotations

from collectors.models import (
    FieldDefinition,
    HostedCollector,
    LogMessage,
    Source,
    SourceField,
)

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


def make_source_with_wrong_key(
    collector: HostedCollector, name: str = "Wrong key", **kw
) -> Source:
    """A source that KnowBe4 refused (401): in Error with the open health
    event that put it there, as the engine leaves it."""
    source = make_source(collector, name, **kw)
    refuse_key(source)
    return source


def refuse_key(source: Source):
    """Put `source` in Error as a 401 from KnowBe4 does; return the open
    ThirdPartyConfig health event that says so."""
    from collectors import health
    from collectors.choices import ErrorType, Severity, SourceState

    source.transition(SourceState.ERROR, "401", error_type=ErrorType.THIRD_PARTY_CONFIG)
    return health.record(
        source,
        ErrorType.THIRD_PARTY_CONFIG,
        code="http_401",
        message="KnowBe4 refused the API key (401 Unauthorized).",
        suggested_fix=health.FIX_CONFIG,
        severity=Severity.ERROR,
    )


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


def make_messages(
    source: Source, count: int, *, category: str | None = None, first: int = 0, **kw
):
    """`count` stored messages of `source` (numbered from `first`; one INSERT
    per 1,000), shaped like collected KnowBe4 events; returns the ids of all
    of the source's messages, in order."""
    import json
    import uuid
    from datetime import UTC, datetime, timedelta

    from collectors.models import LogMessage

    start = kw.pop("start", datetime(2026, 11, 1, tzinfo=UTC))
    rows = []
    for i in range(first, first + count):
        when = start + timedelta(seconds=i)
        event = {
            "id": str(uuid.UUID(int=(source.pk << 64) + i)),
            "user": {"email": f"user{i % 97}@example.org", "id": i % 97},
            "event_type": {"id": 7, "name": "phish_click"},
            "occurred_date": when.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "risk": {"level": i % 11},
            "description": f"event {i}",
        }
        rows.append(
            LogMessage(
                source=source,
                event_id=event["id"],
                raw=json.dumps(event, separators=(",", ":")),
                message_time=when,
                source_name=source.name,
                source_category=source.category if category is None else category,
                collector_name=source.collector.name,
                fields=kw.get("fields", {}),
            )
        )
    LogMessage.objects.bulk_create(rows, batch_size=1000)
    return list(
        LogMessage.objects.filter(source=source)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def make_output(url: str, name: str = "Forward", **kw):
    """An enabled output to `url` (NDJSON unless `format=` says otherwise)."""
    from outputs.models import Output

    token = kw.pop("token", "")
    kw.setdefault("format", "ndjson")
    output = Output(name=name, **kw)
    output.set_url(url)
    output.set_token(token)
    output.save()
    return output


def add_messages(
    source: Source,
    n: int,
    *,
    received,
    occurred=None,
    start: int = 0,
) -> None:
    """`n` collected messages of `source`, received at `received`."""
    from datetime import timedelta

    from collectors.models import LogMessage

    LogMessage.objects.bulk_create(
        LogMessage(
            source=source,
            event_id=f"evt-{start + i}",
            raw="{}",
            message_time=occurred or received - timedelta(days=1),
            receipt_time=received,
            source_name=source.name,
            source_category=source.category,
            collector_name=source.collector.name,
        )
        for i in range(n)
    )


SOURCE_FORM_KEY = "new-key-0123456789-LMNO"


def source_form_data(**overrides) -> dict:
    """A valid POST of the KnowBe4 source form; tests override what they exercise."""
    data = {
        "name": "KnowBe4 Prod",
        "description": "User events",
        "category": "Security/KnowBe4",
        "base_url_key": "us",
        "api_key": SOURCE_FORM_KEY,
        "initial_lookback_days": "7",
        "rescan_days": "1",
        "field_key": [],
        "field_value": [],
    }
    data.update(overrides)
    return data


def store_record(source: Source, data_type: str, record: dict, seen) -> None:
    """One KMSAT Reporting record version stored as the snapshot pipeline
    stores it (records.version: content hash, message time; records.follow:
    the identity after the record's latest version, nothing when unchanged)."""
    from collectors.knowbe4 import records
    from collectors.models import LogMessage

    read = records.version(data_type, record)
    last = (
        LogMessage.objects.filter(
            source=source, data_type=data_type, event_id=read.record_id
        )
        .order_by("-id")
        .first()
    )
    latest = last and records.Latest(last.content_hash, last.raw, last.user_email)
    v = records.follow(read, latest)
    if v is None:
        return
    LogMessage.objects.create(
        source=source,
        event_id=v.record_id,
        content_hash=v.content_hash,
        data_type=v.data_type,
        raw=v.raw,
        message_time=v.time or seen,
        receipt_time=seen,
        source_name=source.name,
        source_category=source.category,
        collector_name=source.collector.name,
        user_email=v.user_email,
        event_type=v.event_type,
    )


def history(source: Source, data_type: str, event_id: str) -> list[LogMessage]:
    """A Reporting record's versions in the order they were stored."""
    return list(
        LogMessage.objects.filter(
            source=source, data_type=data_type, event_id=event_id
        ).order_by("id")
    )

"""Poison records of a KMSAT Reporting snapshot: quarantined with their data
type (and parent, for a group's member), never failing their page, and
Reprocess stores them as Reporting record versions, exactly once, by the
snapshot reader's rule (a version when it differs from the latest)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import responses
from django.db import transaction
from django.urls import reverse

from collectors import engine, quarantine
from collectors.choices import HealthEventName
from collectors.knowbe4 import events, records
from collectors.models import HealthEvent, LogMessage, QuarantinedEvent, Source
from tests.cast import make_source

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
API = "https://us.api.knowbe4.com/v1"
GROUP = 4_100_000_000


def user(n: int, **overrides) -> dict:
    doc = {"id": 3_000_000_000 + n, "email": f"u{n}@example.com", "status": "active"}
    doc.update(overrides)
    return doc


# An id sent as a JSON number with a fraction: not a usable id today.
POISON_USER = user(1, id=3_000_000_001.0, email="float@example.com")
POISON_MEMBER = user(2, id=3_000_000_002.0, email="member@example.com")


@pytest.fixture
def frozen(time_machine):
    time_machine.move_to(NOW, tick=False)
    return time_machine


@pytest.fixture
def src(db, collector, settings, frozen):
    settings.KNOWBE4_RATE_LIMIT = False
    return make_source(
        collector,
        "KMSAT",
        api_key="kmsat-quarantine-tests-0123456789",
        base_url_key="kmsat-us",
        kind="reporting",
        reporting={"data_types": ["users", "groups"]},
    )


def serve() -> None:
    """One short page per list (so only page 1 is asked for)."""
    bodies = {
        "/users": [user(0), POISON_USER, user(3)],
        "/groups": [{"id": GROUP, "name": "Finance", "status": "active"}],
        f"/groups/{GROUP}/members": [user(0), POISON_MEMBER],
    }
    for path, body in bodies.items():
        responses.get(API + path, json=body)


def lenient_ids(monkeypatch):
    """The 'upgrade': an integral JSON number is read as the integer id."""
    real = records.version

    def version(data_type, record, *, parent=None):
        if isinstance(record, dict) and isinstance(record.get("id"), float):
            record = {**record, "id": int(record["id"])}
        return real(data_type, record, parent=parent)

    monkeypatch.setattr(records, "version", version)


def warning(source) -> HealthEvent | None:
    return HealthEvent.objects.filter(
        source=source,
        event_name=HealthEventName.EVENTS_NOT_STORED,
        resolved_at__isnull=True,
    ).first()


def versions(source) -> list[tuple]:
    return sorted(
        LogMessage.objects.filter(source=source).values_list("data_type", "event_id")
    )


@responses.activate
def test_it_quarantines_poison_records_with_their_data_type(src):
    serve()

    result = engine.run(src.pk)

    assert result.outcome == "caught_up", result
    assert versions(src) == [
        ("group", str(GROUP)),
        ("group_member", f"{GROUP}:3000000000"),
        ("user", "3000000000"),
        ("user", "3000000003"),
    ]
    kept = {q.data_type: q for q in QuarantinedEvent.objects.filter(source=src)}
    assert set(kept) == {"user", "group_member"}
    assert kept["group_member"].parent == str(GROUP)
    assert kept["user"].parent == ""
    assert json.loads(bytes(kept["user"].raw)) == POISON_USER
    assert warning(src).message == "2 events could not be stored."


@responses.activate
def test_it_reprocesses_them_as_record_versions_exactly_once(src, monkeypatch, frozen):
    serve()
    engine.run(src.pk)
    seen_at = NOW
    assert quarantine.reprocess(src) == (0, 2)  # nothing fixed yet
    assert warning(src) is not None

    frozen.shift(timedelta(hours=3))
    lenient_ids(monkeypatch)
    assert quarantine.reprocess(src) == (2, 0)
    assert quarantine.reprocess(src) == (0, 0)  # pressed twice: nothing more

    assert warning(src) is None
    member = LogMessage.objects.get(source=src, event_id=f"{GROUP}:3000000002")
    assert member.data_type == "group_member"
    fixed = {**POISON_MEMBER, "id": 3_000_000_002}
    assert member.content_hash == records.content_hash(fixed)
    assert json.loads(member.raw) == fixed
    assert member.user_email == "member@example.com"
    assert member.event_type == "Group member: active"
    # No time of its own: the time it was seen (quarantined), received now.
    assert member.message_time == seen_at
    assert member.receipt_time == NOW + timedelta(hours=3)
    assert member.source_category == src.category
    assert LogMessage.objects.filter(source=src, data_type="user").count() == 3
    assert not LogMessage.objects.filter(source=src, data_type="events").exists()


@responses.activate
def test_it_keeps_a_version_a_later_snapshot_stored_first_once(
    src, monkeypatch, frozen
):
    serve()
    engine.run(src.pk)
    lenient_ids(monkeypatch)
    Source.objects.filter(pk=src.pk).update(next_attempt_at=None)
    assert engine.run(src.pk).stored == 2  # the upgraded reader stores them

    # Stored already: nothing new, and the rows leave the quarantine.
    assert quarantine.reprocess(src) == (0, 0)
    assert not QuarantinedEvent.objects.filter(source=src).pending().exists()

    assert LogMessage.objects.filter(source=src).count() == 6
    assert warning(src) is None


@responses.activate
def test_it_keeps_a_record_that_still_cannot_be_stored_with_its_reason(
    src, monkeypatch
):
    serve()
    engine.run(src.pk)
    long_id = user(9, id="9" * 65)
    QuarantinedEvent.objects.filter(source=src, data_type="user").update(
        raw=json.dumps(long_id).encode()
    )
    lenient_ids(monkeypatch)

    assert quarantine.reprocess(src) == (1, 1)

    left = QuarantinedEvent.objects.get(source=src, reprocessed_at=None)
    assert left.data_type == "user" and "over 64 characters" in left.reason
    assert warning(src).message == "1 event could not be stored."


@responses.activate
def test_it_lists_them_on_the_source_page_and_reprocesses_by_post(
    src, admin_client, monkeypatch
):
    serve()
    engine.run(src.pk)
    html = admin_client.get(src.get_absolute_url()).content.decode()
    assert f"(group_member of {GROUP})" in html and "poison_record" in html
    lenient_ids(monkeypatch)

    url = reverse("source-reprocess", args=[src.pk])
    response = admin_client.post(url, follow=True)

    assert "2 events stored" in response.content.decode()
    assert warning(src) is None
    assert LogMessage.objects.filter(source=src).count() == 6


def snapshots_serving(src, served: dict):
    """A snapshot run of `src` against `served["users"]` (as it is when the
    run asks) and no groups: returns the function that runs one, due at once,
    and says how many versions it stored."""
    responses.add_callback(
        responses.GET,
        API + "/users",
        callback=lambda request: (200, {}, json.dumps(served["users"])),
    )
    responses.get(API + "/groups", json=[])

    def snapshot() -> int:
        Source.objects.filter(pk=src.pk).update(next_attempt_at=None)
        return engine.run(src.pk).stored

    return snapshot


def quarantine_user_3(raw: bytes) -> None:
    """Keep `raw` as a poison record of the users list, as a snapshot would."""
    with transaction.atomic():
        quarantine.add(
            Source.objects.get(name="KMSAT"),
            NOW.date(),
            1,
            [events.Rejected(raw, "poison_record", "no id", data_type="user")],
        )


@responses.activate
def test_it_reprocesses_by_the_rule_of_versions(src, monkeypatch, frozen):
    """User 3 went A -> B; then A came back as a poison record (quarantined).
    Reprocess stores it as a third version following B (content equal to an
    older version is still a change); pressed again, nothing; a snapshot
    that reads A then has nothing new, and one that reads B stores B again."""
    served = {"users": [user(3)]}
    snapshot = snapshots_serving(src, served)

    snapshot()
    served["users"] = [user(3, status="archived")]
    frozen.shift(timedelta(hours=1))
    snapshot()
    frozen.shift(timedelta(hours=1))
    quarantine_user_3(json.dumps(user(3, id=3_000_000_003.0)).encode())  # A
    quarantined_at = datetime.now(UTC)
    lenient_ids(monkeypatch)
    frozen.shift(timedelta(hours=1))
    assert quarantine.reprocess(src) == (1, 0)
    assert quarantine.reprocess(src) == (0, 0)

    three = list(
        LogMessage.objects.filter(source=src, event_id="3000000003").order_by("id")
    )
    statuses = [json.loads(v.raw)["status"] for v in three]
    assert statuses == ["active", "archived", "active"]
    assert three[2].raw == three[0].raw
    after_b = records.follow(
        records.version("user", user(3)),
        records.Latest(three[1].content_hash, three[1].raw),
    )
    assert three[2].content_hash == after_b.content_hash != three[0].content_hash
    assert three[2].message_time == quarantined_at

    served["users"] = [user(3)]
    assert snapshot() == 0
    served["users"] = [user(3, status="archived")]
    assert snapshot() == 1


@pytest.mark.parametrize("later", ["unchanged", "changed"])
@responses.activate
def test_it_reprocess_never_makes_a_version_read_over_since_the_latest(
    src, monkeypatch, frozen, later
):
    """User 3 is B, then comes as a poison record (quarantined), then a
    snapshot reads it cleanly: as B again (nothing new to store) or as C.
    The quarantined version is older than what is known of the record, so
    Reprocess takes it out of quarantine without storing it: stored, it would
    become the latest version, which the Overview shows as current."""
    served = {"users": [user(3, status="archived")]}
    snapshot = snapshots_serving(src, served)

    assert snapshot() == 1
    frozen.shift(timedelta(hours=1))
    quarantine_user_3(json.dumps(user(3, id=3_000_000_003.0)).encode())
    frozen.shift(timedelta(hours=1))
    if later == "changed":
        served["users"] = [user(3, status="suspended")]
    assert snapshot() == (1 if later == "changed" else 0)
    lenient_ids(monkeypatch)
    frozen.shift(timedelta(hours=1))

    assert quarantine.reprocess(src) == (0, 0)

    latest = LogMessage.objects.filter(source=src, event_id="3000000003").latest("id")
    assert json.loads(latest.raw)["status"] == (
        "suspended" if later == "changed" else "archived"
    )
    assert not QuarantinedEvent.objects.filter(source=src).pending().exists()
    assert warning(src) is None

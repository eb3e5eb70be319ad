"""Deletions in a KMSAT Reporting change history: a record present in the
previous complete read of its list and absent from the next is stored once as
a tombstone version; one that comes back is stored again, even with content
equal to a version before its deletion, and its later changes follow the same
rule as any (a version when it differs from the latest); only complete reads
tombstone. Versions stored before that rule (identified by their content hash
alone) are not stored again."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from collectors.engine import run
from collectors.knowbe4 import records
from collectors.models import LogMessage, Source
from tests.cast import history, make_source
from tests.sandbox_support import REPORTING_KEY, running_sandbox

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
SALES = 4_100_000_002  # the group user 7 (the sandbox's mover) leaves
MOVER = f"{SALES}:3000000007"
ARCHIVED = 3_000_000_005  # archived two hours after the origin


@pytest.fixture
def frozen(time_machine):
    time_machine.move_to(NOW, tick=False)
    return time_machine


@pytest.fixture
def sb(frozen, settings):
    settings.KNOWBE4_RATE_LIMIT = False
    with running_sandbox(rate_limit=False, reporting={"origin": NOW.timestamp()}) as s:
        settings.KNOWBE4_EXTRA_BASE_URLS = [f"Sandbox|{s.url}"]
        yield s


def reporting_source(collector, base_url_key: str, data_types: list[str]) -> Source:
    return make_source(
        collector,
        "KMSAT",
        api_key=REPORTING_KEY,
        base_url_key=base_url_key,
        kind="reporting",
        reporting={"data_types": data_types},
    )


def snapshot(source: Source, **kw):
    Source.objects.filter(pk=source.pk).update(next_attempt_at=None)
    result = run(source.pk, **kw)
    assert result.outcome == "caught_up", result
    return result


def tombstones(source: Source) -> list[tuple[str, str]]:
    return sorted(
        LogMessage.objects.filter(
            source=source, event_type__endswith=": deleted"
        ).values_list("data_type", "event_id")
    )


def test_it_stores_a_removed_group_member_once_and_its_return(sb, collector, frozen):
    source = reporting_source(collector, "x-sandbox", ["groups"])
    snapshot(source)
    assert tombstones(source) == []
    before = history(source, "group_member", MOVER)[-1]

    frozen.shift(timedelta(days=1, hours=1))  # user 7 left Sales; 5 is archived
    seen_gone = datetime.now(UTC)
    snapshot(source)

    assert tombstones(source) == [
        ("group_member", f"4100000000:{ARCHIVED}"),
        ("group_member", MOVER),
        ("group_member", f"4100000005:{ARCHIVED}"),
    ]
    stone = history(source, "group_member", MOVER)[-1]
    assert json.loads(stone.raw) == {
        "id": MOVER,
        "deleted": True,
        "data_type": "group_member",
        "previous_version": before.content_hash,
    }
    assert stone.message_time == seen_gone  # when the absence was seen
    assert stone.event_type == "Group member: deleted"
    assert stone.user_email == before.user_email
    assert stone.source_category == source.category

    # Two more complete snapshots without it: still one tombstone each.
    for hours in (2, 20):
        frozen.shift(timedelta(hours=hours))
        snapshot(source)
    assert len(tombstones(source)) == 3
    assert history(source, "group_member", MOVER)[-1].pk == stone.pk

    frozen.shift(timedelta(days=2))  # past three days after the origin: back
    snapshot(source)
    back = history(source, "group_member", MOVER)[-1]
    assert back.pk > stone.pk and not records.is_tombstone(back.raw)
    assert json.loads(back.raw)["id"] == 3_000_000_007
    assert len(tombstones(source)) == 3
    source.refresh_from_db()
    assert MOVER not in source.snapshot["gone"]["group_member"]
    assert f"4100000000:{ARCHIVED}" in source.snapshot["gone"]["group_member"]
    assert "seen" not in source.snapshot


API = "https://us.api.knowbe4.com/v1/users"


def user(n: int, **overrides) -> dict:
    doc = {"id": 3_000_000_000 + n, "email": f"u{n}@example.com", "status": "active"}
    return {**doc, **overrides}


class Users:
    """`/v1/users` served from a list that the test edits between snapshots
    (500 per page, as asked for)."""

    def __init__(self, users: list[dict]) -> None:
        self.users = users
        responses.add_callback(responses.GET, API, callback=self.answer)

    def answer(self, request):
        query = parse_qs(urlsplit(request.url).query)
        page, per_page = int(query["page"][0]), int(query["per_page"][0])
        body = self.users[(page - 1) * per_page : page * per_page]
        return 200, {"Content-Type": "application/json"}, json.dumps(body)


@pytest.fixture
def api_source(db, collector, settings, frozen):
    settings.KNOWBE4_RATE_LIMIT = False
    return reporting_source(collector, "kmsat-us", ["users"])


@responses.activate
def test_it_stores_a_return_with_content_equal_to_before_its_deletion(
    api_source, frozen
):
    served = Users([user(1), user(2)])
    snapshot(api_source)
    served.users = [user(1)]  # user 2 deleted
    snapshot(api_source)
    snapshot(api_source)
    served.users = [user(1), user(2)]  # back, exactly as before
    snapshot(api_source)
    snapshot(api_source)  # unchanged since its return: nothing new
    served.users = [user(1)]  # deleted again
    snapshot(api_source)

    two = history(api_source, "user", "3000000002")
    assert [records.is_tombstone(v.raw) for v in two] == [False, True, False, True]
    assert two[0].raw == two[2].raw  # the same content ...
    assert len({v.content_hash for v in two}) == 4  # ... four identities
    stone = records.Latest(two[1].content_hash, two[1].raw)
    returned = records.follow(records.version("user", user(2)), stone)
    assert two[2].content_hash == returned.content_hash
    assert json.loads(two[3].raw)["previous_version"] == two[2].content_hash
    assert len(history(api_source, "user", "3000000001")) == 1


@responses.activate
def test_it_tombstones_only_after_a_complete_read_of_the_list(api_source, frozen):
    everyone = [user(n) for n in range(1, 752)]  # two pages of 500
    served = Users(everyone)
    snapshot(api_source)
    served.users = [
        u for u in everyone if u["id"] not in (3_000_000_003, 3_000_000_700)
    ]

    # The snapshot stops after its first page: nothing is deleted yet, though
    # the second page's users (and the deleted ones) were not read.
    frozen.shift(timedelta(hours=1))
    Source.objects.filter(pk=api_source.pk).update(next_attempt_at=None)
    result = run(api_source.pk, max_pages=1)
    assert result.pages == 1 and tombstones(api_source) == []
    api_source.refresh_from_db()
    assert len(api_source.snapshot["seen"]) == 500

    frozen.shift(timedelta(minutes=5))  # resumed later: page 2, then deletions
    snapshot(api_source)

    assert tombstones(api_source) == [("user", "3000000003"), ("user", "3000000700")]
    api_source.refresh_from_db()
    assert "seen" not in api_source.snapshot
    assert set(api_source.snapshot["gone"]["user"]) == {"3000000003", "3000000700"}


B = {"status": "archived"}  # user 2's other content


def contents(source: Source, event_id: str) -> list[str]:
    """A record's versions, in order: "A" (active), "B" (archived) or "T"."""
    out = []
    for v in history(source, "user", event_id):
        status = json.loads(v.raw).get("status")
        out.append("T" if records.is_tombstone(v.raw) else "AB"[status != "active"])
    return out


@responses.activate
def test_it_stores_changes_after_a_return_by_the_same_rule(api_source, frozen):
    """A, deleted, back as A, then B, then A: five versions; A again: none."""
    served = Users([user(1), user(2)])
    snapshot(api_source)
    for users in ([user(1)], [user(1), user(2)], [user(1), user(2, **B)]):
        served.users = users
        snapshot(api_source)
    served.users = [user(1), user(2)]
    assert snapshot(api_source).stored == 1
    assert snapshot(api_source).stored == 0
    assert contents(api_source, "3000000002") == ["A", "T", "A", "B", "A"]
    two = history(api_source, "user", "3000000002")
    assert len({v.content_hash for v in two}) == 5
    assert two[0].raw == two[2].raw == two[4].raw


@responses.activate
def test_it_stores_a_record_delivered_twice_in_one_read_once(api_source, frozen):
    """The API pages by offset: a record can be on two pages of one read (a
    record before it deleted meanwhile). Equal to its latest version the
    second time, it is no new version."""
    everyone = [user(n) for n in range(1, 501)]
    served = Users([*everyone, user(500), user(501)])
    assert snapshot(api_source).stored == 501
    served.users = [*everyone[:-1], user(500, **B), user(500, **B), user(501)]
    assert snapshot(api_source).stored == 1
    assert contents(api_source, "3000000500") == ["A", "B"]


def store_plainly(source: Source, record: dict, at: datetime) -> None:
    """A version as stored before versions followed each other: identified
    by its content hash alone (`records.version`'s)."""
    v = records.version("user", record)
    LogMessage.objects.create(
        source=source,
        event_id=v.record_id,
        content_hash=v.content_hash,
        data_type="user",
        raw=v.raw,
        message_time=at,
        receipt_time=at,
        source_name=source.name,
        collector_name=source.collector.name,
        user_email=v.user_email,
        event_type=v.event_type,
    )


@responses.activate
def test_it_keeps_versions_stored_before_the_rule_without_a_duplicate(
    api_source, frozen
):
    """Stored before the upgrade: user 1 as A, user 2 as A then B, by their
    content hashes. Unchanged since, nothing is stored again; a change back
    to A is a new version after B."""
    store_plainly(api_source, user(1), NOW)
    store_plainly(api_source, user(2), NOW)
    store_plainly(api_source, user(2, **B), NOW)
    served = Users([user(1), user(2, **B)])
    assert snapshot(api_source).stored == 0
    served.users = [user(1), user(2)]
    assert snapshot(api_source).stored == 1
    assert contents(api_source, "3000000002") == ["A", "B", "A"]
    assert len(history(api_source, "user", "3000000001")) == 1


@responses.activate
def test_it_tombstones_nothing_after_a_read_with_a_poison_record(api_source, frozen):
    """User 2 comes back without a usable id: it is quarantined, and which
    record it was is unknown, so its absence proves nothing. Only the next
    clean read of the list stores deletions."""
    everyone = [user(n) for n in range(1, 600)]  # two pages of 500
    served = Users(everyone)
    snapshot(api_source)

    frozen.shift(timedelta(hours=1))
    broken = {**user(2), "id": None}  # first page: a poison record
    served.users = [user(1), broken, *everyone[2:598]]  # and user 599 is gone
    snapshot(api_source)
    assert tombstones(api_source) == []
    assert api_source.quarantined.count() == 1

    frozen.shift(timedelta(hours=1))
    served.users = [user(1), *everyone[2:598]]  # user 2 and user 599 gone
    snapshot(api_source)
    assert tombstones(api_source) == [("user", "3000000002"), ("user", "3000000599")]

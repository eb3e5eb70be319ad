"""A Reporting source collected from the sandbox through the engine pipeline:
every data type as a change history, exactly once per version (a change back
to older content a version too), resumable at any progress point, recipients
only for recent tests, the limits kept."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest

from collectors import crypto, ledger, lifecycle, ratelimit
from collectors.choices import ErrorType
from collectors.engine import run
from collectors.knowbe4 import records
from collectors.knowbe4.sandbox import key_hash
from collectors.knowbe4.sandbox_reporting import ReportingLimits
from collectors.models import ApiKeyUsage, HealthEvent, LogMessage, Source
from tests.cast import history, make_source
from tests.sandbox_support import REPORTING_KEY, running_sandbox

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ALL = ["phishing", "users", "groups", "training", "account"]
TYPES = {
    "phishing_test",
    "phishing_recipient",
    "callback_test",
    "callback_recipient",
    "user",
    "group",
    "group_member",
    "training_campaign",
    "training_enrollment",
    "account",
    "account_risk_score",
}


@pytest.fixture
def frozen(time_machine):
    """Time stands still: the sandbox's data and our clock agree exactly."""
    time_machine.move_to(NOW, tick=False)
    return time_machine


@pytest.fixture
def sb(frozen, settings):
    settings.KNOWBE4_RATE_LIMIT = False  # frozen time: no 4/s limiter sleeps
    with running_sandbox(rate_limit=False, reporting={"origin": NOW.timestamp()}) as s:
        settings.KNOWBE4_EXTRA_BASE_URLS = [f"Sandbox|{s.url}"]
        yield s


def source_for(collector, name="KMSAT", key=REPORTING_KEY, **conf) -> Source:
    conf.setdefault("data_types", ALL)
    return make_source(
        collector,
        name,
        api_key=key,
        base_url_key="x-sandbox",
        kind="reporting",
        reporting=conf,
    )


def snapshot(source: Source, **kw):
    """One run, made due first (as the schedule would at the poll interval)."""
    Source.objects.filter(pk=source.pk).update(next_attempt_at=None)
    return run(source.pk, **kw)


def versions(source: Source) -> list[tuple]:
    return list(
        LogMessage.objects.filter(source=source).values_list(
            "data_type", "event_id", "content_hash"
        )
    )


def api_paths(sb) -> list[str]:
    return [r.path for r in sb.requests if r.path.startswith("/v1/")]


def test_it_stores_every_data_type_and_an_unchanged_record_once(sb, collector):
    source = source_for(collector)
    result = snapshot(source)
    assert result.outcome == "caught_up", result
    stored = versions(source)
    assert {v[0] for v in stored} == TYPES
    counts = Counter(v[0] for v in stored)
    assert counts["user"] == 60 and counts["account"] == 1
    source.refresh_from_db()
    assert source.state == "collecting"
    assert source.next_attempt_at == NOW + timedelta(hours=24)
    again = snapshot(source)
    assert again.requests == result.requests and again.stored == 0
    assert sorted(versions(source)) == sorted(stored)


def test_it_stores_a_record_again_when_it_changed(sb, collector, frozen):
    source = source_for(collector, data_types=["phishing", "users", "training"])
    snapshot(source)
    before = Counter(v[0] for v in versions(source))
    frozen.shift(timedelta(days=1))
    snapshot(source)
    stored = versions(source)
    per_record = Counter((t, i) for t, i, _ in stored)
    assert len(stored) == len(set(stored))
    # Risk scores move daily: every user has a second version ...
    assert Counter(v[0] for v in stored)["user"] == 2 * before["user"]
    # ... and the running test's recipients opened or clicked meanwhile.
    assert any(n == 2 for (t, _), n in per_record.items() if t == "phishing_recipient")
    archived = LogMessage.objects.get(
        source=source,
        data_type="user",
        raw__contains='"status":"archived"',
        event_id=str(3_000_000_005),
    )
    assert archived.message_time == NOW + timedelta(hours=2)  # its archived_at


TOGGLED = 3_000_000_001  # user 1, in groups 1 and 5


@pytest.fixture
def toggle(sb, monkeypatch):
    """User 1 as the test sets it: `state["comment"]` is its comment, and its
    time-moving fields are pinned, so its content is the comment's alone (in
    `/v1/users` and in its groups' members alike)."""
    data = sb.reporting.data
    real, state = data.user, {"comment": "A"}

    def user(u, now, **kw):
        out = real(u, now, **kw)
        if out["id"] == TOGGLED:
            out.update(
                comment=state["comment"], current_risk_score=10.0, last_sign_in=None
            )
        return out

    monkeypatch.setattr(data, "user", user)
    return state


@pytest.mark.parametrize(
    ("comments", "stored"),
    [("ABA", [1, 1, 1]), ("AAA", [1, 0, 0]), ("ABAB", [1, 1, 1, 1])],
)
def test_it_stores_each_change_even_back_to_older_content(
    sb, collector, frozen, toggle, comments, stored
):
    """A -> B -> A is three versions, A -> A -> A one, A -> B -> A -> B four:
    a version is stored when it differs from the record's latest one."""
    source = source_for(collector, data_types=["users"])
    new = []
    for comment in comments:
        toggle["comment"] = comment
        new.append(snapshot(source).stored)
        frozen.shift(timedelta(minutes=1))
    # The first snapshot stores all 60 users; the others only user 1's changes.
    assert new == [60 + stored[0] - 1, *stored[1:]]
    versions_of = history(source, "user", str(TOGGLED))
    kept = [json_of(v)["comment"] for v in versions_of]
    assert kept == [c for i, c in enumerate(comments) if i == 0 or c != comments[i - 1]]
    identities = [v.content_hash for v in versions_of]
    assert len(set(identities)) == len(identities)
    assert identities[0] == records.content_hash(json_of(versions_of[0]))
    for before, after in zip(versions_of, versions_of[1:], strict=False):
        latest = records.Latest(before.content_hash, before.raw)
        read = records.version("user", json_of(after))
        assert records.follow(read, latest).content_hash == after.content_hash
    assert LogMessage.objects.filter(source=source).count() == 59 + len(kept)


def json_of(message: LogMessage) -> dict:
    return json.loads(message.raw)


def test_it_times_a_version_by_the_record_where_it_has_a_time(sb, collector):
    source = source_for(collector, data_types=["phishing", "training", "groups"])
    snapshot(source)
    passed = LogMessage.objects.filter(
        source=source, data_type="training_enrollment", event_type__endswith="Passed"
    ).first()
    assert passed.message_time < NOW
    assert passed.message_time.isoformat()[:19] in passed.raw.replace("Z", "")
    group = LogMessage.objects.filter(source=source, data_type="group").first()
    assert group.message_time == NOW  # no time of its own: when seen


@pytest.mark.parametrize("kill_at", [1, 2, 5, 9, 14])
def test_it_resumes_a_killed_snapshot_storing_each_version_once(sb, collector, kill_at):
    reference = source_for(collector, "Reference")
    snapshot(reference)
    source = source_for(collector, "Killed")
    real, calls = lifecycle.commit_page, {"n": 0}

    def dies(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == kill_at:  # after the page's INSERT, before its commit
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    with mock.patch.object(lifecycle, "commit_page", dies):
        assert snapshot(source).outcome != "caught_up"
    # resumed in short runs: a stop at every other progress point too
    for _ in range(50):
        if snapshot(source, max_pages=2).outcome == "caught_up":
            break
    stored = versions(source)
    assert len(stored) == len(set(stored))
    assert sorted(stored) == sorted(versions(reference))


@pytest.mark.parametrize("kill_at", [1, 2, 3, 5, 8, 9])
def test_it_resumes_a_killed_snapshot_with_deletions_storing_each_once(
    sb, collector, frozen, toggle, kill_at
):
    """A day on, user 5 is archived (out of groups 0 and 5) and user 7 left
    group 2: the tombstones come with the members' last pages, so a kill at
    any of them (or before) rolls them back with the page, and the resumed
    snapshot stores each exactly once. User 1 goes A -> B -> A meanwhile (in
    the users list and as a member of groups 1 and 5): its return to A is
    stored once, by the killed snapshot too."""
    kinds = ["users", "groups"]
    reference = source_for(collector, "Reference", data_types=kinds)
    source = source_for(collector, "Killed", data_types=kinds)
    for comment in "AB":
        toggle["comment"] = comment
        snapshot(reference)
        snapshot(source)
        frozen.shift(timedelta(minutes=5))
    frozen.shift(timedelta(days=1, hours=1))
    toggle["comment"] = "A"
    snapshot(reference)
    real, calls = lifecycle.commit_page, {"n": 0}

    def dies(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == kill_at:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    with mock.patch.object(lifecycle, "commit_page", dies):
        assert snapshot(source).outcome != "caught_up"
    for _ in range(50):
        if snapshot(source, max_pages=2).outcome == "caught_up":
            break
    stored = versions(source)
    assert len(stored) == len(set(stored))
    assert sorted(stored) == sorted(versions(reference))
    deleted = LogMessage.objects.filter(source=source, event_type__endswith="deleted")
    assert deleted.count() == 3
    for data_type, event_id in [
        ("user", str(TOGGLED)),
        ("group_member", f"4100000001:{TOGGLED}"),
        ("group_member", f"4100000005:{TOGGLED}"),
    ]:
        versions_of = history(source, data_type, event_id)
        assert [json_of(v)["comment"] for v in versions_of] == ["A", "B", "A"]
        assert len({v.content_hash for v in versions_of}) == 3
    source.refresh_from_db()
    assert "seen" not in source.snapshot
    assert len(source.snapshot["gone"]["group_member"]) == 3


def recipients_asked(sb) -> list[tuple[str, str]]:
    return [
        (r.path, r.query)
        for r in sb.requests
        if r.path.endswith("/recipients") and r.path.startswith("/v1/")
    ]


def test_it_reads_recipients_only_of_running_or_recent_tests(sb, collector):
    snapshot(source_for(collector, data_types=["phishing"]))
    recent = recipients_asked(sb)
    sb.clear_requests()
    snapshot(
        source_for(collector, "Today only", data_types=["phishing"], recipients_days=0)
    )
    running = recipients_asked(sb)
    tests = sb.reporting.data
    # Test 0 runs; 1 and 2 closed within 14 days, and so did 3, a callback
    # test (asked for as one); older ones are not re-read.
    paths = [
        f"/v1/phishing/security_tests/{6_000_000_000 + t}/recipients"
        for t in (0, 1, 2, 3)
    ]
    assert [p for p, _ in recent] == paths
    assert ["campaign_type=callback" in q for _, q in recent] == [False] * 3 + [True]
    assert running == recent[:1]
    assert tests.test_start(4) < NOW.timestamp() - 17 * 86_400


def test_it_reads_callback_tests_as_their_own_data_type(sb, collector):
    source = source_for(collector, data_types=["phishing"])
    snapshot(source)
    lists = [r.query for r in sb.requests if r.path == "/v1/phishing/security_tests"]
    assert len(lists) == 2 and "campaign_type=callback" in lists[1]
    assert "campaign_type" not in lists[0]
    stored = LogMessage.objects.filter(source=source)
    callback = stored.filter(data_type="callback_test")
    phishing = stored.filter(data_type="phishing_test")
    assert list(callback.values_list("event_id", flat=True)) == [str(6_000_000_003)]
    assert str(6_000_000_003) not in set(phishing.values_list("event_id", flat=True))
    assert phishing.count() == 7  # the other tests, the one in error included
    recipients = stored.filter(data_type="callback_recipient")
    assert recipients.exists()
    assert all(
        '"pst_id":6000000003' in raw for raw in recipients.values_list("raw", flat=True)
    )
    assert not stored.filter(
        data_type="phishing_recipient", raw__contains='"pst_id":6000000003'
    ).exists()
    assert callback.get().event_type.startswith("Callback security test: ")


def test_it_stops_at_a_refused_key_with_no_further_request(sb, collector):
    source = source_for(collector, key="not-the-reporting-key")
    result = snapshot(source)
    assert result.requests == 1 and len(sb.requests) == 1
    source.refresh_from_db()
    assert source.error_type == ErrorType.THIRD_PARTY_CONFIG
    assert snapshot(source).requests == 0
    assert len(sb.requests) == 1


class FrozenSleep:
    """The limiter's clock with time frozen: its sleeps move the frozen clock
    (what a real wait would do), so the verdicts never depend on speed."""

    def __init__(self, frozen) -> None:
        self.frozen = frozen

    def __getattr__(self, name):
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        self.frozen.shift(seconds)


@pytest.fixture
def limited(frozen, settings, monkeypatch):
    """A sandbox with all three Reporting limits on, and the real limiter and
    ledger in the database (their clock the frozen one)."""
    settings.REDIS_URL = ""
    settings.KNOWBE4_RATE_LIMIT = True
    monkeypatch.setattr(ratelimit, "time", FrozenSleep(frozen))
    with running_sandbox(
        reporting={"origin": NOW.timestamp(), "daily_limit": 2005}
    ) as s:
        settings.KNOWBE4_EXTRA_BASE_URLS = [f"Sandbox|{s.url}"]
        yield s


def run_until_done(sources: list[Source], frozen) -> list:
    """Runs the sources at their next attempt times (the earliest first)
    until each one's snapshot is done."""
    results, done = [], set()
    for _ in range(60):
        pending = [s for s in sources if s.pk not in done]
        if not pending:
            return results
        for source in pending:
            source.refresh_from_db()
        source = min(pending, key=lambda s: s.next_attempt_at or NOW)
        if source.next_attempt_at and source.next_attempt_at > datetime.now(UTC):
            frozen.move_to(source.next_attempt_at)
        results.append(run(source.pk))
        source.refresh_from_db()
        if results[-1].outcome == "caught_up" and not source.snapshot.get("tasks"):
            done.add(source.pk)
    raise AssertionError(f"not done: {results}")


def in_any_window(times: list[float], seconds: float) -> int:
    """The most requests in any `seconds`-long window ending at a request."""
    return max(sum(1 for u in times if t - seconds < u <= t) for t in times)


def test_it_never_passes_the_burst_limit(limited, frozen, collector):
    """Two sources sharing a Reporting key share its 50 requests a minute."""
    # 45 requests with the key in the last 30 s already, as the sandbox saw.
    before = [NOW.timestamp() - 30 + i * 0.5 for i in range(45)]
    limits = ReportingLimits(2005)
    limits.minute.extend(before)
    limits.window_start, limits.used = before[0], 45
    limited.state.reporting.limits[key_hash(REPORTING_KEY)] = limits
    fingerprint = crypto.key_fingerprint(REPORTING_KEY)
    ApiKeyUsage.objects.create(
        api="reporting", key_hash=fingerprint, recent=[[t, "x", True] for t in before]
    )
    a = source_for(collector, "A")
    b = source_for(collector, "B", data_types=["users", "groups"])
    results = run_until_done([a, b], frozen)
    assert sum(1 for r in results if r.requests) >= 3  # both waited for the minute
    assert {r.status for r in limited.requests} == {200}
    times = before + [r.time for r in limited.requests]
    assert in_any_window(times, 60.0) == 50
    assert in_any_window([r.time for r in limited.requests], 1.0) <= 4
    sent = len(limited.requests)
    assert ledger.window("reporting", fingerprint).used == sent  # each counted
    a.refresh_from_db()
    b.refresh_from_db()
    counted = [*a.snapshot["requests"].values(), *b.snapshot["requests"].values()]
    assert sum(counted) == sent  # per data type, for the projection
    assert ledger.window("events", fingerprint).used == 0  # another API's key


def test_it_waits_out_the_rolling_daily_limit_with_a_warning(
    limited, frozen, collector
):
    """The rolling 24 h limit of a key, shared by its sources: never passed,
    a Warning with the time it frees up, collection resumed then."""
    started = NOW - timedelta(hours=1)
    limits = ReportingLimits(2005)
    limits.window_start, limits.used = started.timestamp(), 2000
    limited.state.reporting.limits[key_hash(REPORTING_KEY)] = limits
    fingerprint = crypto.key_fingerprint(REPORTING_KEY)
    ApiKeyUsage.objects.create(
        api="reporting",
        key_hash=fingerprint,
        used=2000,
        window_opened_at=started,
        window_resets_at=started + timedelta(hours=24),
    )
    a = source_for(collector, "A", licensed_users=5)
    b = source_for(collector, "B", data_types=["users"])
    run(a.pk)
    assert len(limited.requests) == 5  # 2,000 + 5 licensed users
    assert run(b.pk).outcome == "budget_spent"
    assert len(limited.requests) == 5  # B sent nothing past the shared budget
    frees = started + timedelta(hours=24)
    for source in (a, b):
        source.refresh_from_db()
        assert source.next_attempt_at == frees
        warning = HealthEvent.objects.get(source=source, resolved_at=None)
        assert warning.severity == "warning" and "Reporting" in warning.message
        assert frees.strftime("%H:%M UTC") in warning.message
        assert "2,000 requests plus the licensed users" in warning.suggested_fix
    run_until_done([a, b], frozen)
    assert {r.status for r in limited.requests} == {200}
    assert not HealthEvent.objects.filter(resolved_at=None).exists()
    window = ledger.window("reporting", fingerprint)
    assert window.opened_at >= frees
    assert window.used == len(limited.requests) - 5


def test_it_waits_out_a_daily_limit_spent_elsewhere_with_a_warning(
    limited, frozen, collector
):
    """KnowBe4's own 429 for the daily limit (the key spent by something
    else): a Warning with the time it frees up, the key blocked for every
    Reporting source using it until then, no second request."""
    started = NOW - timedelta(hours=3)
    limits = ReportingLimits(2005)
    limits.window_start, limits.used = started.timestamp(), 2005
    limited.state.reporting.limits[key_hash(REPORTING_KEY)] = limits
    a = source_for(collector, "A", licensed_users=5)
    b = source_for(collector, "B")
    assert run(a.pk).outcome == "quota_exceeded"
    assert [r.status for r in limited.requests] == [429]
    frees = started + timedelta(hours=24)
    fingerprint = crypto.key_fingerprint(REPORTING_KEY)
    blocked = ratelimit.quota_blocked_until(fingerprint, "reporting")
    assert abs(blocked - frees) <= timedelta(seconds=1)
    assert ratelimit.quota_blocked_until(fingerprint, "events") is None
    a.refresh_from_db()
    assert a.next_attempt_at == blocked
    warning = HealthEvent.objects.get(source=a, resolved_at=None)
    assert warning.severity == "warning" and warning.error_code == "limit_exceeded"
    assert blocked.strftime("%Y-%m-%d %H:%M UTC") in warning.message
    assert run(b.pk).outcome == "quota_exceeded"
    assert len(limited.requests) == 1  # B waits too, without a request

"""The sandbox's Reporting API over real HTTP, read with the real client:
every endpoint, paging, a deterministic data set that changes as time moves,
the three limits, its own keys and fault injection."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import requests

from collectors.knowbe4.reporting import (
    ConfigError,
    NotFound,
    QuotaExceeded,
    ReportingClient,
    TooManyRequests,
    TransientError,
)
from collectors.knowbe4.sandbox import key_hash
from collectors.knowbe4.sandbox_reporting import DAILY_BASE, ReportingLimits
from tests.sandbox_support import REPORTING_KEY, SANDBOX_KEY, running_sandbox

NOW = datetime(2026, 5, 20, 15, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)
LIST_ENDPOINTS = [
    "/v1/users",
    "/v1/groups",
    "/v1/phishing/campaigns",
    "/v1/phishing/security_tests",
    "/v1/training/store_purchases",
    "/v1/training/policies",
    "/v1/training/campaigns",
    "/v1/training/enrollments",
]


@pytest.fixture
def frozen(time_machine):
    """Freeze time (the sandbox's clock too) at NOW."""
    time_machine.move_to(NOW, tick=False)
    return time_machine


def sandbox(**reporting):
    return running_sandbox(rate_limit=False, reporting=reporting)


def every(client: ReportingClient, path: str, **params) -> list:
    return [r for p in client.iter_pages(path, params=params) for r in p.records]


def test_it_serves_every_endpoint_as_bare_arrays_and_objects(frozen):
    with sandbox() as sb, ReportingClient(sb.url, REPORTING_KEY) as c:
        for path in LIST_ENDPOINTS:
            assert every(c, path), path
        user = every(c, "/v1/users")[0]
        group = every(c, "/v1/groups")[0]
        campaign = every(c, "/v1/phishing/campaigns")[0]
        test = every(c, "/v1/phishing/security_tests")[0]
        pst = test["pst_id"]
        recipient = every(c, f"/v1/phishing/security_tests/{pst}/recipients")[0]
        enrollment = every(c, "/v1/training/enrollments")[0]
        objects = {
            "/v1/account": "number_of_seats",
            f"/v1/users/{user['id']}": "employee_number",
            f"/v1/groups/{group['id']}": "member_count",
            f"/v1/phishing/campaigns/{campaign['campaign_id']}": "psts",
            f"/v1/phishing/security_tests/{test['pst_id']}": "clicked_count",
            f"/v1/phishing/security_tests/{test['pst_id']}/recipients/"
            f"{recipient['recipient_id']}": "clicked_at",
            f"/v1/training/enrollments/{enrollment['enrollment_id']}": "status",
        }
        for path, field in objects.items():
            assert field in c.get_object(path), path
        for path in (
            f"/v1/groups/{group['id']}/members",
            f"/v1/phishing/campaigns/{campaign['campaign_id']}/security_tests",
        ):
            assert c.get_page(path).records, path
        for path in (
            "/v1/account/risk_score_history",
            f"/v1/users/{user['id']}/risk_score_history",
            f"/v1/groups/{group['id']}/risk_score_history",
        ):
            assert {"date", "risk_score"} <= set(c.get_list(path)[0]), path
        assert c.last_request_id  # every answer has an X-Request-Id
        for missing in ("/v1/users/1", "/v1/users/x", "/v1/nothing", "/v1/groups/1"):
            with pytest.raises(NotFound):
                c.get_object(missing)


def test_it_keeps_its_keys_apart_from_the_events_keys(frozen):
    with sandbox() as sb:
        with ReportingClient(sb.url, SANDBOX_KEY) as c, pytest.raises(ConfigError):
            c.get_page("/v1/users")
        resp = requests.get(
            sb.url + "/events",
            headers={"Authorization": f"Bearer {REPORTING_KEY}"},
            timeout=10,
        )
        assert resp.status_code == 401
        assert [r.status for r in sb.requests] == [401, 401]
        assert sb.requests[0].key_hash == key_hash(SANDBOX_KEY)


@pytest.mark.parametrize(("users", "requests_made"), [(500, 2), (501, 2), (0, 1)])
def test_it_pages_across_the_500_boundary(frozen, users, requests_made):
    with sandbox(users=users) as sb, ReportingClient(sb.url, REPORTING_KEY) as c:
        records = every(c, "/v1/users")
        assert len(records) == users
        assert len({r["id"] for r in records}) == users
        assert len(sb.requests) == requests_made
        assert all("per_page=500" in r.query for r in sb.requests)


def test_it_caps_per_page_at_500_and_defaults_to_100(frozen):
    with sandbox(users=700) as sb:

        def count(**params) -> int:
            resp = requests.get(
                sb.url + "/v1/users",
                params=params,
                headers={"Authorization": f"Bearer {REPORTING_KEY}"},
                timeout=10,
            )
            return len(resp.json())

        assert count() == 100
        assert count(per_page=1000) == 500
        assert count(per_page=500, page=2) == 200
        assert count(per_page=500, page=3) == 0


def test_it_sends_percentages_only_when_asked(frozen):
    with sandbox() as sb, ReportingClient(sb.url, REPORTING_KEY) as c:
        lean = every(c, "/v1/training/campaigns")  # exclude_percentages=true
        full = every(c, "/v1/training/campaigns", exclude_percentages="false")
        assert all("completion_percentage" not in x for x in lean)
        assert all("completion_percentage" in x for x in full)


def test_it_has_the_records_a_security_team_asks_about(frozen):
    with sandbox(users=120) as sb, ReportingClient(sb.url, REPORTING_KEY) as c:
        users = every(c, "/v1/users")
        assert {u["department"] for u in users} >= {"Finance", "Engineering", None}
        assert any(u["manager_email"] for u in users)
        assert any(u["employee_number"] is None for u in users)
        assert any(not u["first_name"].isascii() for u in users)
        assert any("+" in u["email"] for u in users)
        assert any("-" in u["email"].split("@")[0] for u in users)
        assert all(u["id"] > 2**31 for u in users)
        archived = every(c, "/v1/users", status="archived")
        assert archived and all(u["status"] == "archived" for u in archived)
        assert len(every(c, "/v1/users", status="active")) == 120 - len(archived)
        enrollments = every(c, "/v1/training/enrollments")
        assert set(Counter(e["status"] for e in enrollments)) == {
            "Not Started",
            "In Progress",
            "Passed",
            "Past Due",
        }
        tests = every(c, "/v1/phishing/security_tests")
        assert {t["status"] for t in tests} == {"Active", "Closed", "Error"}
        error = next(t for t in tests if t["status"] == "Error")
        assert error["started_at"] is None and error["clicked_count"] is None
        assert error["template"] == {"id": None, "name": None}
        callback = every(c, "/v1/phishing/security_tests", campaign_type="callback")
        assert callback and not {t["pst_id"] for t in callback} & {
            t["pst_id"] for t in tests
        }
        short = c.get_list("/v1/account/risk_score_history")
        long = c.get_list("/v1/account/risk_score_history", params={"full": "true"})
        assert len(long) > len(short) > 150
        assert short[0]["date"] == NOW.date().isoformat()


def test_it_is_deterministic_and_changes_as_time_moves(frozen):
    origin = NOW.timestamp()
    with (
        sandbox(origin=origin) as one,
        sandbox(origin=origin) as two,
        ReportingClient(one.url, REPORTING_KEY) as a,
        ReportingClient(two.url, REPORTING_KEY) as b,
    ):
        active = every(a, "/v1/phishing/security_tests")[0]
        assert active["status"] == "Active"
        path = f"/v1/phishing/security_tests/{active['pst_id']}/recipients"
        for p in (path, "/v1/users", "/v1/training/enrollments"):
            assert every(a, p) == every(b, p)
        before = every(a, path)
        users_before = every(a, "/v1/users", status="archived")
        enrollments_before = every(a, "/v1/training/enrollments")
        frozen.shift(timedelta(days=4))
        after = every(a, path)
        assert len(after) == len(before)
        clicked = sum(1 for r in after if r["clicked_at"])
        assert clicked > sum(1 for r in before if r["clicked_at"])
        assert every(a, "/v1/phishing/security_tests")[0]["status"] == "Closed"
        assert len(every(a, "/v1/users", status="archived")) == len(users_before) + 1
        assert every(a, "/v1/training/enrollments") != enrollments_before


def test_it_limits_a_key_to_4_requests_a_second(frozen):
    with running_sandbox() as sb, ReportingClient(sb.url, REPORTING_KEY) as c:
        for _ in range(4):
            c.get_object("/v1/account")
        with pytest.raises(TooManyRequests) as exc:
            c.get_object("/v1/account")
        assert exc.value.retry_after == 1.0
        frozen.shift(1.0)
        c.get_object("/v1/account")


def test_it_limits_a_key_to_a_burst_of_50_a_minute(frozen):
    with running_sandbox() as sb, ReportingClient(sb.url, REPORTING_KEY) as c:
        for _ in range(50):
            c.get_object("/v1/account")
            frozen.shift(0.5)  # 2/s: under the per-second limit
        with pytest.raises(TooManyRequests) as exc:
            c.get_object("/v1/account")
        assert type(exc.value) is TooManyRequests
        assert 1 <= exc.value.retry_after <= 60
        frozen.shift(exc.value.retry_after)
        c.get_object("/v1/account")


def test_it_rolls_the_daily_limit_over_24_hours_from_the_first_request(frozen):
    with (
        running_sandbox(reporting={"daily_limit": 6}) as sb,
        ReportingClient(sb.url, REPORTING_KEY) as c,
    ):
        for _ in range(6):
            c.get_object("/v1/account")
            frozen.shift(2 * HOUR)  # past UTC midnight: not a calendar day
        with pytest.raises(QuotaExceeded) as exc:
            c.get_object("/v1/account")
        assert exc.value.retry_after == pytest.approx(12 * 3600, abs=1)
        frozen.shift(timedelta(hours=12) - timedelta(seconds=2))
        with pytest.raises(QuotaExceeded):
            c.get_object("/v1/account")
        frozen.shift(2.0)
        c.get_object("/v1/account")


def test_it_allows_2000_plus_licensed_users_a_day():
    limits = ReportingLimits(DAILY_BASE + 25)
    now = NOW.timestamp()
    for _ in range(2025):
        assert limits.check(now) is None
        now += 1.3  # under 4/s and 50/min
    assert limits.check(now).status == 429
    with running_sandbox(reporting={"licensed_users": 25}) as sb:
        assert sb.reporting.daily_limit == 2025


def test_it_injects_faults_on_the_reporting_paths(frozen):
    with sandbox() as sb, ReportingClient(sb.url, REPORTING_KEY) as c:
        sb.inject(status=503, path="/v1/users", count=1)
        sb.inject(kind="html", path="/v1/groups")
        sb.inject(kind="truncate", path="/v1/training")
        with pytest.raises(TransientError) as exc:
            c.get_page("/v1/users")
        assert exc.value.status == 503
        with pytest.raises(TransientError) as exc:
            c.get_page("/v1/groups")
        assert "HTML" in exc.value.message
        with pytest.raises(TransientError) as exc:
            c.get_page("/v1/training/enrollments")
        assert exc.value.code == "truncated_body"
        assert len(c.get_page("/v1/users").records) == 60

"""The Reporting API client: paging over bare arrays and every outcome
classified, from `responses` fixtures (no socket is opened)."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from collectors.choices import ErrorType
from collectors.knowbe4.reporting import (
    MAX_PER_PAGE,
    ConfigError,
    NotFound,
    QuotaExceeded,
    ReportingClient,
    TooManyRequests,
    TransientError,
    child_path,
    honoured_page_size,
)
from tests.cast import API_KEY

BASE = "https://us.api.knowbe4.com"
USERS = BASE + "/v1/users"


def users(start: int, count: int) -> list[dict]:
    return [
        {"id": 2**40 + i, "email": f"u{i}@example.com", "employee_number": str(i)}
        for i in range(start, start + count)
    ]


def paged(records: list[dict], request_id: str = "req-1"):
    """A `responses` callback serving `records` in bare-array pages."""

    def answer(request):
        query = parse_qs(urlsplit(request.url).query)
        page = int(query["page"][0])
        per_page = int(query["per_page"][0])
        chunk = records[(page - 1) * per_page : page * per_page]
        return 200, {"X-Request-Id": f"{request_id}-{page}"}, json.dumps(chunk)

    return answer


def client(**kwargs) -> ReportingClient:
    return ReportingClient(BASE, API_KEY, **kwargs)


def queries() -> list[dict]:
    return [parse_qs(urlsplit(c.request.url).query) for c in responses.calls]


def collect(path: str = "/v1/users", **kwargs) -> list:
    with client() as c:
        return [r for page in c.iter_pages(path, **kwargs) for r in page.records]


@responses.activate
def test_it_reads_exactly_500_records_in_two_requests():
    responses.add_callback(responses.GET, USERS, callback=paged(users(0, 500)))
    records = collect()
    assert len(records) == 500
    assert [q["page"] for q in queries()] == [["1"], ["2"]]
    assert all(q["per_page"] == ["500"] for q in queries())


@responses.activate
def test_it_reads_501_records_and_stops_on_the_short_page():
    responses.add_callback(responses.GET, USERS, callback=paged(users(0, 501)))
    records = collect()
    assert [r["id"] for r in records] == [2**40 + i for i in range(501)]
    assert len(responses.calls) == 2


@responses.activate
def test_it_reads_an_empty_dataset_in_one_request():
    responses.add_callback(responses.GET, USERS, callback=paged([]))
    with client() as c:
        pages = list(c.iter_pages("/v1/users"))
    assert len(pages) == 1 and pages[0].records == [] and pages[0].last
    assert pages[0].request_id == "req-1-1"
    assert len(responses.calls) == 1


@responses.activate
def test_it_resumes_at_a_page_and_passes_filters():
    responses.add_callback(responses.GET, USERS, callback=paged(users(0, 1200)))
    records = collect(params={"status": "archived"}, start_page=2)
    assert len(records) == 700
    assert [q["page"] for q in queries()] == [["2"], ["3"]]
    assert all(q["status"] == ["archived"] for q in queries())


@responses.activate
def test_it_sends_exclude_percentages_so_training_campaigns_page_by_500():
    url = BASE + "/v1/training/campaigns"
    responses.add_callback(responses.GET, url, callback=paged(users(0, 10)))
    assert len(collect("/v1/training/campaigns")) == 10
    assert queries()[0]["exclude_percentages"] == ["true"]
    assert len(responses.calls) == 1  # 10 < 500: the end


@responses.activate
def test_it_pages_campaigns_by_10_when_percentages_are_asked_for():
    url = BASE + "/v1/training/campaigns"
    data = users(0, 25)

    def answer(request):
        page = int(parse_qs(urlsplit(request.url).query)["page"][0])
        return 200, {}, json.dumps(data[(page - 1) * 10 : page * 10])

    responses.add_callback(responses.GET, url, callback=answer)
    records = collect("/v1/training/campaigns", params={"exclude_percentages": "false"})
    assert len(records) == 25 and len(responses.calls) == 3
    assert honoured_page_size("/v1/training/campaigns", {}, 500) == 10


@responses.activate
def test_it_stops_a_server_that_ignores_the_page_parameter():
    responses.add(responses.GET, USERS, json=users(0, 500))
    with pytest.raises(TransientError) as exc:
        collect()
    assert exc.value.code == "paging_stuck"
    assert len(responses.calls) == 2


@responses.activate
def test_it_refuses_a_page_size_over_500_before_any_request():
    with client() as c, pytest.raises(ValueError):
        c.get_page("/v1/users", per_page=MAX_PER_PAGE + 1)
    assert not responses.calls


@responses.activate
def test_it_sends_the_key_only_in_the_header_with_explicit_timeouts():
    responses.add(responses.GET, USERS, json=[])
    with client() as c:
        c.get_page("/v1/users")
    request = responses.calls[0].request
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert API_KEY not in request.url
    assert request.req_kwargs["timeout"] == (5.0, 30.0)


@responses.activate
def test_it_calls_the_throttle_around_every_request():
    calls: list[str] = []
    responses.add_callback(responses.GET, USERS, callback=paged(users(0, 600)))
    with client(
        throttle=lambda: calls.append("before"),
        after_request=lambda: calls.append("after"),
    ) as c:
        list(c.iter_pages("/v1/users"))
    assert calls == ["before", "after"] * 2


@responses.activate
def test_it_reads_one_object():
    responses.add(responses.GET, BASE + "/v1/account", json={"name": "Acme"})
    with client() as c:
        assert c.get_object("/v1/account") == {"name": "Acme"}


@pytest.mark.parametrize("status", [401, 403])
@responses.activate
def test_it_reports_a_refused_key_as_config_after_one_request(status):
    responses.add(
        responses.GET, USERS, status=status, headers={"X-Request-Id": "abc-123"}
    )
    with pytest.raises(ConfigError) as exc:
        collect()
    assert exc.value.error_type == ErrorType.THIRD_PARTY_CONFIG
    assert "abc-123" in exc.value.message
    assert len(responses.calls) == 1


@responses.activate
def test_it_reports_404_as_not_found():
    responses.add(responses.GET, BASE + "/v1/groups/7/members", status=404)
    with client() as c, pytest.raises(NotFound) as exc:
        c.get_page(child_path("/v1/groups/{}/members", 7))
    assert exc.value.error_type == ErrorType.THIRD_PARTY_CONFIG


@responses.activate
def test_it_does_not_follow_a_redirect():
    responses.add(
        responses.GET,
        USERS,
        status=302,
        headers={"Location": "https://elsewhere.example/v1/users"},
    )
    with pytest.raises(ConfigError) as exc:
        collect()
    assert exc.value.code == "http_302"
    assert len(responses.calls) == 1


@pytest.mark.parametrize(
    ("headers", "body", "kind", "retry_after"),
    [
        ({"Retry-After": "1"}, "Too Many Requests", TooManyRequests, 1.0),
        ({}, "", TooManyRequests, None),
        ({"Retry-After": "30"}, "Burst Limit Exceeded", TooManyRequests, 30.0),
        ({"Retry-After": "7200"}, "", QuotaExceeded, 7200.0),
        ({}, '{"message":"Daily limit reached"}', QuotaExceeded, None),
    ],
)
@responses.activate
def test_it_tells_the_limits_apart(headers, body, kind, retry_after):
    responses.add(responses.GET, USERS, status=429, headers=headers, body=body)
    with pytest.raises(kind) as exc:
        collect()
    assert type(exc.value) is kind
    assert exc.value.retry_after == retry_after


@pytest.mark.parametrize("status", [406, 500, 503])
@responses.activate
def test_it_reports_server_errors_as_transient(status):
    responses.add(
        responses.GET,
        USERS,
        status=status,
        headers={"X-Request-Id": "r-9"},
        json={"message": "boom"},
    )
    with pytest.raises(TransientError) as exc:
        collect()
    assert exc.value.error_type == ErrorType.THIRD_PARTY_GENERIC
    assert f"HTTP {status}" in exc.value.message and "r-9" in exc.value.message


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ('[{"id": 1}, {"id"', "invalid_json"),
        ("<html><body>Maintenance</body></html>", "html_page"),
        ('{"data": []}', "not_a_list"),
    ],
)
@responses.activate
def test_it_refuses_an_answer_that_is_not_a_json_array(body, code):
    responses.add(responses.GET, USERS, body=body)
    with pytest.raises(TransientError) as exc:
        collect()
    assert exc.value.code == code


@responses.activate
def test_it_keeps_records_it_cannot_read_for_the_reader():
    responses.add(responses.GET, USERS, json=[{"id": 1}, "oops", None])
    with client() as c:
        page = c.get_page("/v1/users")
    assert page.records == [{"id": 1}, "oops", None] and page.last


@pytest.mark.parametrize(
    "echo",
    [
        API_KEY,
        base64.b64encode(f"Bearer {API_KEY}".encode()).decode(),
        requests.utils.quote(API_KEY, safe=""),
    ],
)
@responses.activate
def test_it_scrubs_the_key_before_cutting_an_excerpt(echo):
    # The key straddles the excerpt's 200-character cut: cutting first would
    # leave a half key that no longer matches the scrubber.
    body = "x" * 170 + " " + echo + " rest"
    responses.add(responses.GET, USERS, status=500, body=body)
    with pytest.raises(TransientError) as exc:
        collect()
    message = exc.value.message
    assert API_KEY[:10] not in message and API_KEY[-10:] not in message
    assert "[key]" in message
    assert echo[16:32] not in message  # the middle of any form of the key


@pytest.mark.parametrize("bad", ["1/../account", "-1", "", True, 1.5, None, "١٢"])
def test_it_refuses_a_record_id_that_is_not_a_number(bad):
    with pytest.raises(ValueError):
        child_path("/v1/groups/{}/members", bad)


def test_it_builds_child_paths_for_ids_over_2_to_the_31():
    assert child_path("/v1/phishing/security_tests/{}/recipients", 2**40) == (
        f"/v1/phishing/security_tests/{2**40}/recipients"
    )
    assert child_path("/v1/groups/{}/members", "42") == "/v1/groups/42/members"


def test_it_refuses_an_unusable_key_before_any_request():
    with ReportingClient(BASE, "bad key\n") as c, pytest.raises(ConfigError):
        c.get_page("/v1/users")


@responses.activate
def test_it_reads_an_unpaged_history_in_one_request():
    url = BASE + "/v1/account/risk_score_history"
    history = [{"risk_score": 30.1, "date": f"2025-01-{d:02d}"} for d in range(1, 29)]
    responses.add(responses.GET, url, json=history * 30)
    with client() as c:
        doc = c.get_list("/v1/account/risk_score_history", {"full": "true"})
    assert len(doc) == 840
    assert "page" not in queries()[0] and queries()[0]["full"] == ["true"]

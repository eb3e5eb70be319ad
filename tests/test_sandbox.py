"""The KnowBe4 sandbox, over real sockets: envelope, paging, filters, auth,
both 429s, the request log, faults, late events, and the client reading it."""

from __future__ import annotations

import socket
import time
from datetime import UTC, date, datetime, timedelta
from io import StringIO

import pytest
import requests
from django.core.management import call_command
from django.core.management.base import CommandError

from collectors.knowbe4.client import (
    KnowBe4Client,
    QuotaExceeded,
    TransientError,
)
from collectors.knowbe4.sandbox import SandboxServer, key_hash, utc_today
from tests.sandbox_support import (
    REPORTING_KEY,
    SANDBOX_KEY,
    running_sandbox,
    sandbox,  # noqa: F401  (the fixture)
    sandbox_process,
)

NOW = datetime(2026, 5, 20, 15, 30, tzinfo=UTC)
TODAY = NOW.date()
DAY = TODAY - timedelta(days=2)


@pytest.fixture
def frozen(time_machine):
    """Freeze time (the sandbox's clock too) at NOW."""
    time_machine.move_to(NOW, tick=False)
    return time_machine


def get(sb, path="/events", key=SANDBOX_KEY, **params) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.get(sb.url + path, params=params, headers=headers, timeout=10)


def all_pages(sb, **params) -> list[dict]:
    events, page = [], 1
    while page:
        doc = get(sb, page=page, **params).json()
        events += doc["data"]
        page = doc["meta"]["next_page"]
    return events


def test_it_answers_with_the_documented_envelope(frozen):
    with running_sandbox(events_per_day=250, rate_limit=False) as sb:
        resp = get(sb, occurred_date=DAY.isoformat())
        assert resp.status_code == 200
        assert resp.headers["Content-Type"].startswith("application/json")
        doc = resp.json()
        assert set(doc) == {"data", "meta"}
        assert doc["meta"] == {
            "count": 250,
            "limit_value": 100,
            "total_pages": 3,
            "current_page": 1,
            "next_page": 2,
            "prev_page": None,
            "is_first_page": True,
            "is_last_page": False,
            "is_out_of_range": False,
        }
        ev = doc["data"][0]
        assert list(ev) == [
            "id", "account_id", "user", "external_id", "source", "description",
            "occurred_date", "risk", "metadata", "event_type",
        ]  # fmt: skip
        assert set(ev["user"]) == {"email", "id", "archived"}
        assert set(ev["risk"]) == {"level", "decay_mode", "expire_date"}
        assert set(ev["event_type"]) == {"id", "name", "description"}
        assert len(ev["id"]) == 36 and ev["id"].count("-") == 4
        assert ev["occurred_date"].startswith(DAY.isoformat() + "T")
        assert ev["occurred_date"].endswith("Z") and len(ev["occurred_date"]) == 24


def test_it_pages_to_the_end_and_past_it(frozen):
    with running_sandbox(events_per_day=250, rate_limit=False) as sb:
        last = get(sb, occurred_date=DAY.isoformat(), page=3).json()
        assert len(last["data"]) == 50
        assert last["meta"]["next_page"] is None
        assert last["meta"]["prev_page"] == 2
        assert last["meta"]["is_last_page"] is True

        past = get(sb, occurred_date=DAY.isoformat(), page=4).json()
        assert past["data"] == []
        assert past["meta"]["is_out_of_range"] is True
        assert past["meta"]["next_page"] is None

        ids = [e["id"] for e in all_pages(sb, occurred_date=DAY.isoformat())]
        assert len(ids) == len(set(ids)) == 250
        assert set(ids) == sb.event_ids(DAY, DAY)


@pytest.mark.parametrize(
    "per_page, expected", [("0", 1), ("-3", 1), ("7", 7), ("500", 100), ("x", 100)]
)
def test_it_clamps_per_page(frozen, per_page, expected):
    with running_sandbox(events_per_day=150, rate_limit=False) as sb:
        doc = get(sb, occurred_date=DAY.isoformat(), per_page=per_page).json()
        assert len(doc["data"]) == expected
        assert doc["meta"]["limit_value"] == expected


def test_it_filters_by_event_type_risk_level_and_user(frozen):
    with running_sandbox(events_per_day=300, rate_limit=False) as sb:
        everything = all_pages(sb, occurred_date=DAY.isoformat())
        some = everything[0]
        for param, value, get_value in [
            (
                "event_type",
                some["event_type"]["name"],
                lambda e: e["event_type"]["name"],
            ),
            ("risk_level", 3, lambda e: e["risk"]["level"]),
            ("target_user", some["user"]["email"], lambda e: e["user"]["email"]),
        ]:
            found = all_pages(sb, occurred_date=DAY.isoformat(), **{param: value})
            expected = [e for e in everything if get_value(e) == value]
            assert 0 < len(found) < len(everything)
            assert sorted(e["id"] for e in found) == sorted(e["id"] for e in expected)


def test_it_orders_as_asked(frozen):
    with running_sandbox(events_per_day=120, rate_limit=False) as sb:
        day = DAY.isoformat()

        def column(key, **params):
            return [key(e) for e in all_pages(sb, occurred_date=day, **params)]

        when = column(lambda e: e["occurred_date"])
        assert when == sorted(when, reverse=True)  # newest first by default
        asc = column(
            lambda e: e["occurred_date"],
            order_by="occurred_date",
            order_direction="asc",
        )
        assert asc == sorted(asc)
        ids = column(lambda e: e["id"], order_by="id", order_direction="asc")
        assert ids == sorted(ids)
        types = column(lambda e: e["event_type"]["name"], order_by="event_type")
        assert types == sorted(types)  # an order_by alone sorts ascending
        down = column(
            lambda e: e["event_type"]["name"],
            order_by="event_type",
            order_direction="desc",
        )
        assert down == sorted(down, reverse=True) and down != types


def test_it_generates_a_window_of_days_ending_today(frozen):
    with running_sandbox(days=3, events_per_day=40, rate_limit=False) as sb:
        for back in (1, 2, 3):
            day = TODAY - timedelta(days=back)
            assert len(sb.event_ids(day, day)) == 40
        before = TODAY - timedelta(days=4)
        assert get(sb, occurred_date=before.isoformat()).json()["data"] == []
        # Today only has what has occurred by now (15:30 of 24 hours).
        today = [e for e in all_pages(sb, occurred_date=TODAY.isoformat())]
        assert 0 < len(today) < 40
        assert all(e["occurred_date"] <= "2026-05-20T15:30:00.000Z" for e in today)
        frozen.move_to(NOW + timedelta(days=1))
        assert len(sb.event_ids(TODAY, TODAY)) == 40  # the day has closed


def test_it_is_deterministic_for_a_seed(frozen):
    with running_sandbox(seed=7, rate_limit=False) as one:
        first = one.event_ids(TODAY - timedelta(days=10), TODAY)
        page = get(one, occurred_date=DAY.isoformat()).content
    with running_sandbox(seed=7, rate_limit=False) as two:
        assert two.event_ids(TODAY - timedelta(days=10), TODAY) == first
        assert get(two, occurred_date=DAY.isoformat()).content == page
    with running_sandbox(seed=8, rate_limit=False) as other:
        assert other.event_ids(TODAY - timedelta(days=10), TODAY).isdisjoint(first)


def test_it_spreads_a_total_over_the_closed_days(frozen):
    with running_sandbox(days=4, total_events=1001, rate_limit=False) as sb:
        counts = [
            len(sb.event_ids(TODAY - timedelta(days=b), TODAY - timedelta(days=b)))
            for b in (4, 3, 2, 1)
        ]
        assert counts == [251, 250, 250, 250]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": SANDBOX_KEY},
        {"Authorization": f"Basic {SANDBOX_KEY}"},
    ],
)
def test_it_refuses_a_missing_or_wrong_key(sandbox, headers):  # noqa: F811
    resp = requests.get(sandbox.url + "/events", headers=headers, timeout=10)
    assert resp.status_code == 401
    assert resp.json() == {"message": "Unauthorized"}
    assert sandbox.requests[-1].status == 401


def test_it_accepts_each_configured_key_and_revokes_one(frozen):
    with running_sandbox(api_keys=["key-one", "key-two"], rate_limit=False) as sb:
        assert get(sb, key="key-one").status_code == 200
        assert get(sb, key="key-two").status_code == 200
        sb.remove_api_key("key-one")
        assert get(sb, key="key-one").status_code == 401


def test_it_allows_four_requests_per_second_per_key(frozen):
    with running_sandbox(api_keys=["a", "b"]) as sb:
        codes = [get(sb, key="a").status_code for _ in range(5)]
        assert codes == [200, 200, 200, 200, 429]
        resp = get(sb, key="a")
        assert resp.json() == {"message": "Too Many Requests"}
        assert resp.headers["Retry-After"] == "1"
        assert get(sb, key="b").status_code == 200  # per key
        frozen.shift(0.5)
        assert get(sb, key="a").status_code == 429
        frozen.shift(0.51)
        assert get(sb, key="a").status_code == 200


def test_it_allows_requests_spread_over_a_sliding_window(frozen):
    with running_sandbox() as sb:
        for _ in range(3):
            assert get(sb).status_code == 200
        frozen.shift(0.6)
        assert get(sb).status_code == 200
        assert get(sb).status_code == 429  # 5 within the last second
        frozen.shift(0.41)  # the first three are now older than a second
        assert [get(sb).status_code for _ in range(3)] == [200, 200, 200]
        assert get(sb).status_code == 429


def test_it_enforces_a_daily_quota_of_ten_per_seat(frozen):
    with running_sandbox(api_keys=["a", "b"], seats=1, rate_limit=False) as sb:
        assert [get(sb, key="a").status_code for _ in range(10)] == [200] * 10
        resp = get(sb, key="a")
        assert resp.status_code == 429
        assert resp.json() == {"message": "Limit Exceeded"}
        midnight = datetime(2026, 5, 21, tzinfo=UTC)
        assert int(resp.headers["Retry-After"]) == (midnight - NOW).seconds
        assert get(sb, key="b").status_code == 200  # per key
        with pytest.raises(QuotaExceeded) as info:
            KnowBe4Client(sb.url, "a").list_events(DAY, 1)
        assert info.value.retry_after == (midnight - NOW).seconds
        frozen.move_to(midnight + timedelta(seconds=1))
        assert get(sb, key="a").status_code == 200


def test_it_switches_both_limits_off(frozen):
    with running_sandbox(seats=1, rate_limit=False, quota=False) as sb:
        assert {get(sb).status_code for _ in range(25)} == {200}


def test_it_logs_requests_without_the_key(sandbox):  # noqa: F811
    before = time.time()
    get(sandbox, occurred_date="2026-01-02", page=2)
    get(sandbox, key="bad")
    log = sandbox.requests
    assert [(r.method, r.path, r.status) for r in log] == [
        ("GET", "/events", 200),
        ("GET", "/events", 401),
    ]
    first = log[0]
    assert "occurred_date=2026-01-02" in first.query and "page=2" in first.query
    assert before <= first.time <= time.time()
    assert first.key_hash == key_hash(SANDBOX_KEY) and SANDBOX_KEY not in str(log)
    assert log[1].key_hash != first.key_hash

    over_http = requests.get(sandbox.url + "/_sandbox/requests", timeout=10).json()
    assert [r["status"] for r in over_http["data"]] == [200, 401]
    assert SANDBOX_KEY not in str(over_http)
    assert len(sandbox.requests) == 2  # control calls are not logged

    sandbox.clear_requests()
    assert sandbox.requests == []
    requests.get(sandbox.url + "/events", timeout=10)
    assert requests.delete(sandbox.url + "/_sandbox/requests", timeout=10).ok
    assert sandbox.requests == []


def test_it_injects_a_status_for_the_next_n_requests(sandbox):  # noqa: F811
    sandbox.inject(status=503, count=2)
    client = KnowBe4Client(sandbox.url, SANDBOX_KEY)
    for _ in range(2):
        with pytest.raises(TransientError) as info:
            client.list_events(utc_today() - timedelta(days=2), 1)
        assert info.value.code == "http_503"
    assert client.list_events(utc_today() - timedelta(days=2), 1).events is not None
    assert [r.status for r in sandbox.requests] == [503, 503, 200]


@pytest.mark.parametrize(
    "kind, code",
    [
        ("truncate", "truncated_body"),
        ("invalid_json", "invalid_json"),
        ("html", "http_502"),
        ("reset", "connection_error"),
        ("limit_exceeded", "limit_exceeded"),
        ("too_many_requests", "too_many_requests"),
    ],
)
def test_it_injects_each_kind_of_fault(sandbox, kind, code):  # noqa: F811
    sandbox.inject(kind=kind)
    client = KnowBe4Client(sandbox.url, SANDBOX_KEY)
    with pytest.raises(TransientError) as info:
        client.list_events(utc_today() - timedelta(days=1), 1)
    assert info.value.code == code
    page = client.list_events(utc_today() - timedelta(days=1), 1)  # one request only
    assert len(page.events) == 50


def test_it_injects_a_slow_response(sandbox):  # noqa: F811
    # Only a lower bound on time: a slow answer is never early. (That a client
    # times out is tested with the gate, which never answers: no race.)
    sandbox.inject(kind="slow", delay=0.6, count=2)
    for _ in range(2):
        started = time.monotonic()
        assert get(sandbox, occurred_date=utc_today().isoformat()).status_code == 200
        assert time.monotonic() - started >= 0.6
    assert not sandbox.state.faults  # both used


def test_it_holds_requests_past_its_gate_until_it_is_raised(sandbox):  # noqa: F811
    import threading

    sandbox.set_gate(1)
    assert get(sandbox).status_code == 200
    answered: list[int] = []
    held = threading.Thread(target=lambda: answered.append(get(sandbox).status_code))
    held.start()
    while sandbox.gate_status()["waiting"] == 0:  # the request reached the gate
        time.sleep(0.01)
    assert answered == []
    assert sandbox.gate_status() == {"allow": 1, "passed": 1, "waiting": 1}
    resp = requests.post(sandbox.url + "/_sandbox/gate", json={"allow": 2}, timeout=10)
    assert resp.json()["data"]["allow"] == 2
    held.join(10)
    assert answered == [200]
    assert (
        requests.post(
            sandbox.url + "/_sandbox/gate", json={"allow": -1}, timeout=10
        ).status_code
        == 400
    )
    sandbox.set_gate(None)
    assert get(sandbox).status_code == 200


def test_it_a_request_held_at_the_gate_times_out_in_the_client(sandbox):  # noqa: F811
    sandbox.set_gate(0)  # never answered: the client's timeout must fire
    with pytest.raises(TransientError) as info:
        KnowBe4Client(sandbox.url, SANDBOX_KEY, read_timeout=0.2).list_events(
            utc_today() - timedelta(days=2), 1
        )
    assert info.value.code == "timeout"


def test_it_injects_faults_through_the_control_api(sandbox):  # noqa: F811
    resp = requests.post(
        sandbox.url + "/_sandbox/faults",
        json={"kind": "status", "status": 500, "count": 1},
        timeout=10,
    )
    assert resp.status_code == 201
    assert get(sandbox).status_code == 500
    assert get(sandbox).status_code == 200
    bad = requests.post(
        sandbox.url + "/_sandbox/faults", json={"kind": "nonsense"}, timeout=10
    )
    assert bad.status_code == 400


def test_it_creates_a_backdated_late_event_in_its_day(sandbox):  # noqa: F811
    day = utc_today() - timedelta(days=3)
    before = sandbox.event_ids(day, day)
    resp = requests.post(
        sandbox.url + "/events",
        json={
            "target_user": "late@example.com",
            "event_type": "phishing_click",
            "occurred_date": f"{day.isoformat()}T08:00:00.123Z",
            "risk_level": 4,
            "metadata": {"why": "late"},
        },
        headers={"Authorization": f"Bearer {SANDBOX_KEY}"},
        timeout=10,
    )
    assert resp.status_code == 201
    request_id = resp.json()["data"]["id"]
    after = sandbox.event_ids(day, day)
    assert len(after - before) == 1
    (new_id,) = after - before
    status = get(sandbox, f"/statuses/{request_id}").json()["data"]
    assert status["details"]["events"] == [new_id]
    page = KnowBe4Client(sandbox.url, SANDBOX_KEY).list_events(day, 1)
    late = [e for e in page.events if e["id"] == new_id]
    assert late and late[0]["occurred_date"] == f"{day.isoformat()}T08:00:00.123Z"
    assert late[0]["user"]["email"] == "late@example.com"
    assert late[0]["metadata"] == {"why": "late"}


def test_it_adds_late_events_through_python_and_http(sandbox):  # noqa: F811
    day = utc_today() - timedelta(days=12)  # before the generated window
    doc = sandbox.add_event(occurred_date=datetime(day.year, day.month, day.day, 9))
    assert sandbox.event_ids(day, day) == {doc["id"]}
    resp = requests.post(
        sandbox.url + "/_sandbox/events",
        json={"occurred_date": f"{day.isoformat()}T10:00:00Z"},
        timeout=10,
    )
    assert resp.status_code == 201
    assert len(sandbox.event_ids(day, day)) == 2
    ids = requests.get(
        sandbox.url + "/_sandbox/event_ids",
        params={"start": day.isoformat(), "end": day.isoformat()},
        timeout=10,
    ).json()["data"]
    assert set(ids) == sandbox.event_ids(day, day)


def test_it_reads_and_deletes_one_event(sandbox):  # noqa: F811
    day = utc_today() - timedelta(days=1)
    event_id = sorted(sandbox.event_ids(day, day))[0]
    one = get(sandbox, f"/events/{event_id}")
    assert one.status_code == 200 and one.json()["data"]["id"] == event_id
    assert KnowBe4Client(sandbox.url, SANDBOX_KEY).get_event(event_id)["id"] == event_id
    headers = {"Authorization": f"Bearer {SANDBOX_KEY}"}
    resp = requests.delete(
        f"{sandbox.url}/events/{event_id}", headers=headers, timeout=10
    )
    assert resp.status_code == 204 and resp.content == b""
    assert event_id not in sandbox.event_ids(day, day)
    time.sleep(1)  # stay within 4 requests a second
    assert get(sandbox, f"/events/{event_id}").status_code == 404
    assert (
        requests.delete(
            f"{sandbox.url}/events/{event_id}", headers=headers, timeout=10
        ).status_code
        == 404
    )


def test_it_lists_event_types(sandbox):  # noqa: F811
    types = get(sandbox, "/event_types").json()["data"]
    assert len(types) >= 5
    assert set(types[0]) == {"id", "account_id", "name", "description"}
    one = get(sandbox, "/event_types", name="phishing_click").json()["data"]
    assert [t["name"] for t in one] == ["phishing_click"]


def test_it_answers_unknown_paths_with_404(sandbox):  # noqa: F811
    assert get(sandbox, "/v2/events").status_code == 404
    # /v1/ is the Reporting API (test_sandbox_reporting.py): its own keys
    assert get(sandbox, "/v1/events").status_code == 401
    assert get(sandbox, "/v1/events", key=REPORTING_KEY).status_code == 404


def test_it_the_client_reads_every_page_of_the_window(frozen):
    with running_sandbox(days=5, events_per_day=230, rate_limit=False) as sb:
        client = KnowBe4Client(sb.url, SANDBOX_KEY)
        seen: list[str] = []
        for back in range(5, 0, -1):
            page: int | None = 1
            while page:
                result = client.list_events(TODAY - timedelta(days=back), page)
                seen += [e["id"] for e in result.events]
                page = result.next_page
        assert len(seen) == len(set(seen)) == 5 * 230
        assert set(seen) == sb.event_ids(
            TODAY - timedelta(days=5), TODAY - timedelta(days=1)
        )
        assert len(sb.requests) == 5 * 3


def test_it_runs_as_a_management_command():
    with sandbox_process(days=2, events_per_day=30) as proc:
        day = date.today() - timedelta(days=1)
        page = KnowBe4Client(proc.url, proc.api_key).list_events(day, 1)
        assert {e["id"] for e in page.events} == proc.event_ids(day, day)
        assert [r["status"] for r in proc.requests()] == [200]
    assert proc.proc.returncode is not None


def test_it_stops_answering_kept_alive_connections_when_stopped():
    with running_sandbox(rate_limit=False) as sb:
        session = requests.Session()
        headers = {"Authorization": f"Bearer {SANDBOX_KEY}"}
        assert session.get(sb.url + "/event_types", headers=headers).ok
        assert session.get(sb.url + "/event_types", headers=headers).ok
        assert len(sb.httpd.connections) == 1  # one kept-alive connection
    with pytest.raises(requests.ConnectionError):
        session.get(sb.url + "/event_types", headers=headers, timeout=5)


def test_it_resets_its_limits(frozen):
    with running_sandbox(seats=1) as sb:
        for _ in range(4):
            get(sb)
        assert get(sb).status_code == 429
        sb.reset_limits()
        assert get(sb).status_code == 200


def test_it_refuses_the_control_api_to_other_hosts(sandbox):  # noqa: F811
    class FromElsewhere:
        client_address = ("10.1.2.3", 40000)
        path = "/_sandbox/requests"
        command = "GET"

    resp = sandbox.httpd.control.handle(FromElsewhere(), b"")
    assert resp.status == 403
    FromElsewhere.client_address = ("127.0.0.1", 40000)
    assert sandbox.httpd.control.handle(FromElsewhere(), b"").status == 200


@pytest.mark.parametrize(
    "body, status",
    [
        (b"{not json", 400),
        (b'{"event_type": "phishing_click"}', 422),
        (b'{"target_user": "a@example.com"}', 422),
        (
            b'{"target_user": "a@example.com", "event_type": "x", '
            b'"occurred_date": "last week"}',
            422,
        ),
    ],
)
def test_it_rejects_a_bad_new_event(sandbox, body, status):  # noqa: F811
    headers = {
        "Authorization": f"Bearer {SANDBOX_KEY}",
        "Content-Type": "application/json",
    }
    resp = requests.post(
        sandbox.url + "/events", data=body, headers=headers, timeout=10
    )
    assert resp.status_code == status
    assert "message" in resp.json()
    assert sandbox.requests[-1].method == "POST"


def test_it_answers_a_wrong_method_with_405(sandbox):  # noqa: F811
    headers = {"Authorization": f"Bearer {SANDBOX_KEY}"}
    resp = requests.put(sandbox.url + "/events", headers=headers, timeout=10)
    assert resp.status_code == 405


def test_it_refuses_to_start_with_debug_off(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="refuses to start with DEBUG off"):
        call_command("knowbe4_sandbox", "--port", "0")


def test_it_starts_with_debug_off_when_allowed(settings, monkeypatch):
    settings.DEBUG = False
    served = []
    monkeypatch.setattr(
        "collectors.knowbe4.sandbox.SandboxServer.serve_forever",
        lambda self: served.append(self.url),
    )
    out = StringIO()
    call_command(
        "knowbe4_sandbox",
        "--allow-production",
        "--port",
        "0",
        "--days",
        "1",
        "--events-per-day",
        "1",
        stdout=out,
    )
    assert served and served[0].startswith("http://127.0.0.1:")
    assert f"listening on {served[0]}" in out.getvalue()


@pytest.mark.parametrize(
    "host",
    ["0.0.0.0", "::", "", "10.0.0.5", "example.org"],  # noqa: S104 - refused
)
def test_it_binds_only_to_loopback(settings, host):
    settings.DEBUG = True
    with pytest.raises(CommandError, match="binds only to a loopback address"):
        call_command("knowbe4_sandbox", "--host", host, "--port", "0")
    with pytest.raises(ValueError, match="binds only to a loopback address"):
        SandboxServer(host=host, port=0)


def _raw_request(sb, head: str) -> bytes:
    """Send a request head (no body) and read the answer until it closes."""
    with socket.create_connection((sb.host, sb.port), timeout=10) as conn:
        conn.sendall(head.encode("latin-1"))
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    ("length", "status"),
    [("1000000000", b"413"), ("99999999999999999999999", b"413"), ("12x", b"400")],
)
def test_it_refuses_a_large_or_unreadable_body_without_reading_it(
    sandbox,  # noqa: F811
    length,
    status,
):
    """The answer comes at once although the announced body never arrives,
    and the connection is closed (the body is never read)."""
    answer = _raw_request(
        sandbox,
        f"POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SANDBOX_KEY}"
        f"\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 " + status)


def test_it_refuses_a_chunked_body(sandbox):  # noqa: F811
    answer = _raw_request(
        sandbox,
        "POST /_sandbox/faults HTTP/1.1\r\nHost: x\r\n"
        "Transfer-Encoding: chunked\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 411")


def test_it_still_reads_a_body_under_the_cap(sandbox):  # noqa: F811
    from collectors.knowbe4.sandbox import MAX_REQUEST_BODY

    headers = {"Authorization": f"Bearer {SANDBOX_KEY}"}
    small = requests.post(
        sandbox.url + "/events",
        data=b"{" + b" " * 1000 + b"}",
        headers=headers,
        timeout=10,
    )
    assert small.status_code == 422
    big = requests.post(
        sandbox.url + "/events",
        data=b"{" + b" " * MAX_REQUEST_BODY + b"}",
        headers=headers,
        timeout=10,
    )
    assert big.status_code == 413

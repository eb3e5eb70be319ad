"""The KnowBe4 client: every outcome classified, from `responses` fixtures.

No socket is opened here: `responses` answers at the requests seam. The same
client is run over real sockets against the sandbox in test_sandbox.py.
"""

from __future__ import annotations

import json
import traceback
from datetime import UTC, date, datetime

import pytest
import requests
import responses

from collectors.choices import ErrorType
from collectors.knowbe4 import client as client_module
from collectors.knowbe4.client import (
    ConfigError,
    KnowBe4Client,
    KnowBe4Error,
    QuotaExceeded,
    TooManyRequests,
    TransientError,
    parse_occurred,
    parse_retry_after,
)
from tests.cast import API_KEY

BASE = "https://api.events.knowbe4.com"
URL = BASE + "/events"
DAY = date(2026, 3, 14)


def event(n: int = 1, **overrides) -> dict:
    doc = {
        "id": f"786a515c-1cbd-4a8c-a94a-61ad877c{n:04d}",
        "account_id": 52306,
        "user": {"email": "maizen@example.com", "id": 38651943, "archived": False},
        "external_id": None,
        "source": None,
        "description": "My description",
        "occurred_date": "2026-03-14T10:05:13.890Z",
        "risk": {"level": 5, "decay_mode": 0, "expire_date": None},
        "metadata": None,
        "event_type": {"id": 420899085, "name": "event_type_55", "description": None},
    }
    doc.update(overrides)
    return doc


def envelope(events: list[dict], next_page: int | None = None) -> dict:
    return {
        "data": events,
        "meta": {
            "count": len(events),
            "limit_value": 100,
            "total_pages": 1,
            "current_page": 1,
            "next_page": next_page,
            "prev_page": None,
            "is_first_page": True,
            "is_last_page": next_page is None,
            "is_out_of_range": False,
        },
    }


def make_client(**kw) -> KnowBe4Client:
    return KnowBe4Client(BASE, API_KEY, **kw)


def fetch_error(**kw) -> KnowBe4Error:
    """Call list_events once and return the classified error it raised."""
    with pytest.raises(KnowBe4Error) as info:
        make_client().list_events(DAY, 1)
    return info.value


def assert_no_key(exc: BaseException) -> None:
    """The key is in no message, str, repr or printed traceback."""
    printed = "".join(traceback.format_exception(exc))
    for text in (str(exc), repr(exc), getattr(exc, "message", ""), printed):
        assert API_KEY not in text
        assert API_KEY[:12] not in text


@responses.activate
def test_it_parses_a_page_and_sends_the_documented_request():
    responses.get(URL, json=envelope([event(1), event(2)], next_page=2))
    page = make_client(connect_timeout=3, read_timeout=7).list_events(DAY, 1)

    assert [e["id"][-4:] for e in page.events] == ["0001", "0002"]
    assert page.next_page == 2
    assert page.meta["limit_value"] == 100
    call = responses.calls[0]
    assert call.request.params == {
        "occurred_date": "2026-03-14",
        "page": "1",
        "per_page": "100",
        "order_by": "occurred_date",
        "order_direction": "asc",
    }
    assert call.request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert call.request.headers["Accept"] == "application/json"
    assert call.request.req_kwargs["timeout"] == (3, 7)
    assert API_KEY not in call.request.url


@responses.activate
def test_it_sends_what_session_get_would_send():
    """The GET goes through the session's adapter, not Session.get: the same
    URL for the same params, the session's headers, and its cookies kept and
    sent back."""
    params = {"page": 2, "skipped": None, "status": ["a", "b c"], "day": "2026-03-14"}
    responses.get(URL, json=[], headers={"Set-Cookie": "lb=node-7; Path=/"})
    client = make_client()

    client._get("/events", params)
    client._get("/events", params)

    first, second = (call.request for call in responses.calls)
    assert first.url == requests.Request("GET", URL, params=params).prepare().url
    assert first.url.endswith("?page=2&status=a&status=b+c&day=2026-03-14")
    assert first.headers["User-Agent"] == client_module.USER_AGENT
    assert "Cookie" not in first.headers
    assert second.headers["Cookie"] == "lb=node-7"
    assert second.req_kwargs["stream"] is True


@responses.activate
def test_it_reads_the_last_page_as_next_page_none():
    responses.get(URL, json=envelope([event()]))
    assert make_client().list_events(DAY, 3).next_page is None
    assert responses.calls[0].request.params["page"] == "3"


@responses.activate
def test_it_uses_default_timeouts_well_under_the_task_timeout():
    responses.get(URL, json=envelope([]))
    make_client().list_events(DAY, 1)
    connect, read = responses.calls[0].request.req_kwargs["timeout"]
    assert 0 < connect <= 10 and 0 < read <= 60


@pytest.mark.parametrize("status", [401, 403])
@responses.activate
def test_it_classifies_a_refused_key_as_config(status):
    responses.get(URL, status=status, json={"message": "Unauthorized"})
    exc = fetch_error()
    assert isinstance(exc, ConfigError)
    assert exc.error_type == ErrorType.THIRD_PARTY_CONFIG
    assert exc.code == f"http_{status}" and exc.status == status
    assert_no_key(exc)


@responses.activate
def test_it_classifies_a_404_as_config():
    responses.get(URL, status=404, body="Not Found")
    exc = fetch_error()
    assert isinstance(exc, ConfigError) and exc.code == "http_404"
    assert "Base URL" in exc.message


@pytest.mark.parametrize("status", [301, 302, 307, 308])
@responses.activate
def test_it_does_not_follow_redirects(status):
    responses.get(URL, status=status, headers={"Location": "https://evil.example/x"})
    exc = fetch_error()
    assert isinstance(exc, ConfigError) and exc.code == f"http_{status}"
    assert len(responses.calls) == 1  # evil.example was never asked
    assert_no_key(exc)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
@responses.activate
def test_it_classifies_5xx_as_transient(status):
    responses.get(URL, status=status, json={"message": "Internal Server Error"})
    exc = fetch_error()
    assert type(exc) is TransientError
    assert exc.error_type == ErrorType.THIRD_PARTY_GENERIC
    assert exc.code == f"http_{status}" and exc.status == status
    assert_no_key(exc)


@responses.activate
def test_it_reads_too_many_requests_with_retry_after_seconds():
    responses.get(
        URL,
        status=429,
        json={"message": "Too Many Requests"},
        headers={"Retry-After": "3"},
    )
    exc = fetch_error()
    assert isinstance(exc, TooManyRequests) and not isinstance(exc, QuotaExceeded)
    assert exc.retry_after == 3.0


@responses.activate
def test_it_reads_too_many_requests_with_retry_after_http_date(time_machine):
    time_machine.move_to(datetime(2026, 3, 14, 12, 0, 0, tzinfo=UTC), tick=False)
    responses.get(
        URL,
        status=429,
        json={"message": "Too Many Requests"},
        headers={"Retry-After": "Sat, 14 Mar 2026 12:00:30 GMT"},
    )
    exc = fetch_error()
    assert isinstance(exc, TooManyRequests)
    assert exc.retry_after == pytest.approx(30.0)


@responses.activate
def test_it_reads_too_many_requests_without_retry_after():
    responses.get(URL, status=429, json={"message": "Too Many Requests"})
    exc = fetch_error()
    assert isinstance(exc, TooManyRequests) and exc.retry_after is None


@pytest.mark.parametrize("status", [429, 403])
@responses.activate
def test_it_classifies_limit_exceeded_as_quota(status):
    responses.get(
        URL,
        status=status,
        json={"message": "Limit Exceeded"},
        headers={"Retry-After": "3600"},
    )
    exc = fetch_error()
    assert isinstance(exc, QuotaExceeded)
    assert exc.code == "limit_exceeded" and exc.retry_after == 3600.0


def test_it_parses_retry_after_in_both_forms():
    now = datetime(2026, 3, 14, 12, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after("Sat, 14 Mar 2026 12:01:00 GMT", now) == 60.0
    assert parse_retry_after("Sat, 14 Mar 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("", now) is None


@responses.activate
def test_it_classifies_invalid_json():
    responses.get(URL, body='{"data": [', content_type="application/json")
    exc = fetch_error()
    assert type(exc) is TransientError and exc.code == "invalid_json"


@responses.activate
def test_it_classifies_a_body_cut_in_half():
    body = json.dumps(envelope([event(1), event(2)]))
    responses.get(URL, body=body[: len(body) // 2], content_type="application/json")
    exc = fetch_error()
    assert type(exc) is TransientError and exc.code == "invalid_json"


@responses.activate
def test_it_classifies_a_connection_cut_mid_body():
    responses.get(URL, body=requests.exceptions.ChunkedEncodingError("cut"))
    exc = fetch_error()
    assert type(exc) is TransientError and exc.code == "truncated_body"


@responses.activate
def test_it_classifies_an_html_page_with_status_200():
    responses.get(
        URL, body="<!DOCTYPE html><html><body>Maintenance</body></html>", status=200
    )
    exc = fetch_error()
    assert type(exc) is TransientError and exc.code == "html_page"


@responses.activate
def test_it_classifies_an_html_error_page_without_quoting_it():
    responses.get(
        URL,
        body="<html><head><title>502 Bad Gateway</title></head></html>",
        status=502,
        content_type="text/html",
    )
    exc = fetch_error()
    assert type(exc) is TransientError and exc.code == "http_502"
    assert "HTML error page" in exc.message and "<html" not in exc.message


@pytest.mark.parametrize(
    "doc, code",
    [
        ({"data": []}, "missing_meta"),
        ([], "missing_data"),
        ({**envelope([event()]), "meta": {"next_page": "2"}}, "malformed_meta"),
    ],
)
@responses.activate
def test_it_classifies_a_broken_envelope(doc, code):
    responses.get(URL, json=doc)
    exc = fetch_error()
    assert type(exc) is TransientError and exc.code == code


@pytest.mark.parametrize(
    "doc",
    [{"meta": envelope([])["meta"]}, {"data": {}, "meta": envelope([], 2)["meta"]}],
)
@responses.activate
def test_it_reads_a_json_page_without_a_data_list_as_unreadable(doc):
    """Not retried: the engine quarantines it whole and follows its meta."""
    responses.get(URL, json=doc)
    result = make_client().list_events(DAY, 1)
    assert result.events == [] and result.unreadable
    assert result.next_page == doc["meta"]["next_page"]
    assert json.loads(result.body) == doc


@pytest.mark.parametrize(
    "bad",
    [
        {k: v for k, v in event().items() if k != "id"},
        {k: v for k, v in event().items() if k != "occurred_date"},
        event(id=""),
        event(occurred_date=None),
        event(occurred_date="yesterday"),
        "not an object",
    ],
)
@responses.activate
def test_it_leaves_a_malformed_event_to_the_engine(bad):
    """One bad event does not fail its page: the client passes it on as sent."""
    responses.get(URL, json=envelope([event(1), bad]))
    result = make_client().list_events(DAY, 1)
    assert result.events == [event(1), bad]


@pytest.mark.parametrize(
    "raised, code",
    [
        (requests.ReadTimeout("read timed out"), "timeout"),
        (requests.ConnectTimeout("connect timed out"), "timeout"),
        (requests.ConnectionError("refused"), "connection_error"),
        (requests.exceptions.InvalidURL("bad"), "request_failed"),
    ],
)
@responses.activate
def test_it_classifies_network_failures_as_transient(raised, code):
    responses.get(URL, body=raised)
    exc = fetch_error()
    assert type(exc) is TransientError and exc.code == code
    assert exc.__cause__ is None  # nothing of requests' message is chained
    assert_no_key(exc)


@responses.activate
def test_it_refuses_a_body_over_the_size_cap(monkeypatch):
    monkeypatch.setattr(client_module, "MAX_BODY_BYTES", 1000)
    responses.get(URL, json=envelope([event(n) for n in range(20)]))
    exc = fetch_error()
    assert type(exc) is TransientError and exc.code == "body_too_large"


@responses.activate
def test_it_refuses_a_streamed_body_over_the_size_cap(monkeypatch):
    """Without a Content-Length the count of bytes read decides."""
    monkeypatch.setattr(client_module, "MAX_BODY_BYTES", 1000)
    big = json.dumps(envelope([event(n) for n in range(20)])).encode()
    responses.get(URL, body=big, auto_calculate_content_length=False)
    exc = fetch_error()
    assert exc.code == "body_too_large"


@responses.activate
def test_it_keeps_the_key_out_of_every_error():
    """The key is sent only in the Authorization header; a server that echoes
    it back does not get it into a message."""
    responses.get(URL, status=500, body=f"echo: Authorization: Bearer {API_KEY}")
    exc = fetch_error()
    assert_no_key(exc)
    client = make_client()
    assert API_KEY not in repr(client.__dict__.get("base_url"))
    assert API_KEY not in BASE


@pytest.mark.parametrize("bad_key", ["", "two words", "line\nbreak", "caf\u00e9-key"])
@responses.activate
def test_it_refuses_a_key_no_header_can_carry_before_any_request(bad_key):
    responses.get(URL, json=envelope([]))
    with pytest.raises(ConfigError) as info:
        KnowBe4Client(BASE, bad_key).list_events(DAY, 1)
    assert info.value.code == "invalid_key"
    assert len(responses.calls) == 0
    if bad_key:
        assert bad_key not in str(info.value)


@responses.activate
def test_it_calls_throttle_and_after_request_once_per_request():
    responses.get(URL, json=envelope([event()]))
    responses.get(URL, status=503)
    responses.get(URL, body=requests.ConnectionError("down"))
    seen: list[str] = []
    client = make_client(
        throttle=lambda: seen.append("throttle"),
        after_request=lambda: seen.append("after"),
    )
    client.list_events(DAY, 1)
    for _ in range(2):
        with pytest.raises(TransientError):
            client.list_events(DAY, 1)
    assert seen == ["throttle", "after"] * 3
    assert len(responses.calls) == 3


@responses.activate
def test_it_reads_one_event_by_id():
    doc = event(7)
    responses.get(f"{URL}/{doc['id']}", json={"data": doc})
    assert make_client().get_event(doc["id"]) == doc


def test_it_parses_occurred_dates_as_utc():
    assert parse_occurred("2022-08-09T10:05:13.890Z") == datetime(
        2022, 8, 9, 10, 5, 13, 890000, tzinfo=UTC
    )
    assert parse_occurred("2022-08-09T10:05:13").tzinfo is not None
    with pytest.raises(TransientError):
        parse_occurred("09/08/2022")


@pytest.mark.parametrize("next_page", [1, 0, True])
@responses.activate
def test_it_refuses_a_next_page_that_does_not_move_forward(next_page):
    responses.get(f"{BASE}/events", json=envelope([event()], next_page=next_page))
    exc = fetch_error()
    assert isinstance(exc, TransientError)
    assert exc.code == "malformed_meta"


ODD_KEY = "kb4/key+with=odd&chars~0123456789:AbCd"


def _encoded_forms(key: str) -> dict[str, str]:
    """How a server might echo the key back: raw, URL-encoded, in base64."""
    import base64
    from urllib.parse import quote, quote_plus

    return {
        "raw": key,
        "quoted": quote(key, safe=""),
        "quoted-lower": quote(key, safe="").lower(),
        "quote_plus": quote_plus(key),
        "base64": base64.b64encode(key.encode()).decode(),
        "base64-bearer": base64.b64encode(f"Bearer {key}".encode()).decode(),
        "base64-basic": base64.b64encode(f"user:{key}".encode()).decode(),
        "base64-urlsafe": base64.urlsafe_b64encode(f"ab{key}".encode()).decode(),
    }


def _windows(text: str, size: int = 12) -> set[str]:
    return {text[i : i + size] for i in range(len(text) - size + 1)}


def _key_windows(key: str) -> set[str]:
    """Every 12-character run of the key's own encodings (9 key bytes in
    base64, at each of the three alignments): none may survive scrubbing."""
    import base64

    runs = set()
    for form in ("raw", "quoted", "quoted-lower", "quote_plus"):
        runs |= _windows(_encoded_forms(key)[form])
    for shift in range(3):
        tail = key[shift:].encode()
        runs |= _windows(base64.b64encode(tail).decode()[:-4])
        runs |= _windows(base64.urlsafe_b64encode(tail).decode()[:-4])
    return runs


@pytest.mark.parametrize("form", list(_encoded_forms(ODD_KEY)))
@pytest.mark.parametrize("offset", [0, 150, 190, 195, 199])
@responses.activate
def test_it_scrubs_every_form_of_the_key_before_cutting_the_excerpt(form, offset):
    """A key straddling the 200-character cut is removed whole, in whichever
    form the third party echoed it."""
    echoed = _encoded_forms(ODD_KEY)[form]
    responses.get(URL, status=502, body="x" * offset + echoed + " tail")
    with pytest.raises(TransientError) as info:
        KnowBe4Client(BASE, ODD_KEY).list_events(DAY, 1)
    message = info.value.message
    if offset <= 150:
        assert "[key]" in message
    assert not _key_windows(ODD_KEY) & _windows(message), message
    assert ODD_KEY[:8] not in message
    assert len(message) < 300


def test_it_finds_the_key_in_base64_at_every_alignment():
    import base64

    for prefix in ("", "a", "ab", "abc", "Bearer ", "user:"):
        token = base64.b64encode((prefix + ODD_KEY).encode()).decode()
        scrubbed = client_module.scrub(f"header {token} end", ODD_KEY)
        assert "[key]" in scrubbed
        assert not _key_windows(ODD_KEY) & _windows(scrubbed), prefix

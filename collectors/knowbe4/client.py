"""The one HTTP seam to the KnowBe4 Events API.

Everything that talks HTTP to KnowBe4 goes through `KnowBe4Client`. It sends
the key only in the Authorization header and turns every outcome into either
an `EventsPage` or a `KnowBe4Error` subclass whose type says what the engine
must do (see the seed's "Error types" table). Error messages never contain the
key: they are built from status codes, reasons and short body excerpts only.
"""

from __future__ import annotations

import base64
import email.utils
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from urllib.parse import quote, quote_plus, urlencode, urlsplit

import requests
import urllib3
from requests.cookies import extract_cookies_to_jar
from requests.hooks import default_hooks
from requests.structures import CaseInsensitiveDict

from collectors.choices import ErrorType
from collectors.knowbe4 import events

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
# The whole request, body included (setting KNOWBE4_REQUEST_DEADLINE_SECONDS):
# a server that drips its answer a byte at a time never trips READ_TIMEOUT.
TOTAL_TIMEOUT = 60.0
MAX_BODY_BYTES = 20 * 1024 * 1024
PER_PAGE = 100
USER_AGENT = "knowbe4sumo/0.1"


class KnowBe4Error(Exception):
    """A failed call, classified. `code` is short and stable (for health events)."""

    error_type: str = ErrorType.THIRD_PARTY_GENERIC

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after


class ConfigError(KnowBe4Error):
    """The source's configuration is wrong (key, region): no retry until edited."""

    error_type = ErrorType.THIRD_PARTY_CONFIG


class TransientError(KnowBe4Error):
    """KnowBe4 failed or answered garbage: retry with backoff for up to 90 min."""


class TooManyRequests(TransientError):
    """429 Too Many Requests: wait `retry_after` (or back off); not an error itself."""


class QuotaExceeded(TransientError):
    """429 Limit Exceeded: the daily quota is spent; wait for the next UTC day."""


@dataclass
class EventsPage:
    """One page of `GET /events`.

    `events` is the `data` list as sent: which entries can be stored is the
    engine's decision (`knowbe4.events.split`), made with the page's `body`
    so that a rejected entry keeps its own bytes. `unreadable` says why a
    JSON page with a usable `meta` has no `data` list (it is then quarantined
    whole and collection moves past it).
    """

    events: list
    next_page: int | None
    meta: dict = field(default_factory=dict)
    body: bytes = b""
    unreadable: str = ""
    # Parsed by orjson: its values re-encode exactly (`events.dumps`).
    native: bool = False


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds else None  # NaN: ignore
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def _is_read_timeout(exc: BaseException) -> bool:
    """requests reports a read timeout while streaming the body as a
    ConnectionError wrapping urllib3's ReadTimeoutError."""
    return any(isinstance(arg, urllib3.exceptions.ReadTimeoutError) for arg in exc.args)


def _deadline_setting() -> float:
    """KNOWBE4_REQUEST_DEADLINE_SECONDS when Django is configured, else 60 s."""
    try:
        from django.conf import settings

        return float(
            getattr(settings, "KNOWBE4_REQUEST_DEADLINE_SECONDS", TOTAL_TIMEOUT)
        )
    except Exception:  # settings not configured (a script using the client alone)
        return TOTAL_TIMEOUT


def _socket_of(resp: requests.Response):
    """The response's socket (to bound each read by the time left), or None."""
    connection = getattr(resp.raw, "connection", None)
    return getattr(connection, "sock", None)


def _looks_like_html(body: bytes) -> bool:
    return body.lstrip()[:1] == b"<"


def _excerpt(text: str, limit: int = 200) -> str:
    """The start of already scrubbed text, whitespace collapsed, cut to `limit`."""
    return " ".join(text[: limit * 4].split())[:limit]


def key_forms(key: str) -> list[str]:
    """The key as a third party might echo it: raw, URL-encoded, base64.

    Base64 of a longer text (say of "Bearer <key>") holds the key's encoding
    only where the key starts on a 3-byte boundary, so the whole-group core of
    the encoding is taken at each of the three alignments; at most two bytes
    at either edge stay encoded, never the key.
    """
    forms = {key, quote(key, safe=""), quote(key), quote_plus(key)}
    raw = key.encode()
    for shift in range(3):
        tail = raw[shift:]
        whole = len(tail) // 3 * 3
        if whole >= 6:
            forms.add(base64.b64encode(tail[:whole]).decode())
            forms.add(base64.urlsafe_b64encode(tail[:whole]).decode())
    return sorted((f for f in forms if f), key=len, reverse=True)


def scrub(text: str, key: str, mark: str = "[key]") -> str:
    """`text` with every form of `key` replaced by `mark` (case ignored for
    percent-encoding's hex digits; over-matching only hides more)."""
    if not key:
        return text
    pattern = "|".join(re.escape(form) for form in key_forms(key))
    return re.sub(pattern, lambda _: mark, text, flags=re.IGNORECASE)


class KnowBe4Client:
    """A client for one source's Base URL and key; one `requests.Session` per run.

    `throttle`, when given, is called before every request (the shared 4/s
    limiter) and `after_request` after it, so limits are enforced at the seam.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        total_timeout: float | None = None,
        throttle: Callable[[], None] | None = None,
        after_request: Callable[[], None] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # A key no HTTP header can carry is a configuration error, found before
        # any request (and never echoed: requests would quote it in its error).
        self.key_usable = bool(api_key) and all(33 <= ord(ch) <= 126 for ch in api_key)
        self.host = urlsplit(self.base_url).netloc
        self.total_timeout = (
            total_timeout if total_timeout is not None else _deadline_setting()
        )
        # No single wait may outlast the whole request's deadline either.
        self.timeout = (
            min(connect_timeout, self.total_timeout),
            min(read_timeout, self.total_timeout),
        )
        self.throttle = throttle
        self.after_request = after_request
        self.session = requests.Session()
        self.session.headers.update(
            {
                "Authorization": f"Bearer {api_key}",
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
            }
        )
        # Never hand the key to a netrc or proxy lookup through the environment.
        self.session.trust_env = False

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> KnowBe4Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def list_events(self, day: date, page: int, per_page: int = PER_PAGE) -> EventsPage:
        """Read one page of the events that occurred on `day` (UTC), oldest first."""
        params = {
            "occurred_date": day.isoformat(),
            "page": page,
            "per_page": per_page,
            "order_by": "occurred_date",
            "order_direction": "asc",
        }
        body = self._get("/events", params)
        result = self._parse_page(body)
        if result.next_page is not None and result.next_page <= page:
            # Following it would re-read the same pages forever.
            raise TransientError(
                "malformed_meta",
                f"KnowBe4's 'meta.next_page' ({result.next_page}) does not move past "
                f"page {page}.",
            )
        return result

    def _get(self, path: str, params: dict) -> bytes:
        """GET a path; return the body of a 200 or raise a classified error."""
        if not self.key_usable:
            raise ConfigError(
                "invalid_key",
                "The API key is empty or contains characters an API key cannot "
                "have (spaces, line breaks, non-ASCII). Paste it again.",
            )
        if self.throttle:
            self.throttle()
        deadline = time.monotonic() + self.total_timeout
        try:
            resp = self._send(self.base_url + path, params)
            try:
                body = self._read_capped(resp, deadline)
            finally:
                resp.close()
        except urllib3.exceptions.ReadTimeoutError:
            if time.monotonic() >= deadline:
                raise self._past_deadline() from None
            raise TransientError(
                "timeout", "KnowBe4 stopped sending the response (read timeout)."
            ) from None
        except urllib3.exceptions.ProtocolError:
            raise TransientError(
                "truncated_body",
                "KnowBe4's response ended before the length it announced "
                "(connection cut mid-body).",
            ) from None
        except requests.Timeout as exc:
            raise TransientError(
                "timeout", f"KnowBe4 did not answer in time ({type(exc).__name__})."
            ) from None
        except requests.exceptions.ChunkedEncodingError:
            raise TransientError(
                "truncated_body",
                "KnowBe4's response ended before the length it announced "
                "(connection cut mid-body).",
            ) from None
        except requests.ConnectionError as exc:
            if _is_read_timeout(exc):
                raise TransientError(
                    "timeout", "KnowBe4 stopped sending the response (read timeout)."
                ) from None
            raise TransientError(
                "connection_error", f"Could not connect to {self.host}."
            ) from None
        except requests.RequestException as exc:
            raise TransientError(
                "request_failed",
                f"The request to {self.host} failed ({type(exc).__name__}).",
            ) from None
        finally:
            if self.after_request:
                self.after_request()
        self._raise_for_status(resp, body)
        return body

    def _send(self, url: str, params: dict) -> requests.Response:
        """Send the GET through the session's adapter, streaming the body.

        What `Session.get` sends (the session's headers and cookies, its TLS
        settings, no redirect followed), without the work it does on every
        call that a GET to KnowBe4 never needs: merging the environment's
        settings (trust_env is off), dispatching hooks, parsing and quoting
        the URL again. That was a third of a request's CPU, on the fetch
        thread that competes with the run's INSERTs for the GIL. The URL is
        the allowed Base URL and our own path; the query is encoded as
        `requests` encodes params (None left out, a list repeated).
        """
        query = [(name, value) for name, value in params.items() if value is not None]
        prepared = requests.PreparedRequest()
        prepared.method = "GET"
        prepared.url = url + ("?" + urlencode(query, doseq=True) if query else "")
        prepared.headers = CaseInsensitiveDict(self.session.headers)
        prepared.body = None
        prepared.hooks = default_hooks()
        prepared.prepare_cookies(self.session.cookies)
        resp = self.session.get_adapter(url).send(
            prepared,
            stream=True,
            timeout=self.timeout,
            verify=self.session.verify,
            cert=self.session.cert,
            proxies={},
        )
        extract_cookies_to_jar(self.session.cookies, prepared, resp.raw)
        return resp

    def _read_capped(self, resp: requests.Response, deadline: float) -> bytes:
        """Read the body before `deadline`, refusing one over MAX_BODY_BYTES
        or cut short.

        One socket read at a time (`read1`), each allowed only the time left,
        so a body sent a byte at a time still ends at the deadline.
        """
        announced = resp.headers.get("Content-Length", "")
        if announced.isdigit() and int(announced) > MAX_BODY_BYTES:
            raise TransientError(
                "body_too_large",
                f"KnowBe4 announced a response over {MAX_BODY_BYTES // 2**20} MB.",
                status=resp.status_code,
            )
        sock = _socket_of(resp)
        chunks, size = [], 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._past_deadline()
            if sock is not None:
                sock.settimeout(min(self.timeout[1], left))
            chunk = resp.raw.read1(64 * 1024, decode_content=True)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise TransientError(
                    "body_too_large",
                    f"KnowBe4 sent a response over {MAX_BODY_BYTES // 2**20} MB.",
                    status=resp.status_code,
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _past_deadline(self) -> TransientError:
        return TransientError(
            "timeout",
            f"KnowBe4 did not send the whole response within "
            f"{self.total_timeout:g} s (the request deadline).",
        )

    def _raise_for_status(self, resp: requests.Response, body: bytes) -> None:
        status = resp.status_code
        if status == 200:
            return
        # Scrubbed whole, then cut: a cut first could split the key so that
        # its first half no longer matches and reaches a health event.
        text = _excerpt(self._scrub(body.decode("utf-8", "replace")))
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        if "limit exceeded" in text.lower():
            raise QuotaExceeded(
                "limit_exceeded",
                "The daily request quota of this API key is spent (Limit Exceeded).",
                status=status,
                retry_after=retry_after,
            )
        if status == 429:
            raise TooManyRequests(
                "too_many_requests",
                "KnowBe4 asked us to slow down (429 Too Many Requests).",
                status=status,
                retry_after=retry_after,
            )
        if status in (401, 403):
            raise ConfigError(
                f"http_{status}",
                f"KnowBe4 refused the API key (HTTP {status}). The key may be wrong, "
                "reset, or for another region.",
                status=status,
            )
        if status == 404:
            raise ConfigError(
                "http_404",
                f"{self.host} has no Events API (HTTP 404): check the Base URL.",
                status=status,
            )
        if 300 <= status < 400:
            raise ConfigError(
                f"http_{status}",
                f"{self.host} redirected the request (HTTP {status}), which is not "
                "followed. Check the Base URL.",
                status=status,
            )
        reason = resp.reason or "error"
        if _looks_like_html(body):
            text = "an HTML error page"
        raise TransientError(
            f"http_{status}",
            f"KnowBe4 answered HTTP {status} {reason}" + (f": {text}" if text else "."),
            status=status,
            retry_after=retry_after,
        )

    def _scrub(self, text: str) -> str:
        """Remove the key from text quoted from a response (a server that
        echoes request headers must not put the key in a health event)."""
        key = self.session.headers.get("Authorization", "")[len("Bearer ") :]
        return scrub(text, key)

    def get_event(self, event_id: str) -> dict:
        """Read one event by id (`GET /events/{id}`)."""
        body = self._get("/events/" + quote(event_id, safe=""), {})
        try:
            doc = json.loads(body)
        except ValueError:
            raise TransientError("invalid_json", "KnowBe4 sent invalid JSON.") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
            raise TransientError(
                "missing_data", "KnowBe4's response has no 'data' object."
            )
        return doc["data"]

    def _parse_page(self, body: bytes) -> EventsPage:
        """Validate the `{"data": [...], "meta": {...}}` envelope (not the events:
        one bad event must not fail its page)."""
        try:
            doc, native = events.loads(body)
        except ValueError:
            if _looks_like_html(body):
                raise TransientError(
                    "html_page",
                    "KnowBe4 sent an HTML page instead of JSON (a proxy or "
                    "maintenance page?).",
                ) from None
            raise TransientError(
                "invalid_json",
                f"KnowBe4 sent invalid JSON (possibly truncated; {len(body)} bytes).",
            ) from None
        if not isinstance(doc, dict):
            raise TransientError(
                "missing_data", "KnowBe4's response has no 'data' list."
            )
        meta = doc.get("meta")
        if not isinstance(meta, dict):
            raise TransientError(
                "missing_meta", "KnowBe4's response has no 'meta' object."
            )
        next_page = meta.get("next_page")
        if next_page is not None and (
            not isinstance(next_page, int) or isinstance(next_page, bool)
        ):
            raise TransientError(
                "malformed_meta", "KnowBe4's 'meta.next_page' is not a number."
            )
        data = doc.get("data")
        if not isinstance(data, list):
            # Well-formed JSON whose events cannot be told apart: the same
            # answer would come back on every retry, so it is not retried.
            return EventsPage([], next_page, meta, body, "The page has no 'data' list.")
        return EventsPage(data, next_page, meta, body, native=native)


def parse_occurred(value: str) -> datetime:
    """Parse an event's `occurred_date` (ISO 8601, UTC) or raise TransientError."""
    try:
        return events.parse_occurred(value)
    except events.UnreadableDate:
        raise TransientError(
            "malformed_event",
            f"KnowBe4 sent an unreadable occurred_date {str(value)[:40]!r}.",
        ) from None

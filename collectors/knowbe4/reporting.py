"""The one HTTP seam to the KnowBe4 KMSAT Reporting API (`/v1/...`).

Everything that talks HTTP to a Reporting host goes through `ReportingClient`.
It reuses the Events client's transport (explicit connect/read timeouts, the
total request deadline, the body cap, no redirects, no environment proxies or
netrc, the key only in the Authorization header), so both APIs fail the same
way, and it classifies the Reporting API's own answers into the same
`KnowBe4Error` types, whose type tells the engine what to do.

The Reporting API differs where it matters for paging (see
`shared/knowbe4-reporting-api.md`): list responses are bare JSON arrays, so a
page shorter than the page size the endpoint honours (or an empty one) is the
only end signal; `per_page` is at most 500; `/v1/training/campaigns` honours 10
per page unless `exclude_percentages=true` is sent, so this client always sends
it there. Every response carries an `X-Request-Id` that KnowBe4 support asks
for: it is kept on every page and quoted in every error message.

Text quoted from a response is scrubbed of every form of the key *before* it
is cut to an excerpt, so a half key never survives into a health event.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import requests

from collectors.knowbe4.client import (
    CONNECT_TIMEOUT,
    READ_TIMEOUT,
    ConfigError,
    KnowBe4Client,
    KnowBe4Error,
    QuotaExceeded,
    TooManyRequests,
    TransientError,
    _excerpt,
    _looks_like_html,
    parse_retry_after,
)

__all__ = [
    "MAX_PER_PAGE",
    "ConfigError",
    "KnowBe4Error",
    "NotFound",
    "QuotaExceeded",
    "ReportPage",
    "ReportingClient",
    "TooManyRequests",
    "TransientError",
    "child_path",
    "honoured_page_size",
]

MAX_PER_PAGE = 500
# Endpoints that honour fewer records per page than asked unless told
# otherwise: {path: (page size, parameter that lifts the cap)}.
CAPPED_ENDPOINTS = {"/v1/training/campaigns": (10, "exclude_percentages")}
# A 429 whose Retry-After is longer than this cannot be the per-second or
# per-minute limit: it is the daily one (KnowBe4 does not document the bodies).
DAILY_RETRY_AFTER = 120.0


class NotFound(ConfigError):
    """404. On a list endpoint the region has no Reporting API (configuration);
    on one record's sub-resource (a group's members, a test's recipients) the
    record went away between two requests, which the reader may skip."""


@dataclass
class ReportPage:
    """One page of a list endpoint, as sent.

    `records` is the JSON array unchanged: which entries can be stored is the
    reader's decision, so one bad record never fails its page. `last` says the
    dataset ends here (fewer records than the honoured page size).
    """

    path: str
    page: int
    per_page: int
    records: list
    body: bytes = b""
    request_id: str = ""

    @property
    def last(self) -> bool:
        return len(self.records) < self.per_page


def honoured_page_size(path: str, params: dict, per_page: int) -> int:
    """The page size `path` really uses when asked for `per_page` with `params`
    (the only way to read a short page as the end)."""
    capped = CAPPED_ENDPOINTS.get(path)
    if capped is None:
        return per_page
    cap, lifted_by = capped
    if str(params.get(lifted_by, "")).lower() == "true":
        return per_page
    return min(cap, per_page)


def child_path(template: str, record_id: object) -> str:
    """`template` ("/v1/groups/{}/members") filled with a record's id, checked
    to be a non-negative integer (ids can exceed 2**31), so a record's content
    can never steer the request to another path. ValueError otherwise."""
    if isinstance(record_id, bool) or not isinstance(record_id, (int, str)):
        raise ValueError(f"not a record id: {record_id!r}")
    text = str(record_id)
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        raise ValueError(f"not a record id: {text[:40]!r}")
    return template.format(int(text))


class _Transport(KnowBe4Client):
    """The Events client's transport with the Reporting API's classification.

    Private: only `ReportingClient` uses it, and it exposes none of the Events
    API's methods."""

    last_request_id: str = ""

    def _raise_for_status(self, resp: requests.Response, body: bytes) -> None:
        """Keep the X-Request-Id, then classify anything but a 200."""
        self.last_request_id = _request_id(resp)
        status = resp.status_code
        if status == 200:
            return
        cite = f" (X-Request-Id {self.last_request_id})" if self.last_request_id else ""
        # Scrubbed whole, then cut: a cut first could split the key so that
        # its first half no longer matches and reaches a health event.
        text = _excerpt(self._scrub(body.decode("utf-8", "replace")))
        if _looks_like_html(body):
            text = "an HTML error page"
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        if status == 429:
            raise _too_many(text, retry_after, cite)
        if status in (401, 403):
            raise ConfigError(
                f"http_{status}",
                f"KnowBe4 refused the Reporting API key (HTTP {status}){cite}. The "
                "key may be wrong, reset, a User Event API key, for another region, "
                "or the plan may not include the Reporting API.",
                status=status,
            )
        if status == 404:
            raise NotFound(
                "http_404",
                f"{self.host} has no such Reporting API resource (HTTP 404){cite}: "
                "check the Region.",
                status=status,
            )
        if 300 <= status < 400:
            raise ConfigError(
                f"http_{status}",
                f"{self.host} redirected the request (HTTP {status}){cite}, which "
                "is not followed. Check the Region.",
                status=status,
            )
        reason = resp.reason or "error"
        raise TransientError(
            f"http_{status}",
            f"KnowBe4 answered HTTP {status} {reason}{cite}"
            + (f": {text}" if text else "."),
            status=status,
            retry_after=retry_after,
        )


def _request_id(resp: requests.Response) -> str:
    """The response's X-Request-Id, reduced to characters safe in a log line."""
    value = resp.headers.get("X-Request-Id") or ""
    return "".join(ch for ch in value[:100] if ch.isascii() and ch.isprintable())


def _too_many(text: str, retry_after: float | None, cite: str) -> TooManyRequests:
    """A 429, told apart by what it says: the daily limit when the body says
    "daily" or the wait is longer than the burst window can need, else the
    per-second or burst limit (whose bodies also say "limit exceeded")."""
    daily = "daily" in text.lower() or (
        retry_after is not None and retry_after > DAILY_RETRY_AFTER
    )
    if daily:
        return QuotaExceeded(
            "limit_exceeded",
            f"The daily request limit of this Reporting API key is spent{cite}.",
            status=429,
            retry_after=retry_after,
        )
    return TooManyRequests(
        "too_many_requests",
        f"KnowBe4 asked us to slow down (429 Too Many Requests){cite}.",
        status=429,
        retry_after=retry_after,
    )


def _decode(body: bytes, request_id: str) -> object:
    """The JSON document of a 200, or TransientError naming what came instead."""
    cite = f" (X-Request-Id {request_id})" if request_id else ""
    try:
        return json.loads(body)
    except ValueError:
        if _looks_like_html(body):
            raise TransientError(
                "html_page",
                f"KnowBe4 sent an HTML page instead of JSON{cite} (a proxy or "
                "maintenance page?).",
            ) from None
        raise TransientError(
            "invalid_json",
            f"KnowBe4 sent invalid JSON{cite} (possibly truncated; {len(body)} bytes).",
        ) from None


class ReportingClient:
    """A client for one Reporting source's region and key; one session per run.

    `throttle`, when given, is called before every request and `after_request`
    after it (the engine's limiter and quota governor), so the limits are
    enforced at the seam.
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
        self._http = _Transport(
            base_url,
            api_key,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            total_timeout=total_timeout,
            throttle=throttle,
            after_request=after_request,
        )
        self.host = self._http.host
        self.timeout = self._http.timeout

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ReportingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def last_request_id(self) -> str:
        """The X-Request-Id of the last answer (for logs and health events)."""
        return self._http.last_request_id

    def get_page(
        self,
        path: str,
        page: int = 1,
        *,
        params: dict | None = None,
        per_page: int = MAX_PER_PAGE,
    ) -> ReportPage:
        """Read page `page` (1-based) of the list endpoint `path`."""
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise ValueError(f"per_page must be 1..{MAX_PER_PAGE}, not {per_page}")
        if page < 1:
            raise ValueError(f"page must be >= 1, not {page}")
        query = dict(params or {})
        if path in CAPPED_ENDPOINTS:
            query.setdefault(CAPPED_ENDPOINTS[path][1], "true")
        query.update(page=page, per_page=per_page)
        self._http.last_request_id = ""  # a failed connection has none
        body = self._http._get(path, query)
        request_id = self.last_request_id
        doc = _decode(body, request_id)
        if not isinstance(doc, list):
            cite = f" (X-Request-Id {request_id})" if request_id else ""
            raise TransientError(
                "not_a_list",
                f"KnowBe4's answer to {path} is not a JSON array{cite}.",
            )
        return ReportPage(
            path=path,
            page=page,
            per_page=honoured_page_size(path, query, per_page),
            records=doc,
            body=body,
            request_id=request_id,
        )

    def iter_pages(
        self,
        path: str,
        *,
        params: dict | None = None,
        start_page: int = 1,
        per_page: int = MAX_PER_PAGE,
    ) -> Iterator[ReportPage]:
        """Every page of `path` from `start_page` through the first short one.

        A server that ignores `page` would send the same full page forever:
        two identical full pages in a row stop the walk with a TransientError.
        """
        page, previous = start_page, b""
        while True:
            result = self.get_page(path, page, params=params, per_page=per_page)
            digest = hashlib.sha256(result.body).digest()
            if result.records and digest == previous:
                raise TransientError(
                    "paging_stuck",
                    f"KnowBe4 sent the same page of {path} for pages {page - 1} "
                    f"and {page}: the page parameter is not honoured.",
                )
            yield result
            if result.last:
                return
            page, previous = page + 1, digest

    def get_list(self, path: str, params: dict | None = None) -> list:
        """Read an unpaged JSON array in one request (risk score histories:
        the reference documents no paging for them, and `full=true` returns
        the whole history)."""
        self._http.last_request_id = ""
        body = self._http._get(path, dict(params or {}))
        doc = _decode(body, self.last_request_id)
        if not isinstance(doc, list):
            raise TransientError(
                "not_a_list", f"KnowBe4's answer to {path} is not a JSON array."
            )
        return doc

    def get_object(self, path: str, params: dict | None = None) -> dict:
        """Read one JSON object (`/v1/account`, `/v1/users/{id}`, ...)."""
        self._http.last_request_id = ""
        body = self._http._get(path, dict(params or {}))
        doc = _decode(body, self.last_request_id)
        if not isinstance(doc, dict):
            raise TransientError(
                "not_an_object", f"KnowBe4's answer to {path} is not a JSON object."
            )
        return doc

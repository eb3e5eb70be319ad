"""Test connection: does KnowBe4 accept this API key at this Base URL?

The Add/Edit Source form's button sends what the user typed (or, on an edit,
nothing in the key field: the stored key, only to the Base URL it was entered
for). One request through the shared per-key limiter, so it counts against
the key's limits like any other: on the KnowBe4 (User Event) form the one a
run uses to authenticate (one `/events` item for the newest closed day), on
the KMSAT Reporting form `GET /v1/account` through the Reporting client
(`check_reporting`). The answer is said in words; nothing in it comes from
the key.

Tries are limited per user (`TRIES_PER_MINUTE`), counted in the database so
that every web process sees the same count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, timedelta

from django.db import transaction
from django.utils import timezone

from collectors import crypto, ledger, ratelimit
from collectors.knowbe4.client import (
    ConfigError,
    KnowBe4Client,
    QuotaExceeded,
    TooManyRequests,
    TransientError,
)
from collectors.knowbe4.reporting import ReportingClient
from collectors.models import ConnectionTest

TRIES_PER_MINUTE = 5
# The longest a try waits for a slot of the key's limiter (the 4/s limit;
# the Reporting burst limit can be a minute away: said instead of waited).
MAX_WAIT = 5.0
UNREACHABLE_CODES = ("connection_error", "timeout", "request_failed")


@dataclass(frozen=True)
class Outcome:
    """What Test connection found, for the form."""

    kind: str  # authenticated, unauthorized, unreachable, quota, or another failure
    message: str

    @property
    def ok(self) -> bool:
        return self.kind == "authenticated"


def allow_try(user) -> bool:
    """Count one try of `user`; False once they made TRIES_PER_MINUTE in the
    last minute (the refused try is not counted)."""
    now = timezone.now()
    since = now - timedelta(minutes=1)
    with transaction.atomic():
        ConnectionTest.objects.filter(at__lt=since).delete()
        if ConnectionTest.objects.filter(user=user).count() >= TRIES_PER_MINUTE:
            return False
        ConnectionTest.objects.create(user=user, at=now)
    return True


def check(base_url: str, api_key: str) -> Outcome:
    """One authenticated User Event API request with `api_key` to `base_url`
    (one `/events` item of the newest closed day), classified."""
    from collectors.days import last_collectable_day

    def make(throttle, after) -> KnowBe4Client:
        return KnowBe4Client(base_url, api_key, throttle=throttle, after_request=after)

    def request(client: KnowBe4Client) -> None:
        client.list_events(last_collectable_day(timezone.now()), 1, per_page=1)

    return _checked(api_key, ledger.EVENTS, make, request, _refused)


def check_reporting(base_url: str, api_key: str) -> Outcome:
    """One KMSAT Reporting API request with `api_key` to `base_url`, through
    the Reporting seam: `GET /v1/account`, one small object, the cheapest
    request that needs a valid Reporting key; counted in the key's Reporting
    window, apart from its User Event one."""

    def make(throttle, after) -> ReportingClient:
        return ReportingClient(
            base_url, api_key, throttle=throttle, after_request=after
        )

    def request(client: ReportingClient) -> None:
        client.get_object("/v1/account")

    return _checked(api_key, ledger.REPORTING, make, request, _refused_reporting)


def _checked(api_key: str, api: str, make, request, refused) -> Outcome:
    """Run `request` on a client from `make(throttle, after_request)` (the
    key's shared limiter of `api`, so the try counts against its limits, and
    never waits more than a few seconds for a slot) and put what happened in
    words; a spent daily limit is remembered for the key as a run does."""
    key_hash = crypto.key_fingerprint(api_key)
    now = timezone.now()
    blocked = ratelimit.quota_blocked_until(key_hash, api)
    if blocked and blocked > now:
        return _quota(blocked)
    limiter = ratelimit.limiter_for(key_hash, api)
    client = make(lambda: limiter.acquire(longest=MAX_WAIT), limiter.release)
    with client:
        try:
            request(client)
        except ratelimit.WaitLonger as wait:
            seconds = max(1, int(wait.at - time.time() + 0.999))
            return Outcome(
                "throttled",
                "Collection is using this key's request limit (at most 50 requests "
                f"a minute on the Reporting API): try again in {seconds} s.",
            )
        except QuotaExceeded as exc:
            until = (
                now + timedelta(seconds=exc.retry_after)
                if exc.retry_after
                else ledger.window(api, key_hash, now).resets_at
            )
            ratelimit.mark_quota_exhausted(key_hash, until, api)
            return _quota(until)
        except ConfigError as exc:
            return refused(exc, client.host)
        except TooManyRequests:
            return Outcome(
                "throttled",
                "KnowBe4 asked to slow down (429 Too Many Requests): other "
                "requests are using this key. Try again in a few seconds.",
            )
        except TransientError as exc:
            if exc.code == "connection_error":
                return Outcome("unreachable", exc.message)
            if exc.code in UNREACHABLE_CODES:
                return Outcome(
                    "unreachable", f"Could not reach {client.host}. {exc.message}"
                )
            return Outcome("failed", exc.message)
    return Outcome(
        "authenticated",
        f"{client.host} accepted the API key (one request, counted against its "
        "limits).",
    )


def _refused(exc: ConfigError, host: str) -> Outcome:
    if exc.code == "invalid_key":
        return Outcome("unauthorized", exc.message)
    if exc.status in (401, 403):
        return Outcome(
            "unauthorized",
            f"{host} refused the API key (HTTP {exc.status}). "
            "It may be wrong, reset, or a key for another region: check the Base "
            "URL too.",
        )
    return Outcome("failed", exc.message)


def _refused_reporting(exc: ConfigError, host: str) -> Outcome:
    if exc.status in (401, 403):
        return Outcome(
            "unauthorized",
            f"{host} refused the Reporting API key (HTTP {exc.status}). It may be "
            "wrong, reset, a User Event API key instead of the Reporting one, or a "
            "key for another region (check the Region too); the KnowBe4 plan must "
            "include the Reporting API.",
        )
    return Outcome("failed", exc.message)


def _quota(until) -> Outcome:
    when = until.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return Outcome(
        "quota",
        f"The daily limit of this API key is used up (Limit Exceeded); it resets "
        f"at {when}, and the key cannot be checked before then.",
    )


def too_many_tries() -> Outcome:
    return Outcome(
        "too_many_tries",
        f"Test connection can be used {TRIES_PER_MINUTE} times a minute; wait a "
        "minute and try again.",
    )

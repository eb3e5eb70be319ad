"""Every KnowBe4 request has a total deadline that also covers a body sent
slowly: a server dripping its answer a byte at a time never trips the read
timeout, and past the deadline the request is a ThirdPartyGeneric timeout."""

from __future__ import annotations

from datetime import timedelta

import pytest

from collectors import engine
from collectors.choices import ErrorType, HealthEventName
from collectors.knowbe4.client import KnowBe4Client, TransientError
from collectors.knowbe4.sandbox import utc_today
from collectors.models import HealthEvent
from tests import engine_support as es
from tests.sandbox_support import SANDBOX_KEY, running_sandbox

clock, sb = es.clock, es.sb

# A page of 100 events is ~40 kB: dripped a byte every 10 ms it would take
# over six minutes, so only the deadline can end the request.
DRIP_EVERY = 0.01


def closed_day():
    """A closed day inside the sandbox's window."""
    return utc_today() - timedelta(days=2)


@pytest.fixture
def dripping():
    with running_sandbox(rate_limit=False, quota=False) as server:
        server.inject(kind="drip", delay=DRIP_EVERY, count=1)
        yield server


def test_it_gives_up_on_a_dripped_body_at_the_deadline(dripping):
    client = KnowBe4Client(
        dripping.url, SANDBOX_KEY, read_timeout=30, total_timeout=0.5
    )
    with pytest.raises(TransientError) as info:
        client.list_events(closed_day(), 1)
    assert info.value.code == "timeout"
    assert info.value.error_type == ErrorType.THIRD_PARTY_GENERIC
    assert "within 0.5 s" in info.value.message
    # The next request (no fault) is read whole.
    assert client.list_events(closed_day(), 1).events


def test_it_reads_the_deadline_from_the_settings(settings):
    settings.KNOWBE4_REQUEST_DEADLINE_SECONDS = 7
    client = KnowBe4Client("https://example.invalid", SANDBOX_KEY)
    assert client.total_timeout == 7
    assert client.timeout == (5.0, 7)  # no single wait outlasts the deadline


def test_it_a_run_records_the_timeout_as_third_party_generic(settings, sb, collector):
    settings.KNOWBE4_REQUEST_DEADLINE_SECONDS = 0.5
    source = es.sandbox_source(settings, sb, collector)
    sb.inject(kind="drip", delay=DRIP_EVERY, count=1)

    result = engine.run(source.pk)

    assert result.outcome != "caught_up"
    event = HealthEvent.objects.get(source=source)
    assert event.event_name == HealthEventName.THIRD_PARTY_GENERIC
    assert event.error_code == "timeout"
    assert "request deadline" in event.message
    assert es.stored_ids(source) == []

"""Output delivery: batches, the checkpoint, retries, 429, the seed's error
types, replays, filters and holes in the ids, against a local receiver."""

from __future__ import annotations

import gzip
import json
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from collectors.choices import ErrorType, Severity
from collectors.models import HealthEvent, LogMessage
from outputs import delivery
from outputs.models import Output
from tests.cast import make_collector, make_messages, make_output, make_source
from tests.receiver_support import running_receiver


@pytest.fixture(autouse=True)
def _local(settings, monkeypatch):
    """Loopback receivers are allowed; in-run retries do not really wait."""
    settings.EGRESS_ALLOW_PRIVATE = True
    settings.OUTPUT_HOLE_WAIT = timedelta(0)
    waits: list[float] = []
    monkeypatch.setattr(delivery, "sleep", waits.append)
    return waits


@pytest.fixture
def rx():
    with running_receiver() as receiver:
        yield receiver


def ids_in(received) -> list[int]:
    """The message ids of an NDJSON request, in order."""
    body = received.body
    if received.headers.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    return [json.loads(line)["message_id"] for line in body.splitlines()]


def output_events(output: Output):
    return HealthEvent.objects.for_resource("Output", output.pk)


def test_it_delivers_every_message_in_batches_and_moves_the_checkpoint(db, rx):
    ids = make_messages(make_source(make_collector()), 25)
    output = make_output(rx.url("/in"), max_batch_count=10)

    result = delivery.run(output.pk)

    assert (result.outcome, result.batches, result.delivered) == ("caught_up", 3, 25)
    assert [len(ids_in(r)) for r in rx.requests] == [10, 10, 5]
    assert [i for r in rx.requests for i in ids_in(r)] == ids
    output.refresh_from_db()
    assert output.checkpoint == ids[-1]
    assert (output.delivered, output.batches, output.replays) == (25, 3, 0)
    assert output.inflight_until is None
    assert output.lease_owner == ""
    assert delivery.run(output.pk).requests == 0  # nothing new: no request


def test_it_keeps_batches_within_the_byte_limit(db, rx):
    make_messages(make_source(make_collector()), 40)
    output = make_output(rx.url(), max_batch_bytes=2_000, compress=False)

    delivery.run(output.pk)

    sizes = [len(r.body) for r in rx.requests]
    assert len(sizes) > 1 and max(sizes) <= 2_000
    assert sum(len(ids_in(r)) for r in rx.requests) == 40


def test_it_moves_the_checkpoint_only_after_a_2xx(db, rx, _local):
    ids = make_messages(make_source(make_collector()), 5)
    output = make_output(rx.url())
    rx.statuses = [500, 502, 503]

    result = delivery.run(output.pk)

    assert (result.outcome, result.requests) == ("retrying", 3)
    assert _local == [1.0, 2.0]  # backoff between the in-run attempts
    output.refresh_from_db()
    assert output.checkpoint == 0
    assert output.next_attempt_at > timezone.now()
    assert output.failures == 1 and output.error_streak_started is not None
    assert "503" in output.last_error
    event = output_events(output).get()
    assert (event.error_type, event.severity) == (
        ErrorType.THIRD_PARTY_GENERIC,
        Severity.WARNING,
    )
    assert output.replays == 0  # a refused batch is not a replay

    with time_machine.travel(output.next_attempt_at + timedelta(seconds=1)):
        assert delivery.run(output.pk).delivered == 5
    output.refresh_from_db()
    assert output.checkpoint == ids[-1] and output.replays == 0
    assert not output_events(output).open().exists()  # success resolves it


def test_it_retries_inside_the_run_after_one_failure(db, rx):
    make_messages(make_source(make_collector()), 3)
    output = make_output(rx.url())
    rx.statuses = [500]

    result = delivery.run(output.pk)

    assert (result.requests, result.delivered, result.outcome) == (2, 3, "caught_up")
    assert not output_events(output).exists()


@pytest.mark.parametrize("status", [401, 403, 404])
def test_it_stops_on_config_errors_until_the_output_is_edited(db, rx, status):
    make_messages(make_source(make_collector()), 3)
    output = make_output(rx.url())
    rx.statuses = [status]

    result = delivery.run(output.pk)

    assert (result.outcome, result.requests) == ("config_error", 1)
    output.refresh_from_db()
    assert output.error_type == ErrorType.THIRD_PARTY_CONFIG
    event = output_events(output).get()
    assert (event.error_type, event.severity) == (
        ErrorType.THIRD_PARTY_CONFIG,
        Severity.ERROR,
    )
    assert event.error_code == f"http_{status}"
    with time_machine.travel(timezone.now() + timedelta(days=1)):
        assert delivery.run(output.pk).outcome == "config_error"
    assert len(rx.requests) == 1  # no retry until edited

    output.reconfigured()
    assert delivery.run(output.pk).delivered == 3


def test_it_waits_out_a_short_retry_after(db, rx, _local):
    make_messages(make_source(make_collector()), 2)
    output = make_output(rx.url())
    rx.respond = None
    answers = iter([(429, {"Retry-After": "3"}, b"slow down")])
    rx.respond = lambda req: next(answers, (200, {}, b"ok"))

    result = delivery.run(output.pk)

    assert (result.requests, result.delivered) == (2, 2)
    assert _local == [3.0]
    assert not output_events(output).exists()  # 429 is not an error


def test_it_comes_back_after_a_long_retry_after(db, rx):
    make_messages(make_source(make_collector()), 2)
    output = make_output(rx.url())
    rx.respond = lambda req: (429, {"Retry-After": "120"}, b"")

    with time_machine.travel(timezone.now(), tick=False) as clock:
        result = delivery.run(output.pk)
        output.refresh_from_db()
        assert result.outcome == "throttled"
        assert output.next_attempt_at == timezone.now() + timedelta(seconds=120)
        assert output.checkpoint == 0 and not output_events(output).exists()
        clock.shift(60)
        assert delivery.run(output.pk).outcome == "not_due"
    assert len(rx.requests) == 1


def test_it_counts_a_replay_after_a_timeout(db, rx, settings):
    """A request that got no answer may have been taken: the next sending of
    those messages is a replay, and is counted."""
    ids = make_messages(make_source(make_collector()), 4)
    output = make_output(rx.url())
    settings.OUTPUT_REQUEST_TIMEOUT = 0.5
    release = __import__("threading").Event()

    def slow_once(req):
        if len(rx.requests) == 1:
            release.wait(10)
        return 200, {}, b"ok"

    rx.respond = slow_once
    try:
        first = delivery.run(output.pk)
    finally:
        release.set()
    # The first attempt timed out; the in-run retry re-sent the same batch.
    assert first.delivered == 4 and first.requests == 2
    assert first.replayed == 4
    output.refresh_from_db()
    assert output.checkpoint == ids[-1]
    assert (output.replays, output.replayed_messages) == (1, 4)
    assert rx.wait_for(2)[0].body == rx.requests[1].body


def test_it_counts_a_replay_of_a_batch_left_in_flight(db, rx):
    """A run that died with a batch on the wire left `inflight_until` above
    the checkpoint: the next run sends those messages again as a replay."""
    ids = make_messages(make_source(make_collector()), 6)
    output = make_output(rx.url())
    Output.objects.filter(pk=output.pk).update(checkpoint=ids[1], inflight_until=ids[3])

    result = delivery.run(output.pk)

    assert (result.delivered, result.replayed) == (4, 2)
    output.refresh_from_db()
    assert (output.replays, output.replayed_messages) == (1, 2)
    assert output.inflight_until is None and output.checkpoint == ids[-1]
    assert ids_in(rx.requests[0]) == ids[2:]


def test_it_forwards_only_what_the_filter_matches(db, rx):
    collector = make_collector()
    wanted = make_source(collector, "A", category="Security/KnowBe4")
    other = make_source(collector, "B", category="Audit/Other")
    make_messages(wanted, 3)
    make_messages(other, 3)
    late = make_messages(wanted, 2, first=3, category="Security/Late")[-2:]
    output = make_output(rx.url(), category_pattern="security/*")

    delivery.run(output.pk)

    got = [i for r in rx.requests for i in ids_in(r)]
    expected = list(
        LogMessage.objects.filter(source=wanted)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    assert got == expected and set(late) <= set(got)
    output.refresh_from_db()
    assert output.checkpoint == LogMessage.objects.order_by("pk").last().pk
    assert output.backlog() == (0, None)


def test_it_forwards_one_source_and_nothing_once_it_is_deleted(db, rx):
    collector = make_collector()
    a, b = make_source(collector, "A"), make_source(collector, "B")
    make_messages(a, 2)
    make_messages(b, 2)
    output = make_output(rx.url(), source=a, source_label="Production / A")
    delivery.run(output.pk)
    assert len([i for r in rx.requests for i in ids_in(r)]) == 2

    a.delete()
    make_messages(b, 2, first=2)
    output.refresh_from_db()
    assert output.source_id is None and output.filters_source
    delivery.run(output.pk)
    assert len(rx.requests) == 1  # a deleted source's filter matches nothing
    assert output.backlog()[0] == 0
    assert Output.objects.filter(pk=output.pk).with_backlogs()[0].backlog_count == 0


def test_it_waits_at_a_young_hole_in_the_ids(db, rx, settings):
    settings.OUTPUT_HOLE_WAIT = timedelta(seconds=60)
    ids = make_messages(make_source(make_collector()), 5)
    LogMessage.objects.filter(pk=ids[2]).delete()  # as if still uncommitted
    now = timezone.now()
    LogMessage.objects.update(receipt_time=now)
    output = make_output(rx.url(), checkpoint=ids[0] - 1)

    with time_machine.travel(now, tick=False) as clock:
        result = delivery.run(output.pk)
        assert (result.outcome, result.delivered) == ("waiting", 2)
        assert Output.objects.get(pk=output.pk).checkpoint == ids[1]
        clock.shift(61)
        assert delivery.run(output.pk).delivered == 2
    assert [i for r in rx.requests for i in ids_in(r)] == [
        ids[0],
        ids[1],
        ids[3],
        ids[4],
    ]


def test_it_never_runs_twice_at_once(db, rx):
    make_messages(make_source(make_collector()), 2)
    output = make_output(rx.url())
    assert delivery.take_lease(output.pk, "otherhost:1:abc")

    assert delivery.run(output.pk).outcome == "lease_held"
    assert rx.requests == []


def test_it_refuses_a_private_destination_as_a_config_error(db, rx, settings):
    settings.EGRESS_ALLOW_PRIVATE = False
    make_messages(make_source(make_collector()), 2)
    output = make_output("https://127.0.0.1:9/in")

    result = delivery.run(output.pk)

    assert result.outcome == "config_error" and rx.requests == []
    event = output_events(output).get()
    assert event.error_code == "destination_refused"
    assert "loopback" in event.message


def test_it_never_writes_the_url_or_token_into_health_or_results(db, rx):
    make_messages(make_source(make_collector()), 1)
    secret_url = rx.url("/receiver/v1/http/ZaVnC4dhaV0_SECRET_TOKEN")
    output = make_output(secret_url, format="hec", token="hec-token-SECRET-1234")
    rx.statuses = [503, 503, 503]

    result = delivery.run(output.pk)

    output.refresh_from_db()
    event = output_events(output).get()
    texts = [str(result), output.last_error, event.message, event.suggested_fix]
    assert not any("SECRET" in t for t in texts), texts
    assert rx.requests[0].headers["Authorization"] == "Splunk hec-token-SECRET-1234"


def test_it_turns_a_long_streak_into_an_error_but_keeps_retrying(db, rx):
    make_messages(make_source(make_collector()), 1)
    output = make_output(rx.url())
    rx.respond = lambda req: (500, {}, b"down")
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        delivery.run(output.pk)
        clock.shift(timedelta(minutes=91))
        Output.objects.filter(pk=output.pk).update(next_attempt_at=None)
        assert delivery.run(output.pk).outcome == "retrying"
    output.refresh_from_db()
    event = output_events(output).get()
    assert event.severity == Severity.ERROR and event.count == 2
    assert output.next_attempt_at is not None  # never gives up silently


def test_it_stops_sending_when_the_output_is_edited_or_disabled_meanwhile(
    db, rx, monkeypatch
):
    ids = make_messages(make_source(make_collector()), 9)
    output = make_output(rx.url(), max_batch_count=3)
    real_post = delivery.egress.post
    edits = [
        lambda: Output.objects.get(pk=output.pk).reconfigured(),
        lambda: Output.objects.get(pk=output.pk).set_enabled(False),
    ]

    def post_then_edit(*args, **kw):
        response = real_post(*args, **kw)
        if edits:
            edits.pop(0)()  # a user saves the form while the batch is answered
        return response

    monkeypatch.setattr(delivery.egress, "post", post_then_edit)
    first = delivery.run(output.pk)
    assert (first.outcome, first.batches, first.more) == ("reconfigured", 1, True)
    assert Output.objects.get(pk=output.pk).checkpoint == ids[2]  # recorded

    second = delivery.run(output.pk)
    assert (second.outcome, second.batches) == ("disabled", 1)
    assert Output.objects.get(pk=output.pk).checkpoint == ids[5]
    assert len(rx.requests) == 2

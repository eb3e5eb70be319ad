"""`make run`'s demo output: created once, pointed at the local receiver, and
it delivers the collected messages there."""

from __future__ import annotations

from outputs import delivery
from outputs.demo import DEMO_OUTPUT, ensure_demo_output
from outputs.models import Output
from outputs.receiver import ReceiverServer
from tests.cast import make_collector, make_messages, make_source


def test_it_creates_the_demo_output_once_and_keeps_a_users_edits(db):
    lines = ensure_demo_output("http://127.0.0.1:8766")
    output = Output.objects.get(name=DEMO_OUTPUT)
    assert output.get_url() == "http://127.0.0.1:8766/demo"
    assert any("http://127.0.0.1:8766/demo" in line for line in lines)
    Output.objects.filter(pk=output.pk).update(enabled=False)

    ensure_demo_output("http://127.0.0.1:8766")

    assert Output.objects.get().enabled is False


def test_it_delivers_the_collected_messages_to_the_receiver(db, settings):
    settings.EGRESS_ALLOW_PRIVATE = True
    ids = make_messages(make_source(make_collector()), 1200)
    said: list[str] = []
    receiver = ReceiverServer(echo=said.append)
    receiver.start()
    try:
        ensure_demo_output(receiver.url)
        Output.objects.update(checkpoint=ids[0] - 1)
        result = delivery.run(Output.objects.get().pk)
    finally:
        receiver.stop()
    assert result.delivered == 1200
    assert receiver.stats["distinct"] == 1200 and receiver.stats["repeats"] == 0
    assert len(said) == 3 and said[-1].endswith("1200 distinct message(s) so far")
    assert "[Security/KnowBe4]" in said[0]

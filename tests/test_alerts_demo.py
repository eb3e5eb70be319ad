"""`make run`'s demo: the monitors run_all creates fire into the email backend
and the sandbox's webhook receiver once the sandbox's events are stored."""

from __future__ import annotations

import pytest

from alerts import checks, notify
from alerts.demo import ensure_demo
from alerts.models import Connection, Monitor, Notification
from collectors import engine
from tests.cast import make_collector
from tests.engine_support import sandbox_source
from tests.sandbox_support import running_sandbox

pytestmark = pytest.mark.django_db


def test_it_creates_the_demo_once_and_leaves_edits_alone():
    ensure_demo("http://127.0.0.1:8765")
    Monitor.objects.filter(name__startswith="Demo: KnowBe4").update(threshold=7)
    ensure_demo("http://127.0.0.1:8765")
    assert Connection.objects.count() == 2 and Monitor.objects.count() == 2
    assert Monitor.objects.get(name__startswith="Demo: KnowBe4").threshold == 7


def test_it_fires_into_the_mail_and_the_sandbox_webhook(settings, mailoutbox):
    settings.EGRESS_ALLOW_PRIVATE = True  # what run_all sets for its children
    with running_sandbox(days=3, events_per_day=5, rate_limit=False) as sb:
        ensure_demo(sb.url)
        source = sandbox_source(settings, sb, make_collector(), initial_lookback_days=2)
        assert engine.run(source.pk).stored > 0
        assert checks.check_monitors() == 1
        assert notify.deliver_due() == 2
        (body,) = sb.state.webhooks
    assert body["monitor"]["name"] == "Demo: KnowBe4 events stored"
    assert body["state"] == "triggered"
    (mail,) = mailoutbox
    assert mail.subject == "[knowbe4sumo] Triggered: Demo: KnowBe4 events stored"
    assert set(Notification.objects.values_list("status", flat=True)) == {"sent"}

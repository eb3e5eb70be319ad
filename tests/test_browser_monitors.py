"""In Chromium: create a log monitor from the Messages page ("Create
monitor" prefills the filter), collect from the sandbox so it triggers, and
see the notification in the Notifications log."""

from __future__ import annotations

import pytest
from django.urls import reverse

from alerts import checks, notify
from alerts.models import Monitor
from collectors import engine
from tests.alerts_support import make_connection
from tests.cast import make_collector
from tests.conftest import artifacts_dir
from tests.engine_support import sandbox_source
from tests.sandbox_support import running_sandbox

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("transactional_db")]


def test_it_creates_a_log_monitor_from_messages_and_sees_it_notify(
    page, live_server, settings, mailoutbox
):
    connection = make_connection(name="SOC mail", recipients="soc@example.org")
    with running_sandbox(days=3, events_per_day=5, rate_limit=False) as sb:
        source = sandbox_source(settings, sb, make_collector(), initial_lookback_days=2)
        page.goto(f"{live_server.url}{reverse('messages')}?category=Security/*")
        page.click("#create-monitor")
        page.wait_for_url("**/monitors/add/**")
        assert page.input_value("#id_category") == "Security/*"
        assert page.is_checked("#id_kind input[value=log]")
        assert page.is_hidden("fieldset[data-kinds=health]")
        page.fill("#id_name", "Any KnowBe4 event")
        page.fill("#id_threshold", "0")
        page.fill("#id_window_minutes", "60")
        page.check(f"#id_connections input[value='{connection.pk}']")
        page.screenshot(path=str(artifacts_dir() / "monitor-form.png"), full_page=True)
        page.click("#monitor-form button[type=submit]")
        page.wait_for_url("**/monitors/*/")
        monitor = Monitor.objects.get()
        assert monitor.query == {"category": "Security/*"}
        assert page.inner_text(".mon") == "OK"

        # The sandbox's events arrive: the next minute's check triggers.
        stored = engine.run(source.pk).stored
        assert stored > 0
    assert checks.check_monitors() == 1
    assert notify.deliver_due() == 1

    page.reload()
    assert page.inner_text("h1 .mon") == "Triggered"
    assert f"{stored} matching messages" in page.inner_text("table.triggers")
    page.screenshot(path=str(artifacts_dir() / "monitor-detail.png"), full_page=True)
    page.click("nav.mainnav >> text=Notifications")
    row = page.locator("table.notifications tbody tr").first
    text = row.inner_text()
    assert "Any KnowBe4 event" in text and "SOC mail" in text
    assert "Sent" in text and "Mailed to 1 recipient" in text
    page.screenshot(path=str(artifacts_dir() / "notifications-log.png"))
    (mail,) = mailoutbox
    assert mail.subject == "[knowbe4sumo] Triggered: Any KnowBe4 event"

"""The quota governor: each API key's daily budget (10 x Licensed users, or
learned from the first Limit Exceeded), the closed-day pass and re-scans
reserved first, today's polling widened as the budget runs low, no Limit
Exceeded while the budget is known, and the figures on the source page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from collectors import crypto, engine, governor, ledger, lifecycle
from collectors.choices import HealthEventName, Severity, SourceState
from collectors.models import ApiKeyUsage, HealthEvent, LogMessage
from tests import engine_support as es
from tests.cast import make_source
from tests.sandbox_support import running_sandbox

clock = es.clock
MIDNIGHT = datetime.combine(es.TODAY + timedelta(days=1), datetime.min.time(), UTC)


def used_today(key: str, used: int) -> ApiKeyUsage:
    """The key's ledger row with `used` requests in today's window."""
    row, _ = ApiKeyUsage.objects.update_or_create(
        api="events",
        key_hash=key,
        defaults={
            "used": used,
            "window_opened_at": MIDNIGHT - timedelta(days=1),
            "window_resets_at": MIDNIGHT,
        },
    )
    return row


@pytest.fixture(autouse=True)
def database_limiter(settings):
    """The key's use counted in the database, on the moved clock: the Redis
    backend takes its time from the Redis server (the real day)."""
    settings.REDIS_URL = ""


@pytest.mark.django_db
def test_it_plans_a_day_with_a_known_budget(clock, collector):
    source = make_source(collector, licensed_users=5, rescan_days=1)
    plan = governor.plan(source)
    assert plan.budget == 50 and not plan.learned
    assert plan.used == 0 and plan.left == 50
    assert plan.resets_at == MIDNIGHT
    cost = plan.costs[source.pk]
    # No events yet: a page a day. The pass when a day closes reads it and
    # re-reads one day; the clock re-reads that day 3 more times (6 h).
    assert (cost.closed_day, cost.rescans, cost.today) == (2, 3, 0)
    assert plan.projected == 5 and not plan.overrun
    # Still to come today: the first pass (2) and the re-scans at 18:00 (1).
    assert plan.reserve == 2 + 1
    assert plan.for_polling == 50 - 3


@pytest.mark.django_db
def test_it_plans_a_day_without_a_budget(clock, collector):
    source = make_source(collector, collect_today=True, today_poll_minutes=15)
    plan = governor.plan(source)
    assert plan.budget is None and plan.left is None and plan.for_polling is None
    # A poll falls due every 13.5 min (15 less the dispatcher's lag) plus the page.
    assert plan.costs[source.pk].today == 106 + 1
    assert not plan.overrun
    assert governor.poll_interval(source, plan, es.NOON) == timedelta(minutes=15)


@pytest.mark.django_db
def test_it_learns_the_budget_from_a_limit_exceeded(clock, collector):
    source = make_source(collector)
    key = crypto.key_fingerprint(source.get_api_key())
    used_today(key, 31)
    ledger.learn("events", key)
    plan = governor.plan(source)
    assert plan.budget == 30 and plan.learned and plan.left == 0


@pytest.mark.django_db
def test_it_shares_one_budget_among_the_sources_of_a_key(clock, collector):
    a = make_source(collector, "A", api_key="kb4-shared-key-0123456789", rescan_days=2)
    b = make_source(
        collector,
        "B",
        api_key="kb4-shared-key-0123456789",
        licensed_users=3,
        collect_today=True,
    )
    other = make_source(collector, "C", api_key="kb4-other-key-0123456789")
    key = crypto.key_fingerprint("kb4-shared-key-0123456789")
    used_today(key, 7)

    plan_a, plan_b = governor.plan(a), governor.plan(b)
    assert plan_a.budget == plan_b.budget == 30
    assert set(plan_a.costs) == set(plan_b.costs) == {a.pk, b.pk}
    assert plan_a.used == plan_b.used == 7 and plan_a.left == 23
    assert (
        plan_a.projected
        == plan_b.projected
        == sum(c.total for c in plan_a.costs.values())
    )
    assert plan_a.overrun  # B's polls every 15 min alone are 97 a day.
    alone = governor.plan(other)
    assert alone.budget is None and set(alone.costs) == {other.pk}


@pytest.mark.django_db
def test_it_widens_todays_polling_as_the_budget_runs_low(clock, collector):
    source = make_source(
        collector, licensed_users=10, collect_today=True, today_poll_minutes=5
    )
    key = crypto.key_fingerprint(source.get_api_key())
    intervals = []
    for used in (0, 60, 90, 96, 97):
        used_today(key, used)
        plan = governor.plan(source)
        intervals.append(governor.poll_interval(source, plan, es.NOON))
    # 12 h to the reset; 100 - reserve (3) - used left for the polls, which
    # fall due that far apart (each interval less the dispatcher's lag).
    spacings = [governor.poll_spacing(i) for i in intervals[:4]]
    assert spacings[0] == timedelta(hours=12) / 97  # wider than 5 min
    assert spacings[1] == timedelta(hours=12) / 37
    assert spacings[2] == timedelta(hours=12) / 7
    assert spacings[3] == timedelta(hours=12)
    assert intervals[4] is None  # Only the reserve is left: no poll today.
    source.licensed_users = 1000  # Plenty: the setting itself.
    plan = governor.plan(source)
    assert governor.poll_interval(source, plan, es.NOON) == timedelta(minutes=5)
    assert intervals[1] < intervals[2] < intervals[3]


def test_it_causes_no_limit_exceeded_over_a_day_with_the_budget_known(
    settings, clock, collector
):
    # A key allowed 30 requests a day; today's polls every 5 minutes and the
    # re-scan every 15 would want hundreds.
    with running_sandbox(days=10, events_per_day=50, seats=3) as sb:
        source = es.sandbox_source(
            settings,
            sb,
            collector,
            licensed_users=3,
            collect_today=True,
            today_poll_minutes=5,
            rescan_interval_minutes=15,
            initial_lookback_days=2,
        )
        when = es.NOON
        while when < MIDNIGHT + timedelta(hours=1):
            clock.move_to(when)
            if lifecycle.due_sources().filter(pk=source.pk).exists():
                engine.run(source.pk)
            when += timedelta(minutes=5)
        statuses = [r.status for r in es.api_requests(sb)]

    assert 429 not in statuses
    assert not HealthEvent.objects.filter(error_code="limit_exceeded").exists()
    # The day's budget was spent in full, and the new day started afresh.
    today = [r for r in es.api_requests(sb) if r.time < MIDNIGHT.timestamp()]
    assert len(today) == 30
    warning = HealthEvent.objects.get(
        source=source, event_name=HealthEventName.QUOTA_OVERRUN, resolved_at=None
    )
    assert warning.severity == Severity.WARNING
    assert "poll interval" in warning.suggested_fix
    source.refresh_from_db()
    assert source.last_complete_day == es.TODAY  # The closed day, after the reset.


def test_it_shows_the_figures_on_the_source_page_and_the_form(
    settings, admin_client, clock, collector
):
    with running_sandbox(days=10, events_per_day=50) as sb:
        source = es.sandbox_source(settings, sb, collector, licensed_users=4)
        engine.run(source.pk)
    page = admin_client.get(source.get_absolute_url()).content.decode()
    form = admin_client.get(f"/sources/{source.pk}/edit/").content.decode()
    for html in (page, form):
        assert '<dd class="quota-budget"><strong>40</strong> requests' in html
        assert '<dd class="quota-used">7</dd>' in html
        assert '<dd class="quota-left">33</dd>' in html
        assert "2026-03-11 00:00 UTC" in html
        assert '<dd class="quota-projected"><strong>5</strong> requests' in html


def test_it_checks_a_key_with_a_request_from_the_budget_or_waits_for_the_reset(
    settings, admin_client, clock, collector
):
    """Started -> Initialized -> Authenticated sends one request to check the
    key: it is taken from the budget like any other, and when the budget is
    spent it is not sent; the source waits for the reset with a Warning."""
    settings.COLLECTION_DISPATCH_ON_SAVE = False
    with running_sandbox(days=10, events_per_day=50) as sb:
        source = es.sandbox_source(settings, sb, collector, licensed_users=1)
        key = crypto.key_fingerprint(source.get_api_key())
        assert engine.run(source.pk).outcome == "caught_up"
        used = ledger.window("events", key).used
        assert used == len(es.api_requests(sb))
        # Restarted (a new key, a Base URL, or Restart): the key is checked again.
        source.refresh_from_db()
        assert source.restart()
        used_today(key, 9)
        sb.clear_requests()
        assert engine.run(source.pk).outcome == "caught_up"
        assert len(es.api_requests(sb)) == 1  # the check, counted
        assert ledger.window("events", key).used == 10

        source.refresh_from_db()
        assert source.restart()
        sb.clear_requests()
        result = engine.run(source.pk)
        assert result.outcome == "budget_spent" and result.requests == 0
        assert es.api_requests(sb) == []  # nothing sent past the budget
        assert ledger.window("events", key).used == 10
        source.refresh_from_db()
        assert source.state == SourceState.INITIALIZED
        assert source.next_attempt_at == MIDNIGHT
        warning = HealthEvent.objects.get(source=source, resolved_at=None)
        assert warning.severity == Severity.WARNING
        assert warning.error_code == "budget_spent"
        assert "2026-03-11 00:00 UTC" in warning.message
        page = admin_client.get(source.get_absolute_url()).content.decode()
        assert "2026-03-11 00:00" in page.split("Next attempt", 1)[1][:400]
        assert engine.run(source.pk).outcome == "not_due"

        clock.move_to(MIDNIGHT + timedelta(minutes=1))
        assert engine.run(source.pk).outcome == "caught_up"
        source.refresh_from_db()
        assert source.state == SourceState.COLLECTING
        assert not HealthEvent.objects.filter(
            source=source, error_code="budget_spent", resolved_at=None
        ).exists()
        assert ledger.window("events", key).used >= 1  # the new day's window


REPORTING = "kb4-reporting-key-0123456789"


def reporting_source(collector, name="KMSAT", key=REPORTING, **conf):
    return make_source(collector, name, api_key=key, kind="reporting", reporting=conf)


@pytest.mark.django_db
def test_it_plans_a_reporting_key_with_its_rolling_limit(clock, collector):
    a = reporting_source(collector, "A", data_types=["phishing", "users"], poll_hours=6)
    b = reporting_source(collector, "B", data_types=["users"], licensed_users=300)
    # The same key string as an events source: another API, another budget.
    events = make_source(collector, "E", api_key="kb4-reporting-key-0123456789")
    plan = governor.plan(a)
    assert plan.rolling and not plan.window_open
    assert plan.budget == 2000 + 300 and set(plan.costs) == {a.pk, b.pk}
    hours = (plan.resets_at - es.NOON) / timedelta(hours=1)
    assert 24 <= hours < 24.01  # if it opened now (the clock ticks)
    # Nothing stored yet: a list page per list (phishing and callback tests,
    # and none of the recipients of tests not seen), 4 snapshots a day.
    assert plan.costs[a.pk].per_snapshot == {"phishing": 2, "users": 1}
    assert plan.costs[a.pk].total == 12 and plan.costs[b.pk].total == 1
    assert governor.plan(events).budget is None
    assert set(governor.plan(events).costs) == {events.pk}

    key = crypto.key_fingerprint("kb4-reporting-key-0123456789")
    opened = es.NOON - timedelta(hours=20)
    assert ledger.take("reporting", key, plan.budget, opened)
    plan = governor.plan(b)
    assert plan.window_open and plan.used == 1 and plan.left == 2299
    assert plan.resets_at == opened + timedelta(hours=24)  # not UTC midnight
    assert governor.plan(events).used == 0


@pytest.mark.django_db
def test_it_projects_a_reporting_source_from_its_last_snapshot_and_records(
    clock, collector
):
    source = reporting_source(
        collector, data_types=["phishing", "groups", "account"], poll_hours=1
    )
    source.snapshot = {"requests": {"phishing_test": 2, "phishing_recipient": 40}}
    source.save()
    for n in range(1200):
        LogMessage.objects.create(
            source=source,
            event_id=f"g{n % 3}:{n}",
            raw="{}",
            message_time=es.NOON,
            data_type="group_member",
        )
    for n in range(3):
        LogMessage.objects.create(
            source=source,
            event_id=str(n),
            raw="{}",
            message_time=es.NOON,
            data_type="group",
        )
    cost = governor.plan(source).costs[source.pk]
    # Phishing: as the last snapshot read it; groups: 1 list page, then each
    # of 3 groups' members (1,200 in all: 3 pages at least); account: 2.
    assert cost.per_snapshot == {"phishing": 42, "groups": 1 + 3, "account": 2}
    assert cost.snapshots_per_day == 24
    assert cost.total == 48 * 24


@pytest.mark.django_db
def test_it_warns_when_a_reporting_source_projects_past_its_limit(clock, collector):
    source = reporting_source(collector, data_types=["users", "groups"], poll_hours=1)
    source.snapshot = {"requests": {"user": 60, "group": 1, "group_member": 40}}
    source.save()
    budget = governor.budget_of([source], None)[0]
    assert budget == 2000
    governor.review(source, budget)  # 101 a snapshot, 24 a day: 2,424
    warning = HealthEvent.objects.get(
        source=source, event_name=HealthEventName.QUOTA_OVERRUN, resolved_at=None
    )
    assert warning.severity == Severity.WARNING
    assert "project 2,424 requests per day" in warning.message
    assert "over its daily budget of 2,000" in warning.message
    assert "Raise the Poll interval (hours) (now 1 h)" in warning.suggested_fix
    assert "Set Licensed users" in warning.suggested_fix

    source.reporting = {"data_types": ["users", "groups"], "poll_hours": 24}
    source.save()
    governor.review(source, budget)
    warning.refresh_from_db()
    assert warning.resolved_at is not None  # 101 a day fits

    source.snapshot = {"requests": {"user": 2100, "group": 1, "group_member": 40}}
    source.reporting["licensed_users"] = 50
    source.save()
    governor.review(source, governor.budget_of([source], None)[0])
    warning = HealthEvent.objects.get(
        source=source, event_name=HealthEventName.QUOTA_OVERRUN, resolved_at=None
    )
    assert "“Users” costs the most (2,100 requests a snapshot)" in (
        warning.suggested_fix
    )
    assert "Licensed users" not in warning.suggested_fix


@pytest.mark.django_db
def test_it_shows_a_reporting_keys_figures_on_its_page_and_forms(
    admin_client, clock, collector
):
    source = reporting_source(
        collector, data_types=["users"], poll_hours=12, licensed_users=25
    )
    key = crypto.key_fingerprint(REPORTING)
    opened = es.NOON - timedelta(hours=2)
    for _ in range(7):
        ledger.take("reporting", key, 2025, opened)
    page = admin_client.get(source.get_absolute_url()).content.decode()
    form = admin_client.get(f"/sources/{source.pk}/edit/").content.decode()
    for html in (page, form):
        assert '<dd class="quota-budget"><strong>2,025</strong> requests' in html
        assert '<dd class="quota-used">7</dd>' in html
        assert '<dd class="quota-left">2,018</dd>' in html
        assert "2026-03-11 10:00 UTC (24 hours after the window" in html
        assert '<dd class="quota-projected"><strong>2</strong> requests' in html
        assert "2 Users; 2 snapshots a day" in html
    added = admin_client.get(
        f"/collectors/{collector.pk}/sources/new/kmsat-reporting/"
    ).content.decode()
    assert '<dd class="quota-budget"><strong>2,000</strong> requests' in added
    assert "24 hours after the next request" in added


@pytest.mark.django_db
def test_it_counts_stored_records_only_for_data_types_no_snapshot_read(
    clock, collector
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    source = reporting_source(collector, data_types=["users"])
    source.snapshot = {"requests": {"user": 3}}
    source.save()
    with CaptureQueriesContext(connection) as queries:
        assert governor.plan(source).costs[source.pk].per_snapshot == {"users": 3}
    assert not any("COUNT(DISTINCT" in q["sql"].upper() for q in queries)
    source.reporting = {"data_types": ["users", "groups"]}
    source.save()
    with CaptureQueriesContext(connection) as queries:
        per_snapshot = governor.plan(source).costs[source.pk].per_snapshot
    assert per_snapshot == {"users": 3, "groups": 1}
    assert any("COUNT(DISTINCT" in q["sql"].upper() for q in queries)

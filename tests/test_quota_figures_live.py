"""The source forms' quota figures while typing: a GET endpoint takes the
Advanced section's values as typed, checks them with the form's rules and
answers the figures fragment (or the rule a value breaks), for the KnowBe4
and the KMSAT Reporting form, for a new source and one being edited."""

from __future__ import annotations

import pytest
from django.urls import reverse

from collectors import crypto, ledger
from tests.cast import make_source, make_user

pytestmark = pytest.mark.django_db

URL = reverse("source-quota-figures")
EVENTS = {
    "kind": "events",
    "rescan_days": "1",
    "rescan_interval_minutes": "",
    "today_poll_minutes": "15",
    "licensed_users": "5",
}
REPORTING = {
    "kind": "reporting",
    "data_types": ["phishing"],
    "poll_hours": "24",
    "reporting_licensed_users": "",
}


def figures(client, **values) -> tuple[int, str]:
    response = client.get(URL, values)
    return response.status_code, response.content.decode()


def test_it_changes_the_budget_with_the_licensed_users_typed(admin_client):
    status, html = figures(admin_client, **EVENTS)
    assert status == 200
    assert '<dd class="quota-budget"><strong>50</strong> requests' in html
    status, html = figures(admin_client, **{**EVENTS, "licensed_users": "1234"})
    assert '<dd class="quota-budget"><strong>12,340</strong> requests' in html
    status, html = figures(admin_client, **{**EVENTS, "licensed_users": ""})
    assert status == 200 and "not known yet" in html


def test_it_projects_what_the_typed_settings_cost(admin_client):
    _, html = figures(admin_client, **EVENTS)
    # A page a day: the closed-day pass (2) and three re-scans on the clock.
    assert '<dd class="quota-projected"><strong>5</strong> requests' in html
    parts = "2 for the closed-day pass, 3 for re-scans, 0 for today&#x27;s polls;"
    assert f"({parts}" in html
    _, html = figures(admin_client, **{**EVENTS, "rescan_days": "0"})
    assert '<dd class="quota-projected"><strong>1</strong> request for' in html
    polling = {**EVENTS, "collect_today": "on", "today_poll_minutes": "5"}
    _, html = figures(admin_client, **polling)
    # A poll due every 3.5 min (5 less the dispatcher's lag): 411 a day, and
    # the new page, on top of the 5 above.
    assert '<dd class="quota-projected"><strong>417</strong> requests' in html
    assert "over the budget" in html


def test_it_answers_the_reporting_forms_figures(admin_client):
    status, html = figures(admin_client, **REPORTING)
    assert status == 200
    assert '<dd class="quota-budget"><strong>2,000</strong> requests' in html
    assert "24 hours after the next request" in html
    more = {
        **REPORTING,
        "data_types": ["phishing", "users", "account"],
        "poll_hours": "6",
        "reporting_licensed_users": "250",
    }
    _, html = figures(admin_client, **more)
    assert '<dd class="quota-budget"><strong>2,250</strong> requests' in html
    # (2 test lists + 1 user list + account and its history) x 4 a day.
    assert '<dd class="quota-projected"><strong>20</strong> requests' in html
    assert "4 snapshots a day" in html


def test_it_uses_the_edited_sources_key_and_use(admin_client, collector):
    source = make_source(collector, licensed_users=3)
    key = crypto.key_fingerprint(source.get_api_key())
    for _ in range(4):
        ledger.take("events", key, None)
    _, html = figures(admin_client, **{**EVENTS, "source": str(source.pk)})
    assert '<dd class="quota-used">4</dd>' in html
    assert '<dd class="quota-left">46</dd>' in html  # 5 typed, not 3 stored
    source.refresh_from_db()
    assert source.licensed_users == 3  # nothing saved


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"licensed_users": "0"}, "Licensed users: Ensure this value is greater"),
        ({"licensed_users": "lots"}, "Licensed users: Enter a whole number."),
        ({"rescan_days": "99"}, "Re-scan window (days): Ensure this value is less"),
        ({"rescan_interval_minutes": "5"}, "Re-scan interval (minutes): Ensure"),
        ({"today_poll_minutes": "1e9"}, "Poll interval (minutes): Enter a whole"),
        ({"source": "abc"}, "no longer exists"),
        ({"source": "999999"}, "no longer exists"),
    ],
)
def test_it_says_which_value_breaks_its_rule(admin_client, values, words):
    status, html = figures(admin_client, **{**EVENTS, **values})
    assert status == 400
    assert words in html and 'role="alert"' in html
    assert "quota-budget" not in html


def test_it_checks_the_reporting_values_too(admin_client):
    status, html = figures(
        admin_client, **{**REPORTING, "data_types": [], "poll_hours": "48"}
    )
    assert status == 400
    assert "Data types: Select at least one data type." in html
    assert "Poll interval (hours): Ensure this value is less than or equal to 24" in (
        html
    )


def test_it_needs_the_manage_permission(client, collector):
    assert client.get(URL, EVENTS).status_code == 302  # to sign in
    for role in ("Viewer", "Analyst"):
        user = make_user(role, username=f"u-{role}")
        client.force_login(user)
        assert client.get(URL, EVENTS).status_code == 403
    client.force_login(make_user("Collector manager", username="manager"))
    assert client.get(URL, EVENTS).status_code == 200
    assert client.post(URL, EVENTS).status_code == 405


def test_it_is_wired_into_both_forms(admin_client, collector):
    for path in (
        f"/collectors/{collector.pk}/sources/new/knowbe4/",
        f"/collectors/{collector.pk}/sources/new/kmsat-reporting/",
    ):
        html = admin_client.get(path).content.decode()
        assert f'data-quota-url="{URL}?kind=' in html
        assert "js/quota_figures.js" in html
    source = make_source(collector)
    html = admin_client.get(f"/sources/{source.pk}/edit/").content.decode()
    assert f"{URL}?kind=events&amp;source={source.pk}" in html


def test_it_answers_a_fresh_forms_figures_without_values(admin_client):
    status, html = figures(admin_client)
    assert status == 200 and "not known yet" in html  # no Licensed users
    assert '<dd class="quota-projected"><strong>5</strong> requests' in html
    status, html = figures(admin_client, kind="reporting")
    assert status == 200
    assert '<dd class="quota-budget"><strong>2,000</strong> requests' in html
    # One value given: the others are what was typed (blank), and checked.
    status, html = figures(admin_client, licensed_users="3")
    assert status == 400 and "Re-scan window (days): This field is required." in html

"""Every page of the URLconf in headless Chromium, at 1440×900 and 390×844,
and in dark mode: a screenshot under artifacts/pages/, no element wider than
the viewport on a phone, and no serious or critical axe-core violation.

The page list is built from the URLconf, so a page added later is covered
without touching this file; a URL whose arguments this file cannot fill
fails with a message saying where to add them. Views that answer GET with
405 (POST-only actions), JSON/CSV endpoints and HTML fragments (the Health
Events panel, shown opened on the Collection page instead) are skipped,
and the test says which. axe-core is vendored under static/vendor/axe and
loaded from the live server (never another host), so the coming CSP allows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.contrib.admin import site as admin_site
from django.templatetags.static import static
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from collectors import days
from collectors.choices import HealthEventName, Severity, SourceState
from collectors.models import FieldDefinition, HealthEvent, LogMessage
from tests.alerts_support import (
    make_connection,
    make_health_monitor,
    make_log_monitor,
    store_messages,
)
from tests.cast import make_collector, make_output, make_source, store_record
from tests.conftest import artifacts_dir

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("transactional_db")]

SIZES = {"desktop": (1440, 900), "phone": (390, 844)}
SERIOUS = ("serious", "critical")
# A URL argument named `pk` is filled with the object its route prefix names.
PK_BY_PREFIX = {
    "collectors/": "collector",
    "sources/": "source",
    "fields/": "field",
    "health-events/": "event",
    "monitors/": "monitor",
    "connections/": "connection",
    "notifications/": "notification",
    "outputs/": "output",
}
OTHER_ARGS = {"fmt": "csv"}
# Pages drawn signed out; every other page is drawn signed in as a superuser.
SIGNED_OUT = {"login"}

OVERFLOW_JS = """() => {
  const vw = document.documentElement.clientWidth;
  const clipped = (el) => {
    for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
      if (/(auto|scroll|hidden|clip)/.test(getComputedStyle(a).overflowX)) {
        const r = a.getBoundingClientRect();
        return r.left >= -1 && r.right <= vw + 1;
      }
    }
    return false;
  };
  const name = (el) => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
    (el.className && typeof el.className === "string"
      ? "." + el.className.trim().split(/\\s+/).join(".") : "");
  const bad = [];
  for (const el of document.body.querySelectorAll("*")) {
    const r = el.getBoundingClientRect();
    if (r.width < 2 || r.height < 2) continue;
    if ((r.right > vw + 1 || r.left < -1) && !clipped(el)) {
      bad.push(name(el) + " x=" + Math.round(r.left) + "–" + Math.round(r.right));
    }
  }
  const page = document.documentElement.scrollWidth;
  if (page > vw + 1) bad.unshift("the page scrolls sideways: " + page + " > " + vw);
  return bad.slice(0, 12);
}"""

AXE_JS = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 3).map((n) => n.target.join(" ")),
  }));
}"""


@dataclass
class Page:
    name: str
    path: str


def world() -> dict:
    """One of everything a page can show, with enough data to fill it."""
    now = timezone.now()
    prod = make_collector("Production", description="Main tenant")
    make_collector("Lab")
    ok = make_source(
        prod,
        "KnowBe4 Events",
        state=SourceState.COLLECTING,
        initial_lookback_days=30,
    )
    ok.last_success_at = now - timedelta(minutes=3)
    # Caught up: its 30 days of events below are stored, to yesterday.
    ok.last_complete_day = days.utc_day(now) - timedelta(days=1)
    ok.save()
    bad = make_source(
        prod, "KnowBe4 EU", state=SourceState.ERROR, category="Security/EU"
    )
    HealthEvent.objects.create(
        source=bad,
        event_name=HealthEventName.THIRD_PARTY_CONFIG,
        error_type="ThirdPartyConfig",
        severity=Severity.ERROR,
        message="KnowBe4 answered 401 Unauthorized",
        suggested_fix="Check the API key, then save the source",
        error_code="401",
        count=1234,  # Seen at every attempt for the last few days.
        first_seen=now - timedelta(days=3, hours=2),
        last_seen=now - timedelta(minutes=1),
    )
    HealthEvent.objects.create(
        source=ok,
        event_name=HealthEventName.THIRD_PARTY_GENERIC,
        error_type="ThirdPartyGeneric",
        severity=Severity.WARNING,
        message="Daily quota spent",
        resolved_at=now,
    )
    field = FieldDefinition.objects.create(name="department")
    types = ["phishing_click", "training_completed", "password_reuse", "mfa_disabled"]
    for day in range(29):  # Every day of the Overview's last 30, but today.
        for i in range(day % 7 + 3):
            store_messages(
                ok,
                1,
                at=now - timedelta(days=day, hours=i),
                # Collected once its UTC day had closed, as the seed's source is.
                message_time=now - timedelta(days=day + 1, hours=i),
                user=f"user{(day + i) % 12}@example.org",
                event_type=types[(day + i) % 4],
                risk_level=(day * 3 + i) % 21 - 10,
            )
    kmsat = make_source(
        prod, "KMSAT Reporting", category="Security/KMSAT", kind="reporting"
    )
    _reporting(kmsat, now)
    connection = make_connection(name="SOC mailbox")
    monitor = make_log_monitor([connection])
    make_health_monitor("error", [connection])
    notification = _notification(monitor, connection)
    return {
        "collector": prod,
        "source": ok,
        "field": field,
        "event": HealthEvent.objects.filter(resolved_at__isnull=True).first(),
        "monitor": monitor,
        "connection": connection,
        "notification": notification,
        "output": make_output("https://siem.example.org/ingest", name="SIEM"),
        "messages": LogMessage.objects.count(),
    }


def _reporting(source, now) -> None:
    """Three security tests, the last a callback test, each with two
    versions; their recipients, training enrollments and users' risk
    scores: the Overview's Reporting panels, filled."""
    day = timedelta(days=1)
    emails = [f"user{i}@example.org" for i in range(8)]
    for t, (ppp, clicked) in enumerate([(18.5, 3), (12.0, 2), (25.0, 4)]):
        start = now - (20 - 8 * t) * day
        kind = "callback" if t == 2 else "phishing"
        for version, seen in enumerate((start, start + 2 * day)):
            store_record(
                source,
                f"{kind}_test",
                {
                    "pst_id": 500 + t,
                    "name": "Help-desk callback"
                    if t == 2
                    else f"Quarterly test #{t + 1}",
                    "status": "Closed" if version else "In Progress",
                    "started_at": start.isoformat(),
                    "phish_prone_percentage": ppp + version,
                    "delivered_count": 8,
                    "clicked_count": clicked + version,
                    "data_entered_count": version,
                    "reported_count": 2 + t,
                },
                seen,
            )
        for i, email in enumerate(emails):
            store_record(
                source,
                f"{kind}_recipient",
                {
                    "recipient_id": 9000 + 10 * t + i,
                    "pst_id": 500 + t,
                    "user": {"email": email},
                    "clicked_at": (start + day).isoformat() if i <= clicked else None,
                },
                start + 2 * day,
            )
    for i, email in enumerate(emails):
        status = ["Passed", "Past Due", "In Progress", "Not Started"][i % 4]
        store_record(
            source,
            "training_enrollment",
            {
                "enrollment_id": 700 + i,
                "user": {"email": email},
                "campaign_name": f"Training wave {i % 2 + 1}",
                "status": status,
            },
            now - 3 * day,
        )
        for k, seen in enumerate((now - 25 * day, now - day)):
            store_record(
                source,
                "user",
                {
                    "id": 40 + i,
                    "email": email,
                    "current_risk_score": 20 + k * (3 * i - 4),
                },
                seen,
            )


def _notification(monitor, connection):
    from alerts.models import Notification

    return Notification.objects.create(
        monitor_name=monitor.name,
        connection_name=connection.name,
        connection=connection,
        kind=connection.kind,
        destination="soc@example.org",
        payload={"monitor": monitor.name},
    )


def url_patterns(patterns=None, prefix: str = "", namespace: str = ""):
    """(name, route, argument names) of every named URL but Django admin's."""
    for p in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(p, URLResolver):
            if p.app_name == "admin":
                continue
            ns = f"{p.namespace}:" if p.namespace else namespace
            yield from url_patterns(p.url_patterns, prefix + str(p.pattern), ns)
        elif isinstance(p, URLPattern) and p.name:
            args = list(p.pattern.regex.groupindex)
            yield namespace + p.name, prefix + str(p.pattern), args


def pages(objects: dict) -> list[Page]:
    """Every URL of the URLconf with its arguments filled, plus admin's index."""
    found = []
    for name, route, args in url_patterns():
        kwargs = {}
        for arg in args:
            if arg == "pk":
                kind = next(
                    (k for p, k in PK_BY_PREFIX.items() if route.startswith(p)), None
                )
                assert kind, (
                    f"{name} ({route}): add its route prefix to PK_BY_PREFIX and "
                    "an object to world() in tests/test_browser_pages.py"
                )
                kwargs[arg] = objects[kind].pk
            else:
                assert arg in OTHER_ARGS, f"{name}: add `{arg}` to OTHER_ARGS"
                kwargs[arg] = OTHER_ARGS[arg]
        found.append(Page(name, reverse(name, kwargs=kwargs)))
    found.append(Page("admin-index", reverse("admin:index")))
    assert len(admin_site._registry) > 0
    return found


def new_page(browser, size: str, scheme: str = "light"):
    width, height = SIZES[size]
    context = browser.new_context(
        viewport={"width": width, "height": height}, color_scheme=scheme
    )
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    return context, pg


def sign_in(pg, live_server, user) -> None:
    pg.goto(f"{live_server.url}/login/")
    pg.fill("input[name=username]", user.username)
    pg.fill("input[name=password]", "correct horse battery staple")
    pg.click("button[type=submit]")
    pg.wait_for_load_state()


def check(pg, live_server, page: Page, size: str, scheme: str, problems: list):
    """Open one page; screenshot it; collect overflow and axe problems.
    Returns why it was skipped, or None."""
    url = live_server.url + page.path
    probe = pg.request.get(url, max_redirects=0)
    if probe.status == 405:
        return "answers GET with 405 (a POST-only action)"
    assert probe.status == 200, f"{page.name}: {probe.status}"
    kind = probe.headers.get("content-type", "")
    if "text/html" not in kind:
        return f"not a page ({kind})"
    if "<main" not in probe.text() and 'id="content"' not in probe.text():
        return "an HTML fragment, not a page"
    response = pg.goto(url)
    assert response.status == 200, f"{page.name}: {response.status}"
    pg.wait_for_load_state("networkidle")
    folder = artifacts_dir() / "pages" / (size if scheme == "light" else f"{size}-dark")
    folder.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(folder / f"{page.name}.png"), full_page=True)
    if size == "phone":
        for item in pg.evaluate(OVERFLOW_JS):
            problems.append(f"{page.name} [{size}] overflows: {item}")
    pg.add_script_tag(url=live_server.url + static("vendor/axe/axe.min.js"))
    for v in pg.evaluate(AXE_JS):
        if v["impact"] in SERIOUS:
            problems.append(
                f"{page.name} [{size}/{scheme}] axe {v['impact']} {v['id']}: "
                f"{v['help']} at {v['nodes']}"
            )
    return None


@pytest.mark.parametrize(
    ("size", "scheme"), [("desktop", "light"), ("phone", "light"), ("desktop", "dark")]
)
def test_it_draws_every_page_accessibly_and_within_the_screen(
    browser, live_server, admin_user, size, scheme
):
    objects = world()
    context, pg = new_page(browser, size, scheme)
    problems, skipped, seen = [], {}, []
    try:
        sign_in(pg, live_server, admin_user)
        for page in pages(objects):
            if page.name in SIGNED_OUT or page.name == "logout":
                continue
            why = check(pg, live_server, page, size, scheme, problems)
            if why:
                skipped[page.name] = why
            else:
                seen.append(page.name)
    finally:
        context.close()
    for name in ("overview", "collection", "messages", "source-detail", "monitors"):
        assert name in seen
    print(f"checked {len(seen)} pages at {size}/{scheme}; skipped: {skipped}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("size", list(SIZES))
def test_it_draws_the_sign_in_page_accessibly(browser, live_server, size):
    context, pg = new_page(browser, size)
    problems = []
    try:
        for name in SIGNED_OUT:
            check(pg, live_server, Page(name, reverse(name)), size, "light", problems)
    finally:
        context.close()
    assert not problems, "\n".join(problems)


def test_it_collapses_the_menu_on_a_phone(browser, live_server, admin_user):
    world()
    context, pg = new_page(browser, "phone")
    try:
        sign_in(pg, live_server, admin_user)
        pg.goto(live_server.url + reverse("overview"))
        toggle = pg.locator(".menu-toggle")
        assert toggle.is_visible() and toggle.get_attribute("aria-expanded") == "false"
        messages_link = pg.locator(".mainnav a", has_text="Messages")
        assert not messages_link.is_visible()
        toggle.click()
        assert toggle.get_attribute("aria-expanded") == "true"
        for text in ("Overview", "Collection", "Messages", "Admin"):
            link = pg.locator(".mainnav a", has_text=text).first
            assert link.is_visible(), text
            box = link.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390, text
        assert pg.locator(".signout button").is_visible()
        pg.screenshot(path=str(artifacts_dir() / "phone-menu-open.png"))
        pg.keyboard.press("Escape")
        assert not messages_link.is_visible()
    finally:
        context.close()


def test_it_keeps_name_health_and_status_on_a_phone(browser, live_server, admin_user):
    objects = world()
    context, pg = new_page(browser, "phone")
    try:
        sign_in(pg, live_server, admin_user)
        pg.goto(live_server.url + reverse("collection"))
        row = pg.locator(f'tr[data-source-id="{objects["source"].pk}"]')
        for cell in (".name-cell", ".health-col", "[data-state]"):
            assert row.locator(cell).first.is_visible(), cell
        assert not row.locator(".col-category").is_visible()
        width = pg.evaluate("document.querySelector('.collection-table').scrollWidth")
        assert width <= 390
        pg.click(".columns-toggle")
        assert row.locator(".col-category").is_visible()
        pg.screenshot(path=str(artifacts_dir() / "phone-collection-all-columns.png"))

        pg.click(".columns-toggle")
        pg.click(f'tr[data-source-id="{objects["source"].pk}"] .status-icon')
        panel = pg.locator("#health-panel-slot .health-panel")
        panel.wait_for(state="visible")
        box = panel.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390
        assert abs(box["y"] + box["height"] - 844) <= 2  # a bottom sheet
        pg.screenshot(path=str(artifacts_dir() / "phone-health-panel.png"))
        pg.add_script_tag(url=live_server.url + static("vendor/axe/axe.min.js"))
        serious = [v for v in pg.evaluate(AXE_JS) if v["impact"] in SERIOUS]
        assert not serious, serious  # the open panel too
    finally:
        context.close()


def test_it_turns_messages_into_cards_on_a_phone(browser, live_server, admin_user):
    world()
    context, pg = new_page(browser, "phone")
    try:
        sign_in(pg, live_server, admin_user)
        pg.goto(live_server.url + reverse("messages"))
        first = pg.locator("table.messages tbody tr").first
        assert (
            pg.evaluate(
                "getComputedStyle(document.querySelector('table.messages tbody tr'))"
                ".display"
            )
            == "block"
        )
        box = first.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390
        label = pg.evaluate(
            "getComputedStyle(document.querySelector("
            "'table.messages td[data-label=User]'), '::before').content"
        )
        assert label == '"User"'
    finally:
        context.close()


def test_it_reaches_the_content_with_the_skip_link(browser, live_server, admin_user):
    world()
    context, pg = new_page(browser, "desktop")
    try:
        sign_in(pg, live_server, admin_user)
        pg.goto(live_server.url + reverse("messages"))
        pg.keyboard.press("Tab")
        skip = pg.locator(".skip-link")
        assert pg.evaluate("document.activeElement.className") == "skip-link"
        assert skip.is_visible()
        pg.keyboard.press("Enter")
        assert pg.evaluate("document.activeElement.id") == "main"
    finally:
        context.close()


def test_it_shows_times_in_the_browsers_zone(browser, live_server, admin_user):
    """With "My browser's time zone" chosen, a Tokyo browser sees Tokyo time."""
    world()
    width, height = SIZES["desktop"]
    context = browser.new_context(
        viewport={"width": width, "height": height}, timezone_id="Asia/Tokyo"
    )
    pg = context.new_page()
    try:
        sign_in(pg, live_server, admin_user)
        pg.goto(live_server.url + reverse("preferences"))
        assert "(Asia/Tokyo)" in pg.inner_text("#preferences-form")
        pg.check("input[value=browser]")
        pg.click("#preferences-form button[type=submit]")
        pg.wait_for_selector("[data-active-zone]")
        assert pg.inner_text("[data-active-zone]") == "Asia/Tokyo"
        pg.goto(live_server.url + reverse("messages"))
        assert "_messagetime (Asia/Tokyo)" in pg.inner_text("table.messages thead")
    finally:
        context.close()


def test_it_screenshots_the_overview_for_the_readme(browser, live_server, admin_user):
    """The Overview at 1440×900 (docs/overview.png is a copy of it)."""
    world()
    context, pg = new_page(browser, "desktop")
    try:
        sign_in(pg, live_server, admin_user)
        pg.goto(live_server.url + reverse("overview"))
        pg.wait_for_selector(".stacked-chart .seg")
        for panel in ("phishing", "repeat-clickers", "risk-drift", "training"):
            assert pg.locator(f"#panel-{panel}").is_visible()
        assert pg.locator("#panel-phishing .ppp-point").count() == 3
        callback = pg.locator("#panel-phishing tr[data-pst='502']")
        assert "Help-desk callback (callback)" in callback.inner_text()
        pg.screenshot(path=str(artifacts_dir() / "readme-overview.png"), full_page=True)
    finally:
        context.close()

"""Fixtures shared by every test file: users, a signed-in client, the cast, and
a headless Chromium page for the browser tests."""

from __future__ import annotations

import os
import shutil

import pytest
from django.contrib.auth import get_user_model

from tests.cast import make_collector, make_source, make_user

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hashing():
    """PBKDF2 at its production cost makes every signed-in test slow; the
    hasher is not what these tests are about."""
    from django.conf import settings

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True, scope="session")
def _fresh_redis_limiter_state():
    """The Redis limiter keeps each key's last request times in real time,
    outside the test database, so a second run soon after would inherit the
    first run's. Start every session from none (the daily counts are in the
    database ledger)."""
    from django.conf import settings

    from collectors import ratelimit

    if not settings.REDIS_URL:
        return
    import redis

    prefix = getattr(
        settings, "KNOWBE4_RATE_LIMIT_REDIS_PREFIX", ratelimit.REDIS_PREFIX
    )
    conn = redis.Redis.from_url(settings.REDIS_URL)
    for key in conn.scan_iter(match=f"{prefix}*", count=1000):
        conn.delete(key)


@pytest.fixture(autouse=True, scope="session")
def _client_login_with_a_request():
    """Client.login() calls authenticate() without a request, which the
    django-axes backend refuses; pass one, as the sign-in form does."""
    from django.http import HttpRequest
    from django.test import Client

    original = Client.login

    def login(self, **credentials):
        if "request" not in credentials:
            request = HttpRequest()
            request.META["REMOTE_ADDR"] = "127.0.0.1"
            credentials["request"] = request
        return original(self, **credentials)

    Client.login = login
    yield
    Client.login = original


@pytest.fixture
def admin_user(db):
    return get_user_model().objects.create_superuser(
        "alice", "alice@example.org", "correct horse battery staple"
    )


@pytest.fixture
def user(db):
    return get_user_model().objects.create_user("bob", "bob@example.org", "pw-bob-123!")


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.fixture
def role_client(client, db):
    """role_client("Viewer") -> the test client signed in as a new Viewer.

    The roles are the groups migration 0004_roles creates (tests.cast.ROLES);
    None signs in a user with no role at all.
    """

    def sign_in(role: str | None):
        client.force_login(make_user(role))
        return client

    return sign_in


@pytest.fixture
def collector(db):
    return make_collector()


@pytest.fixture
def source(collector):
    return make_source(collector)


def chromium_path() -> str | None:
    """Debian's chromium; Playwright's own browser download is never used."""
    for candidate in ("/usr/bin/chromium", shutil.which("chromium") or ""):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium, or a skip saying why (a failure if REQUIRE_BROWSER=1)."""
    path = chromium_path()
    if path is None:
        reason = "no Chromium at /usr/bin/chromium (apt-get install -y chromium)"
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(f"browser tests skipped: {reason}")
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        b.close()


def csp_violations(pg) -> list[str]:
    """Collects the page's Content-Security-Policy violations as they happen.

    Chromium reports each one on the console ("Refused to ... because it
    violates the following Content Security Policy directive"); the list fills
    as the test runs.
    """
    found: list[str] = []

    def on_console(message) -> None:
        if "Content Security Policy" in message.text:
            found.append(f"{message.text} (at {message.location.get('url')})")

    pg.on("console", on_console)
    return found


@pytest.fixture
def page(browser, live_server, admin_user):
    """A page signed in as the administrator on the live server.

    The test fails if any page it opened broke the Content-Security-Policy
    (an inline script or style, a style attribute, a foreign resource).
    """
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    violations = csp_violations(pg)
    pg.set_default_timeout(10_000)
    pg.goto(f"{live_server.url}/login/")
    pg.fill("input[name=username]", admin_user.username)
    pg.fill("input[name=password]", "correct horse battery staple")
    pg.click("button[type=submit]")
    yield pg
    context.close()
    if violations:
        pytest.fail("Content-Security-Policy violations:\n" + "\n".join(violations))


def artifacts_dir():
    """Screenshots for review go under artifacts/ (git-ignored)."""
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "artifacts"
    path.mkdir(exist_ok=True)
    return path

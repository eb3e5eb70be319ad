"""Headers and settings: CSP and Permissions-Policy on every response, no
inline code the policy would block, secrets masked in error reports and the
DEBUG page, and the proxy/HSTS settings opt-in."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import reverse
from django.views.debug import ExceptionReporter, technical_500_response

from collectors.security import mask_url_passwords

ROOT = Path(__file__).resolve().parent.parent
POLICY = (
    "default-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
REDIS_PASSWORD = "r3dis-Pa55-Qc1uster"
DB_PASSWORD = "pg-Pa55-in-a-url"


@pytest.mark.parametrize(
    "path", ["/", "/login/", "/admin/login/", "/no-such-page/", "/static/css/app.css"]
)
def test_it_sends_the_policies_on_every_response(client, db, path):
    response = client.get(path)
    assert response["Content-Security-Policy"] == POLICY
    policy = response["Permissions-Policy"]
    for feature in ("camera", "microphone", "geolocation", "payment", "usb"):
        assert f"{feature}=()" in policy


def test_it_sends_them_on_signed_in_pages_and_errors(admin_client, source):
    for url in (reverse("collection"), reverse("source-detail", args=[source.pk])):
        assert admin_client.get(url)["Content-Security-Policy"] == POLICY
    forbidden = admin_client.post(reverse("collection"))
    assert forbidden.status_code == 405
    assert forbidden["Content-Security-Policy"] == POLICY


# What the policy blocks in markup: inline scripts and styles, style
# attributes, event-handler attributes and javascript: URLs.
INLINE = re.compile(
    r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle\s*=|\son[a-z]+\s*=|javascript:",
    re.IGNORECASE,
)


def test_it_has_no_inline_code_in_any_template():
    found = []
    for path in sorted((ROOT / "templates").rglob("*.html")) + sorted(
        ROOT.glob("*/templates/**/*.html")
    ):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if INLINE.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "CSP would block:\n" + "\n".join(found)


def test_it_sets_no_style_attribute_from_scripts():
    """Scripts position things through element.style (allowed), never by
    writing a style attribute (blocked)."""
    found = []
    for path in sorted((ROOT / "static").rglob("*.js")):
        text = path.read_text()
        for n, line in enumerate(text.splitlines(), 1):
            if re.search(r"setAttribute\(\s*['\"]style|style=\\?['\"]", line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "CSP would block:\n" + "\n".join(found)


def test_it_masks_the_password_of_any_url():
    assert (
        mask_url_passwords(f"redis://:{REDIS_PASSWORD}@10.0.0.5:6379/0")
        == "redis://:********@10.0.0.5:6379/0"
    )
    assert (
        mask_url_passwords(f"see postgres://app:{DB_PASSWORD}@db/kb4 now")
        == "see postgres://app:********@db/kb4 now"
    )
    assert mask_url_passwords("https://api.events.knowbe4.com/v1") == (
        "https://api.events.knowbe4.com/v1"
    )


def _report(rf, settings, **local_values) -> ExceptionReporter:
    settings.Q_CLUSTER = {
        **settings.Q_CLUSTER,
        "redis": f"redis://:{REDIS_PASSWORD}@10.0.0.5:6379/0",
    }
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": f"redis://cache:{DB_PASSWORD}@10.0.0.6/1",
        }
    }
    request = rf.get("/", HTTP_X_BACKEND=f"postgres://app:{DB_PASSWORD}@db/x")
    try:
        broker = local_values  # A frame variable holding URLs with passwords.
        raise RuntimeError(f"could not connect ({len(broker)})")
    except RuntimeError:
        return ExceptionReporter(request, *sys.exc_info())


def test_it_masks_q_cluster_and_url_passwords_in_error_reports(rf, settings):
    report = _report(
        rf,
        settings,
        url=f"redis://:{REDIS_PASSWORD}@10.0.0.5:6379/0",
        nested={"dsn": f"postgres://app:{DB_PASSWORD}@db/kb4"},
    )
    for text in (report.get_traceback_text(), report.get_traceback_html()):
        assert REDIS_PASSWORD not in text
        assert DB_PASSWORD not in text
    html = report.get_traceback_html()
    assert "Q_CLUSTER" in html and "knowbe4sumo" in html  # the rest stays readable
    assert "10.0.0.6" in html  # the cache URL is masked, not removed


def test_it_masks_them_on_the_debug_page(rf, settings):
    settings.DEBUG = True
    report = _report(rf, settings, url=f"redis://:{REDIS_PASSWORD}@h:6379/0")
    response = technical_500_response(
        report.request, report.exc_type, report.exc_value, report.tb
    )
    body = response.content.decode()
    assert "Q_CLUSTER" in body
    assert REDIS_PASSWORD not in body and DB_PASSWORD not in body


def settings_under(**env) -> dict:
    """Security settings as a fresh process reads them from this environment."""
    code = (
        "import json, django; django.setup(); from django.conf import settings as s;"
        "print(json.dumps({k: getattr(s, k, None) for k in ("
        "'SECURE_PROXY_SSL_HEADER', 'SECURE_HSTS_INCLUDE_SUBDOMAINS',"
        "'SECURE_HSTS_PRELOAD', 'SECURE_HSTS_SECONDS', 'AXES_FAILURE_LIMIT')},"
        "default=str))"
    )
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SECURE_", "TRUST_", "SIGNIN_"))
    }
    production = {
        "DEBUG": "0",
        "SECRET_KEY": "x" * 60,
        "FIELD_ENCRYPTION_KEYS": "Oe0tE4Jq2JRdXk7bEr3yBv4cJkbX4QnK2Mf1aPzF3hI=",
        "DJANGO_SETTINGS_MODULE": "knowbe4sumo.settings",
    }
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**base, **production, **env},
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_it_trusts_x_forwarded_proto_only_when_told():
    assert settings_under()["SECURE_PROXY_SSL_HEADER"] is None
    told = settings_under(TRUST_X_FORWARDED_PROTO="1")
    assert told["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]


def test_it_makes_hsts_preload_and_subdomains_opt_in():
    default = settings_under()
    assert default["SECURE_HSTS_SECONDS"] == 31536000
    assert default["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is False
    assert default["SECURE_HSTS_PRELOAD"] is False
    opted = settings_under(SECURE_HSTS_INCLUDE_SUBDOMAINS="1", SECURE_HSTS_PRELOAD="1")
    assert opted["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True
    assert opted["SECURE_HSTS_PRELOAD"] is True


def test_it_reads_the_sign_in_limit_from_the_environment():
    assert settings_under()["AXES_FAILURE_LIMIT"] == 5
    assert settings_under(SIGNIN_FAILURE_LIMIT="3")["AXES_FAILURE_LIMIT"] == 3


@pytest.mark.parametrize(
    "env", [{}, {"SECURE_HSTS_INCLUDE_SUBDOMAINS": "1", "SECURE_HSTS_PRELOAD": "1"}]
)
def test_it_passes_the_deploy_check(env):
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env={
            # The browser fixture sets DJANGO_ALLOW_ASYNC_UNSAFE in this process;
            # a deployment never has it, and Django's deploy check refuses it.
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith("SECURE_") and k != "DJANGO_ALLOW_ASYNC_UNSAFE"
            },
            "DEBUG": "0",
            "SECRET_KEY": "k" * 30 + "Zq81xYw-deploy-check-0123456789abcdef",
            "FIELD_ENCRYPTION_KEYS": "Oe0tE4Jq2JRdXk7bEr3yBv4cJkbX4QnK2Mf1aPzF3hI=",
            "ALLOWED_HOSTS": "collector.example.com",
            **env,
        },
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr

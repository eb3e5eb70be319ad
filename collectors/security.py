"""Keeps secrets out of Django's error reports and the DEBUG page, and adds
the Content-Security-Policy and Permissions-Policy headers to every response."""

from __future__ import annotations

import re
from pprint import pformat

from django.conf import settings
from django.views.debug import SafeExceptionReporterFilter

# Form fields whose posted value is a secret.
SECRET_POST_FIELDS = ("api_key",)
# scheme://user:password@ - the password part of a URL (Redis, PostgreSQL, ...).
URL_PASSWORD = re.compile(r"([a-z][a-z0-9+.-]*://[^\s/:@]*:)[^\s/@]+@", re.IGNORECASE)
# django-q2's broker connection entries: a URL or a dict holding credentials.
Q_CLUSTER_BROKER_KEYS = ("redis", "mongo", "sqs", "iron_mq", "disque_nodes")


def mask_url_passwords(text: str) -> str:
    """The text with the password of every URL in it replaced by ********.

    Text without one comes back as it was (the very object: a lazy setting
    stays lazy).
    """
    if not has_url_password(text):
        return text
    return URL_PASSWORD.sub(r"\1********@", str(text))


def has_url_password(text: str) -> bool:
    return URL_PASSWORD.search(str(text)) is not None


class SecurityHeadersMiddleware:
    """Content-Security-Policy and Permissions-Policy on every response.

    A fixed policy needs no nonces and no per-view variation, so a few lines
    do it; django-csp would add a dependency for the same header (Django 6.0
    ships its own CSP middleware to move to). Placed before WhiteNoise, so
    static files get the headers too. A view may set its own.
    """

    def __init__(self, get_response):
        self.get_response = get_response
        self.headers = {
            "Content-Security-Policy": settings.CONTENT_SECURITY_POLICY,
            "Permissions-Policy": settings.PERMISSIONS_POLICY,
        }

    def __call__(self, request):
        response = self.get_response(request)
        for name, value in self.headers.items():
            response.headers.setdefault(name, value)
        return response


class SecretsReporterFilter(SafeExceptionReporterFilter):
    """Masks API keys and Authorization headers in error reports, too.

    Django already hides settings matching API|TOKEN|KEY|SECRET...; this also
    masks the posted `api_key`, any local variable named like a secret, and any
    local variable whose value merely *contains* the posted key (a form's
    `cleaned_data`, a dict of options, a half-built object). The password of
    any URL is masked wherever it appears (settings, request META, local
    variables), and so are django-q2's broker entries in `Q_CLUSTER`.
    """

    hidden_settings = re.compile(
        "API|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|AUTHORIZATION|DATABASE_URL|REDIS_URL",
        flags=re.IGNORECASE,
    )

    def cleanse_setting(self, key, value):
        if key == "Q_CLUSTER" and isinstance(value, dict):
            value = {
                k: self.cleansed_substitute if k in Q_CLUSTER_BROKER_KEYS else v
                for k, v in value.items()
            }
        cleansed = super().cleanse_setting(key, value)
        if isinstance(cleansed, str):
            return mask_url_passwords(cleansed)
        return cleansed

    def get_safe_request_meta(self, request):
        meta = super().get_safe_request_meta(request)
        return {
            k: mask_url_passwords(v) if isinstance(v, str) else v
            for k, v in meta.items()
        }

    def get_post_parameters(self, request):
        params = super().get_post_parameters(request)
        if request is not None and any(f in params for f in SECRET_POST_FIELDS):
            params = params.copy()
            for field in SECRET_POST_FIELDS:
                if field in params:
                    params[field] = self.cleansed_substitute
        return params

    def _posted_secrets(self, request) -> list[str]:
        """The secret values of this request's POST, to look for in variables."""
        if request is None or request.method != "POST":
            return []
        values = (request.POST.get(f, "").strip() for f in SECRET_POST_FIELDS)
        return [v for v in values if len(v) >= 4]

    def _leaks(self, value, secrets: list[str]) -> bool:
        """Whether the variable shows a posted secret or a URL's password."""
        if isinstance(value, str):
            text = value
        else:
            try:
                text = pformat(value)
            except Exception:  # A broken __repr__ is shown as such by Django.
                return False
        return has_url_password(text) or any(s in text for s in secrets)

    def _cleanse_variable(self, name: str, value, secrets: list[str]):
        """A frame variable as the report may show it.

        A string keeps its text with URL passwords masked; any other value
        that holds a secret is hidden whole.
        """
        if self.hidden_settings.search(name):
            return self.cleansed_substitute
        if isinstance(value, str) and not any(s in value for s in secrets):
            return mask_url_passwords(value)
        return self.cleansed_substitute if self._leaks(value, secrets) else value

    def get_traceback_frame_variables(self, request, tb_frame):
        secrets = self._posted_secrets(request)
        return [
            (name, self._cleanse_variable(name, value, secrets))
            for name, value in super().get_traceback_frame_variables(request, tb_frame)
        ]

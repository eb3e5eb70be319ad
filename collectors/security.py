"""Keeps secrets out of Django's error reports."""

from __future__ import annotations

import re
from pprint import pformat

from django.views.debug import SafeExceptionReporterFilter

# Form fields whose posted value is a secret.
SECRET_POST_FIELDS = ("api_key",)


class SecretsReporterFilter(SafeExceptionReporterFilter):
    """Masks API keys and Authorization headers in error reports, too.

    Django already hides settings matching API|TOKEN|KEY|SECRET...; this also
    masks the posted `api_key`, any local variable named like a secret, and any
    local variable whose value merely *contains* the posted key (a form's
    `cleaned_data`, a dict of options, a half-built object).
    """

    hidden_settings = re.compile(
        "API|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|AUTHORIZATION|DATABASE_URL|REDIS_URL",
        flags=re.IGNORECASE,
    )

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
        if not secrets:
            return False
        try:
            text = pformat(value)
        except Exception:  # A broken __repr__ is shown as such by Django.
            return False
        return any(s in text for s in secrets)

    def get_traceback_frame_variables(self, request, tb_frame):
        secrets = self._posted_secrets(request)
        return [
            (
                name,
                self.cleansed_substitute
                if self.hidden_settings.search(name) or self._leaks(value, secrets)
                else value,
            )
            for name, value in super().get_traceback_frame_variables(request, tb_frame)
        ]

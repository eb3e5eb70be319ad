"""Keeps secrets out of Django's error reports."""

from __future__ import annotations

import re

from django.views.debug import SafeExceptionReporterFilter


class SecretsReporterFilter(SafeExceptionReporterFilter):
    """Masks API keys and Authorization headers in error reports, too.

    Django already hides settings matching API|TOKEN|KEY|SECRET...; this also
    catches the form field `api_key` and any local variable that holds a key.
    """

    hidden_settings = re.compile(
        "API|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|AUTHORIZATION|DATABASE_URL|REDIS_URL",
        flags=re.IGNORECASE,
    )

    def get_post_parameters(self, request):
        params = super().get_post_parameters(request)
        if request is not None and "api_key" in params:
            params = params.copy()
            params["api_key"] = self.cleansed_substitute
        return params

    def get_traceback_frame_variables(self, request, tb_frame):
        return [
            (
                name,
                self.cleansed_substitute
                if self.hidden_settings.search(name)
                else value,
            )
            for name, value in super().get_traceback_frame_variables(request, tb_frame)
        ]

"""URLs of the collectors app: configuration screens, then health and messages."""

from __future__ import annotations

from django.urls import include, path

urlpatterns: list = [
    path("", include("collectors.urls_health")),
]

"""URLs for health, source pages and message search."""

from __future__ import annotations

from django.urls import path

from collectors.views import health

urlpatterns = [
    path("sources/<int:pk>/", health.source_detail, name="source-detail"),
    path("sources/<int:pk>/health/", health.source_health, name="source-health"),
    path(
        "collectors/<int:pk>/health/", health.collector_health, name="collector-health"
    ),
]

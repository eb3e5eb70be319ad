"""URLs for health, source pages and message search."""

from __future__ import annotations

from django.urls import path, re_path

from collectors.views import health, messages, overview, status

urlpatterns = [
    path("sources/<int:pk>/", health.source_detail, name="source-detail"),
    path("sources/<int:pk>/health/", health.source_health, name="source-health"),
    path("sources/<int:pk>/restart/", health.source_restart, name="source-restart"),
    path(
        "sources/<int:pk>/reprocess/",
        health.source_reprocess,
        name="source-reprocess",
    ),
    path(
        "collectors/<int:pk>/health/", health.collector_health, name="collector-health"
    ),
    path("collection/status/", status.collection_status, name="collection-status"),
    path("health-events/", health.health_events, name="health-events"),
    path(
        "health-events/<int:pk>/",
        health.health_event_detail,
        name="health-event-detail",
    ),
    path("overview/", overview.overview, name="overview"),
    path("messages/", messages.messages, name="messages"),
    re_path(
        r"^messages/export\.(?P<fmt>csv|jsonl)$",
        messages.messages_export,
        name="messages-export",
    ),
]

"""URLs of the alerts app: Monitors, Connections, Notifications."""

from __future__ import annotations

from django.urls import path

from alerts import views

urlpatterns = [
    path("monitors/", views.monitors, name="monitors"),
    path("monitors/add/", views.monitor_add, name="monitor-add"),
    path("monitors/<int:pk>/", views.monitor_detail, name="monitor-detail"),
    path("monitors/<int:pk>/edit/", views.monitor_edit, name="monitor-edit"),
    path("monitors/<int:pk>/toggle/", views.monitor_toggle, name="monitor-toggle"),
    path("monitors/<int:pk>/delete/", views.monitor_delete, name="monitor-delete"),
    path("connections/", views.connections, name="connections"),
    path("connections/add/", views.connection_add, name="connection-add"),
    path("connections/<int:pk>/edit/", views.connection_edit, name="connection-edit"),
    path(
        "connections/<int:pk>/delete/",
        views.connection_delete,
        name="connection-delete",
    ),
    path("connections/<int:pk>/test/", views.connection_test, name="connection-test"),
    path(
        "connections/<int:pk>/health/",
        views.connection_health,
        name="connection-health",
    ),
    path("notifications/", views.notifications, name="notifications"),
    path(
        "notifications/<int:pk>/",
        views.notification_detail,
        name="notification-detail",
    ),
]

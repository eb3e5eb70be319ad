"""Top-level URLs: sign-in, Django admin, the alerts, outputs and collectors apps."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from collectors.views.account import SignInView, preferences

# A busy SQLite database raised outside a view is a 503 too (collectors/busy.py).
handler500 = "collectors.busy.server_error"

urlpatterns = [
    path("login/", SignInView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("preferences/", preferences, name="preferences"),
    path("admin/", admin.site.urls),
    path("", include("alerts.urls")),
    path("", include("outputs.urls")),
    path("", include("collectors.urls")),
]

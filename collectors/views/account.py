"""Signing in (landing on Overview once there is data)."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import reverse

from collectors.navigation import overview_first


class SignInView(auth_views.LoginView):
    """Django's login view; without a `next`, it lands on the first menu item."""

    def get_default_redirect_url(self) -> str:
        if overview_first(self.request):
            return reverse("overview")
        return super().get_default_redirect_url()

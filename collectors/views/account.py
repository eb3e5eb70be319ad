"""Signing in (landing on Overview once there is data) and a user's own
preferences (the time zone pages show times in)."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from collectors import timezones
from collectors.models import UserPreference
from collectors.navigation import overview_first


class SignInView(auth_views.LoginView):
    """Django's login view; without a `next`, it lands on the first menu item."""

    def get_default_redirect_url(self) -> str:
        if overview_first(self.request):
            return reverse("overview")
        return super().get_default_redirect_url()


class PreferencesForm(forms.ModelForm):
    """The time zone choice, as two radio buttons."""

    class Meta:
        model = UserPreference
        fields = ["time_zone"]
        labels = {"time_zone": "Show times in"}
        widgets = {"time_zone": forms.RadioSelect}


@require_http_methods(["GET", "POST"])
def preferences(request):
    """A user's own preferences (any signed-in user: it changes only how
    their own pages look). Saving applies at once, on every page."""
    pref, _ = UserPreference.objects.get_or_create(user=request.user)
    form = PreferencesForm(request.POST or None, instance=pref)
    if request.method == "POST" and form.is_valid():
        form.save()
        timezones.remember(request, pref.time_zone)
        messages.success(request, "Preferences saved.")
        return redirect("preferences")
    browser_zone = timezones.zone_named(request.COOKIES.get(timezones.COOKIE, ""))
    return render(
        request,
        "collectors/preferences.html",
        {
            "form": form,
            "browser_zone": timezones.zone_label(browser_zone) if browser_zone else "",
            "nav": "preferences",
        },
    )

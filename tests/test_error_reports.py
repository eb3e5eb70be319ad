"""Error reports (the DEBUG 500 page, mails to admins) never show the API key."""

from __future__ import annotations

import sys

import pytest
from django.urls import reverse
from django.views.debug import ExceptionReporter

from collectors.forms import SourceForm
from collectors.views import sources

SECRET = "kb4-report-secret-Zq81xYw"


def _crash_report(rf, admin_user, collector) -> ExceptionReporter:
    request = rf.post(
        reverse("source-add", args=[collector.pk]),
        {
            "name": "Crash",
            "base_url_key": "us",
            "api_key": SECRET,
            "initial_lookback_days": "7",
            "rescan_days": "1",
        },
    )
    request.user = admin_user
    try:
        sources.source_add(request, pk=collector.pk)
    except RuntimeError:
        return ExceptionReporter(request, *sys.exc_info())
    pytest.fail("the view should have raised")


def test_it_masks_a_variable_that_holds_the_key_in_a_dict(
    rf, admin_user, collector, monkeypatch
):
    # Raised inside SourceForm.clean, whose frame holds `cleaned` (a dict with
    # the key) under a name that says nothing about secrets.
    def explode(self):
        raise RuntimeError("rule check failed")

    monkeypatch.setattr(SourceForm, "_check_rows", explode)
    report = _crash_report(rf, admin_user, collector)
    assert "cleaned" in report.get_traceback_text()
    assert SECRET not in report.get_traceback_text()
    assert SECRET not in report.get_traceback_html()


def test_it_still_shows_harmless_variables(rf, admin_user, collector, monkeypatch):
    def explode(self):
        raise RuntimeError("rule check failed")

    monkeypatch.setattr(SourceForm, "_check_rows", explode)
    html = _crash_report(rf, admin_user, collector).get_traceback_html()
    assert "rule check failed" in html
    assert "Crash" in html  # The source name is no secret.


def test_it_masks_the_key_when_saving_crashes(rf, admin_user, collector, monkeypatch):
    def explode(self, commit=True):
        raise RuntimeError("storage failed")

    monkeypatch.setattr(SourceForm, "save", explode)
    report = _crash_report(rf, admin_user, collector)
    assert SECRET not in report.get_traceback_text()
    assert SECRET not in report.get_traceback_html()

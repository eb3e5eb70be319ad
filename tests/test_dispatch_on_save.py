"""Saving, restarting or deleting a source queues a dispatcher run at once."""

from __future__ import annotations

import pytest
from django.urls import reverse

from collectors import tasks
from collectors.choices import SourceState
from tests.cast import API_KEY


@pytest.fixture
def queued(monkeypatch):
    calls: list[tuple] = []
    monkeypatch.setattr(tasks, "async_task", lambda *a, **kw: calls.append(a))
    return calls


def _add(admin_client, collector):
    return admin_client.post(
        reverse("source-add", args=[collector.pk]),
        {
            "name": "Kick",
            "base_url_key": "us",
            "api_key": API_KEY,
            "initial_lookback_days": 7,
            "rescan_days": 1,
        },
    )


def test_it_queues_a_dispatch_after_a_source_is_added(
    admin_client, collector, queued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = _add(admin_client, collector)
    assert response.status_code == 302
    assert queued == [(tasks.DISPATCH_FUNC,)]


def test_it_queues_nothing_when_the_form_is_refused(
    admin_client, collector, queued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("source-add", args=[collector.pk]), {"name": ""})
    assert queued == []


def test_it_queues_a_dispatch_after_a_restart_and_a_delete(
    admin_client, source, queued, django_capture_on_commit_callbacks
):
    source.transition(SourceState.ERROR, error_type="ThirdPartyConfig")
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("source-restart", args=[source.pk]))
        admin_client.post(reverse("source-delete", args=[source.pk]))
    assert queued == [(tasks.DISPATCH_FUNC,), (tasks.DISPATCH_FUNC,)]


def test_it_can_be_turned_off(
    admin_client, collector, queued, settings, django_capture_on_commit_callbacks
):
    settings.COLLECTION_DISPATCH_ON_SAVE = False
    with django_capture_on_commit_callbacks(execute=True):
        _add(admin_client, collector)
    assert queued == []

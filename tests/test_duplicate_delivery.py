"""Duplicate deliveries of the same task: the lease lets one run work and the
other leave without a request; nothing is ever stored twice."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from collectors import engine, lifecycle
from collectors.models import LogMessage, Source
from tests import engine_support as es

clock, sb = es.clock, es.sb


@pytest.mark.django_db(transaction=True)
def test_it_the_same_task_twice_at_once_runs_once(settings, sb, collector, monkeypatch):
    source = es.sandbox_source(settings, sb, collector)
    barrier = threading.Barrier(2)
    real_take = lifecycle.take_lease

    def take_lease(source_id, owner):
        barrier.wait(timeout=10)  # Both deliveries reach the lease together.
        return real_take(source_id, owner)

    monkeypatch.setattr(lifecycle, "take_lease", take_lease)
    results = []

    def deliver():
        try:
            results.append(engine.run(source.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert sorted(r.outcome for r in results) == ["caught_up", "lease_held"]
    held = next(r for r in results if r.outcome == "lease_held")
    assert held.requests == 0
    assert len(es.api_requests(sb)) == 7
    ids = es.stored_ids(source)
    assert len(ids) == len(set(ids)) == 350


def test_it_a_delivery_while_a_run_holds_the_lease_makes_no_request(
    settings, sb, collector
):
    source = es.sandbox_source(settings, sb, collector)
    Source.objects.filter(pk=source.pk).update(
        lease_owner="elsewhere:1:abc",
        lease_expires=timezone.now() + timedelta(minutes=2),
    )

    result = engine.run(source.pk)

    assert result.outcome == "lease_held" and result.requests == 0
    assert es.api_requests(sb) == []
    assert Source.objects.get(pk=source.pk).lease_owner == "elsewhere:1:abc"


def test_it_a_redelivery_after_the_run_makes_no_request(settings, sb, collector):
    source = es.sandbox_source(settings, sb, collector)
    engine.run(source.pk)

    again = engine.run(source.pk)

    assert again.outcome == "not_due" and again.requests == 0
    assert len(es.api_requests(sb)) == 7


def test_it_a_run_that_lost_its_lease_commits_nothing(
    settings, sb, collector, monkeypatch
):
    source = es.sandbox_source(settings, sb, collector)
    es.steal_lease_before_each_page(monkeypatch, source)

    result = engine.run(source.pk)

    assert result.outcome == "lease_lost"
    assert LogMessage.objects.count() == 0
    source.refresh_from_db()
    assert source.cursor_day is None and source.last_complete_day is None
    assert source.lease_owner == es.THIEF  # Not released: not ours.

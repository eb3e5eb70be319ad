"""The API key appears in no log line, health event, state reason, task
argument or result stored by django-q2, whatever happens to a source."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.core.management import call_command
from django_q.models import OrmQ, Schedule, Task
from django_q.tasks import async_task

from collectors import engine, tasks
from collectors.engine import store as engine_store
from collectors.models import HealthEvent, LogMessage, Source, StateTransition
from tests import engine_support as es

clock, sb = es.clock, es.sb


def everything_stored() -> str:
    """Every text the engine and django-q2 keep, as one string."""
    parts = []
    for model in (HealthEvent, StateTransition, Source, Schedule, Task):
        for row in model.objects.all().values():
            parts.append(repr(row))
    for queued in OrmQ.objects.all():
        parts.append(repr(queued.task))
    for task in Task.objects.all():
        parts.append(repr((task.args, task.kwargs, task.result)))
    return "\n".join(parts)


def test_it_the_key_is_in_no_log_event_task_or_result(
    settings, sb, clock, collector, caplog, monkeypatch
):
    caplog.set_level(logging.DEBUG)
    key = sb.api_key
    source = es.sandbox_source(settings, sb, collector)
    wrong = es.sandbox_source(
        settings, sb, collector, name="Wrong key", api_key=key + "-revoked"
    )
    tasks.dispatch()  # Queues both: OrmQ rows with their arguments.
    call_command("setup_schedules")

    # Faults of every kind, through the django-q2 task function (sync).
    sb.inject("status", count=2, status=503)
    sb.inject("too_many_requests", count=1, headers={"Retry-After": "1"})
    async_task(tasks.COLLECT_FUNC, source.pk, sync=True)
    Source.objects.filter(pk=source.pk).update(next_attempt_at=None)
    async_task(tasks.COLLECT_FUNC, source.pk, sync=True)
    async_task(tasks.COLLECT_FUNC, wrong.pk, sync=True)
    Source.objects.filter(pk=source.pk).update(next_attempt_at=None)
    async_task(tasks.COLLECT_FUNC, source.pk, sync=True)

    # A bug whose message quotes the key is scrubbed before it is recorded.
    def leaky(self, *args, **kw):
        raise ValueError(f"unexpected {key}")

    monkeypatch.setattr(engine_store, "store_page", leaky)
    Source.objects.filter(pk=source.pk).update(next_attempt_at=None)
    clock.shift(timedelta(days=1))
    assert engine.run(source.pk).outcome == "retrying"
    sb.inject("limit_exceeded", count=1)
    monkeypatch.undo()
    Source.objects.filter(pk=source.pk).update(next_attempt_at=None)
    assert engine.run(source.pk).outcome == "quota_exceeded"

    # The scenario did happen...
    assert Task.objects.count() == 4
    assert LogMessage.objects.filter(source=source).count() > 0
    assert HealthEvent.objects.filter(source=wrong).exists()
    assert (
        "[redacted]"
        in HealthEvent.objects.get(
            source=source, event_name="FirstPartyGenericError"
        ).message
    )
    # ... and the key is nowhere.
    assert caplog.records
    for record in caplog.records:
        assert key not in record.getMessage()
        assert key not in str(record.args)
    assert key not in caplog.text
    stored = everything_stored()
    assert str(source.pk) in stored
    assert key not in stored
    assert key[-12:] not in stored

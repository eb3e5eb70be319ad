"""Recording and resolving health events (the seed's Health Event Index).

The API, for this app and for any other (alerts, outputs) whose resources
have problems to report:

    health.record(resource, error_type, code=..., message=...,
                  suggested_fix="", severity=Severity.WARNING, event_name=None)
    health.resolve(resource, event_name=None)  -> how many were resolved
    HealthEvent.objects.for_resource(type, id) -> that resource's events

`resource` is a model instance. Its type is the class attribute
`HEALTH_RESOURCE_TYPE` ("Source", "Collector"; another app sets e.g.
"Connection" or "Output" on its own model), or the class name when there is
none; its name is its `name` attribute (or `str()`). Type, id and name are
stored on the event, so the event outlives the resource: after a deletion the
Health Events page still lists it, filters on it and opens its detail page,
showing the stored name marked "deleted". A model with `get_absolute_url` is
linked from those pages while it exists. A resource with a `collector` (a
source) is filed under that collector too; a `Source` or `HostedCollector`
also gets the live `source`/`collector` link that the Collection page counts.
`resolve` with an int means a source id (what the engine holds).

The event name defaults to the one the seed gives each error type
(`EVENT_NAME_FOR_ERROR_TYPE`); pass `event_name` for another kind of problem.

One open event per (resource type, resource id, event name): a repeat of the
same problem bumps the open event's count and last-seen time instead of
adding a row, and a success resolves the open events. The database enforces
the "one open" rule with a partial unique constraint; `record` copes with the
race where two writers both find no open event.

Before a source or collector row is deleted, `remember_names` (a pre_delete
signal) copies its current name onto its events and transitions, so a rename
followed by a deletion still shows the last name, and resolves its open
events. Another app's resource can do the same from its own delete:
`health.resolve(resource)`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache

from django.apps import apps
from django.db import IntegrityError, models, transaction
from django.db.models import F
from django.db.models.signals import pre_delete
from django.dispatch import receiver
from django.utils import timezone

from collectors.choices import EVENT_NAME_FOR_ERROR_TYPE, HealthEventName, Severity
from collectors.models import HealthEvent, HostedCollector, Source, StateTransition

logger = logging.getLogger(__name__)

FIX_CONFIG = "Check the API key and the Base URL in the source settings, then save."
FIX_KEY_UNREADABLE = (
    "The stored API key cannot be decrypted (the encryption keys changed): "
    "enter the API key again in the source settings."
)
FIX_FIRST_PARTY = (
    "An internal error occurred; collection retries on its own. If it persists, "
    "check the database and the worker logs."
)


@dataclass(frozen=True)
class Resource:
    """What a health event stores about its resource."""

    type: str
    id: int
    name: str
    collector_id: int | None = None
    collector_name: str = ""

    def columns(self) -> dict:
        """The HealthEvent columns naming this resource."""
        return {
            "resource_type": self.type,
            "resource_id": self.id,
            "resource_name": self.name[:255],
            "collector_ref": self.collector_id,
            "collector_name": self.collector_name[:128],
        }

    def links(self) -> dict:
        """The live FK links (only the collectors app's own models have them)."""
        if self.type == Source.HEALTH_RESOURCE_TYPE:
            return {"source_id": self.id}
        if self.type == HostedCollector.HEALTH_RESOURCE_TYPE:
            return {"collector_id": self.id}
        return {}


def resource_type_of(model) -> str:
    """The type name events of this model (class or instance) are filed under."""
    return getattr(model, "HEALTH_RESOURCE_TYPE", None) or model.__name__


def describe(resource: models.Model | Resource) -> Resource:
    """The stored description of a model instance (its collector included)."""
    if isinstance(resource, Resource):
        return resource
    if isinstance(resource, HostedCollector):
        return Resource(
            HostedCollector.HEALTH_RESOURCE_TYPE,
            resource.pk,
            resource.name,
            resource.pk,
            resource.name,
        )
    name = getattr(resource, "name", None) or str(resource)
    collector = getattr(resource, "collector", None)
    if isinstance(collector, HostedCollector):
        return Resource(
            resource_type_of(type(resource)),
            resource.pk,
            name,
            collector.pk,
            collector.name,
        )
    return Resource(resource_type_of(type(resource)), resource.pk, name)


# Warnings that a successful run does not resolve: events left in quarantine,
# settings projected to overrun the daily quota. Their own modules resolve them.
STANDING_EVENTS = (HealthEventName.EVENTS_NOT_STORED, HealthEventName.QUOTA_OVERRUN)


def record(
    resource: models.Model | Resource,
    error_type: str,
    *,
    code: str,
    message: str,
    suggested_fix: str = "",
    severity: str = Severity.WARNING,
    event_name: str | None = None,
) -> HealthEvent:
    """Open a health event for `resource`, or bump the open one of the same name.

    The latest message, code, fix, severity and resource name win, so the panel
    always shows the current situation (a Warning that became "retries
    exhausted" turns into an Error in place).
    """
    res = describe(resource)
    name = event_name or EVENT_NAME_FOR_ERROR_TYPE[error_type]
    now = timezone.now()
    values = {
        "error_type": error_type,
        "severity": severity,
        "error_code": code[:64],
        "message": message,
        "suggested_fix": suggested_fix,
        "last_seen": now,
        **res.columns(),
    }
    for _ in range(3):
        open_events = HealthEvent.objects.for_resource(res.type, res.id).filter(
            event_name=name, resolved_at__isnull=True
        )
        if open_events.update(count=F("count") + 1, **values):
            return open_events.get()
        try:
            with transaction.atomic():
                return HealthEvent.objects.create(
                    event_name=name, first_seen=now, **values, **res.links()
                )
        except IntegrityError:
            continue  # Someone opened it meanwhile: bump theirs.
    raise RuntimeError("could not record a health event")  # pragma: no cover


def resolve(resource: models.Model | Resource | int, event_name: str = "") -> int:
    """Resolve the open health events of a resource (an int is a source id),
    all of them or only those named `event_name`; return how many."""
    if isinstance(resource, int):
        kind, pk = Source.HEALTH_RESOURCE_TYPE, resource
    else:
        res = describe(resource)
        kind, pk = res.type, res.id
    events = HealthEvent.objects.for_resource(kind, pk).filter(resolved_at__isnull=True)
    if event_name:
        events = events.filter(event_name=event_name)
    else:  # Standing Warnings stay open while their cause lasts.
        events = events.exclude(event_name__in=STANDING_EVENTS)
    resolved = events.update(resolved_at=timezone.now())
    if resolved:
        logger.info("%s %s: %d health event(s) resolved", kind, pk, resolved)
    return resolved


@cache
def resource_models() -> dict[str, type[models.Model]]:
    """Every model that declares a HEALTH_RESOURCE_TYPE, by that type."""
    return {
        m.HEALTH_RESOURCE_TYPE: m
        for m in apps.get_models()
        if getattr(m, "HEALTH_RESOURCE_TYPE", None)
    }


def attach_resources(events: list[HealthEvent]) -> list[HealthEvent]:
    """Set `event.live_resource` (the object, or None once deleted) on each
    event: sources and collectors from their links (select_related them),
    other types with one query per type present."""
    wanted: dict[str, set[int]] = {}
    for event in events:
        if event.resource_type == Source.HEALTH_RESOURCE_TYPE:
            event._live_resource = event.source
        elif event.resource_type == HostedCollector.HEALTH_RESOURCE_TYPE:
            event._live_resource = event.collector
        else:
            wanted.setdefault(event.resource_type, set()).add(event.resource_id)
    found: dict[str, dict] = {}
    for kind, ids in wanted.items():
        model = resource_models().get(kind)
        found[kind] = model._default_manager.in_bulk(ids) if model else {}
    for event in events:
        if event.resource_type in found:
            event._live_resource = found[event.resource_type].get(event.resource_id)
    return events


@receiver(pre_delete, sender=Source)
@receiver(pre_delete, sender=HostedCollector)
def remember_names(sender, instance, **kwargs) -> None:
    """Copy the current names onto the history before the row goes, so a
    deleted resource's events and transitions show its last name; its open
    events are resolved (nothing is left to fix or to alert on)."""
    res = describe(instance)
    events = HealthEvent.objects.for_resource(res.type, res.id)
    events.update(resource_name=res.name[:255], collector_name=res.collector_name[:128])
    events.open().update(resolved_at=timezone.now())
    if isinstance(instance, HostedCollector):
        HealthEvent.objects.for_collector(instance).update(
            collector_name=instance.name[:128]
        )
        StateTransition.objects.filter(source__collector=instance).update(
            collector_name=instance.name[:128]
        )
    else:
        StateTransition.objects.filter(source=instance).update(
            source_name=instance.name[:128],
            collector_name=res.collector_name[:128],
        )

"""Choice sets shared by models, forms and the UI (NetBox-style choice classes).

The wording of labels is the seed's (`docs/knowbe4-api-source.md`).
"""

from __future__ import annotations

from django.db import models


class SourceState(models.TextChoices):
    """The seed's source states, in the order a healthy source walks them."""

    PENDING = "pending", "Pending"
    STARTED = "started", "Started"
    INITIALIZED = "initialized", "Initialized"
    AUTHENTICATED = "authenticated", "Authenticated"
    COLLECTING = "collecting", "Collecting"
    ERROR = "error", "Error"
    STOPPING = "stopping", "Stopping"


# The source state machine: the states each state may move to. Every move
# (`Source.transition`, hence `collectors.lifecycle`) is checked against it.
# Forward moves may skip steps (a run that finds nothing to read is Collecting
# after its first call); Error waits for an edit or Restart (back to Pending);
# an edit of the key or Base URL and Restart send a collecting source back to
# Pending to authenticate again; Stopping (Delete) is the end.
_COLLECTING_ON = (
    SourceState.ERROR,
    SourceState.STOPPING,
    SourceState.PENDING,
)
SOURCE_TRANSITIONS: dict[str, frozenset[str]] = {
    SourceState.PENDING: frozenset(
        (SourceState.STARTED, SourceState.ERROR, SourceState.STOPPING)
    ),
    SourceState.STARTED: frozenset(
        (
            SourceState.INITIALIZED,
            SourceState.AUTHENTICATED,
            SourceState.COLLECTING,
            *_COLLECTING_ON,
        )
    ),
    SourceState.INITIALIZED: frozenset(
        (SourceState.AUTHENTICATED, SourceState.COLLECTING, *_COLLECTING_ON)
    ),
    SourceState.AUTHENTICATED: frozenset((SourceState.COLLECTING, *_COLLECTING_ON)),
    SourceState.COLLECTING: frozenset(_COLLECTING_ON),
    # Error -> Error: a new error type replaces the old one.
    SourceState.ERROR: frozenset(
        (SourceState.PENDING, SourceState.ERROR, SourceState.STOPPING)
    ),
    SourceState.STOPPING: frozenset(),
}


def may_move(from_state: str, to_state: str) -> bool:
    """Whether the state machine allows `from_state` -> `to_state`."""
    return to_state in SOURCE_TRANSITIONS.get(from_state, frozenset())


class ErrorType(models.TextChoices):
    """The seed's three error types."""

    THIRD_PARTY_CONFIG = "ThirdPartyConfig", "ThirdPartyConfig"
    THIRD_PARTY_GENERIC = "ThirdPartyGeneric", "ThirdPartyGeneric"
    FIRST_PARTY_GENERIC = "FirstPartyGeneric", "FirstPartyGeneric"


class HealthEventName(models.TextChoices):
    """Health event names as they appear in the seed's Health Event Index."""

    THIRD_PARTY_CONFIG = "ThirdPartyConfigError", "ThirdPartyConfigError"
    THIRD_PARTY_GENERIC = "ThirdPartyGenericError", "ThirdPartyGenericError"
    FIRST_PARTY_GENERIC = "FirstPartyGenericError", "FirstPartyGenericError"
    # Not one of the seed's three: the Warning for events kept in quarantine.
    # It stays open while any is left, whatever the runs do (see quarantine.py).
    EVENTS_NOT_STORED = "EventsNotStored", "EventsNotStored"
    # Not one of the seed's either: the Warning that a source's settings cost
    # more requests per day than the key's budget. Open while that holds.
    QUOTA_OVERRUN = "QuotaOverrun", "QuotaOverrun"


# Each error type is reported under exactly one health event name.
EVENT_NAME_FOR_ERROR_TYPE = {
    ErrorType.THIRD_PARTY_CONFIG: HealthEventName.THIRD_PARTY_CONFIG,
    ErrorType.THIRD_PARTY_GENERIC: HealthEventName.THIRD_PARTY_GENERIC,
    ErrorType.FIRST_PARTY_GENERIC: HealthEventName.FIRST_PARTY_GENERIC,
}


class Severity(models.TextChoices):
    """How bad an open health event is: any Error makes a resource red."""

    ERROR = "error", "Error"
    WARNING = "warning", "Warning"


# Built-in metadata names that a user-defined field may not take.
RESERVED_FIELD_NAMES = frozenset(
    {
        "_sourcecategory",
        "_source",
        "_sourcename",
        "_sourcehost",
        "_collector",
        "_index",
        "_raw",
        "_messagetime",
        "_receipttime",
        "_size",
        "_format",
        "_view",
    }
)
MAX_FIELDS_PER_SOURCE = 10
MAX_SCHEMA_FIELDS = 200

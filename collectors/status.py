"""The one mapping from a health status to its label, colour, icon and tooltip.

Templates, the Collection page's refresh endpoint and the admin all read a
resource's look from here, so a status means the same thing everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache


@dataclass(frozen=True)
class StatusLook:
    """How one health status is drawn."""

    key: str
    label: str
    colour: str  # CSS custom property suffix, see static/css/app.css
    icon: str  # file under static/img/


HEALTHY = StatusLook("healthy", "Healthy", "green", "img/status-healthy.svg")
WARNING = StatusLook("warning", "Warning", "orange", "img/status-warning.svg")
ERROR = StatusLook("error", "Error", "red", "img/status-error.svg")
NEUTRAL = StatusLook("neutral", "Not collecting", "grey", "img/status-neutral.svg")


def health_look(errors: int, warnings: int, *, neutral: bool = False) -> StatusLook:
    """Pick the look for a resource from its open health event counts.

    Any open error wins (red), then open warnings (orange); a source that is
    Pending or Stopping has not collected yet or no longer does, so it is drawn
    neutral unless something is already wrong with it.
    """
    if errors:
        return ERROR
    if warnings:
        return WARNING
    return NEUTRAL if neutral else HEALTHY


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def health_tooltip(errors: int, warnings: int) -> str:
    """The seed's tooltip: a count of the detected errors and warnings."""
    return f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')}"


def last_success_text(when, activity: str = "collection") -> str:
    """The tooltip's second line: when the resource last collected (or, for
    an output, delivered) successfully."""
    if when is None:
        return f"No successful {activity} yet"
    from django.utils import timezone

    local = timezone.localtime(when)  # in the user's zone (see timezones.py)
    return f"Last successful {activity}: {local:%Y-%m-%d %H:%M %Z}"


@dataclass(frozen=True)
class Health:
    """A resource's health as drawn: its look and what its tooltip says.

    The icon button (`status_icon`) comes from this, on the pages and in the
    cells the refresh endpoint renders, so they cannot disagree.
    """

    look: StatusLook
    errors: int
    warnings: int
    last_success: datetime | None
    activity: str = "collection"

    @property
    def tooltip(self) -> str:
        return health_tooltip(self.errors, self.warnings)

    @property
    def last_success_text(self) -> str:
        return last_success_text(self.last_success, self.activity)


def health(
    errors: int,
    warnings: int,
    *,
    neutral: bool = False,
    last_success=None,
    activity: str = "collection",
) -> Health:
    """The Health of a resource from its open event counts (see health_look)."""
    look = health_look(errors, warnings, neutral=neutral)
    return Health(look, errors, warnings, last_success, activity)


@cache
def icon_url(look: StatusLook) -> str:
    """The static URL of a look's icon, resolved once per process: the
    Collection page and its refresh endpoint draw hundreds of icons."""
    from django.templatetags.static import static

    return static(look.icon)

"""Template helpers that draw a resource's health with the one status mapping,
the inline SVG chart of the messages page, and `show_bidi` for text that comes
from events."""

from __future__ import annotations

import html
from functools import cache

from django import template
from django.db.models import Max
from django.template.defaultfilters import stringfilter
from django.urls import reverse
from django.utils.safestring import mark_safe

from collectors import names, status
from collectors.models import Source

register = template.Library()

_MISSING = object()


def _last_success(obj):
    """When a source (or any source of a collector) last collected successfully.

    A source carries it as a field; a collector may carry a `last_success_at`
    annotation, or its prefetched `shown_sources` (the Collection page's), so
    drawing a row costs no query; otherwise one aggregate query.
    """
    value = getattr(obj, "last_success_at", _MISSING)
    if value is not _MISSING:
        return value
    shown = getattr(obj, "shown_sources", None)
    if shown is not None:
        stamps = [s.last_success_at for s in shown if s.last_success_at]
        return max(stamps) if stamps else None
    return obj.sources.aggregate(last=Max("last_success_at"))["last"]


def _health(obj) -> status.Health:
    """The health of a source or collector.

    Reads the `open_errors` / `open_warnings` annotations that list views add
    (so drawing a row costs no query), falling back to a query otherwise.
    """
    errors = getattr(obj, "open_errors", None)
    warnings = getattr(obj, "open_warnings", None)
    if errors is None or warnings is None:
        errors, warnings = obj.open_health_counts()
    return status.health(
        errors,
        warnings,
        neutral=getattr(obj, "is_neutral", False),
        last_success=_last_success(obj),
        activity=getattr(obj, "health_activity", "collection"),
    )


@cache
def _url_pattern(name: str) -> str:
    """reverse(name) with a marker for the id, so a long list reverses once."""
    return reverse(name, args=[987654321])


def _panel_url(obj) -> str:
    """The Health Events panel URL of a source or collector, without a
    resolver walk per row (the Collection page draws hundreds of icons).
    Another app's resource (an output) names its panel `health_panel_url`."""
    own = getattr(obj, "health_panel_url", None)
    if own:
        return own
    name = "source-health" if isinstance(obj, Source) else "collector-health"
    return _url_pattern(name).replace("987654321", str(obj.pk))


@register.filter(is_safe=True)
@stringfilter
def show_bidi(value: str) -> str:
    """Bidi control characters made visible (⟨U+202E⟩): text from KnowBe4
    events or third-party errors cannot reorder the page around it. The
    replacement holds no markup, so escaping works as for the text itself."""
    return names.show_bidi(value)


@register.simple_tag
def status_icon(obj) -> str:
    """The status icon button: look, tooltip data and panel URL in one go.

    Drawn by `_status_icon.html` for every row of the Collection page (500
    per page), so it is one escaped f-string rather than a template per row.
    """
    st = _health(obj)
    look = st.look
    e = html.escape
    tooltip, last = e(st.tooltip), e(st.last_success_text)
    markup = (
        f'<button type="button" class="status-icon status-{e(look.colour)}" '
        f'data-health-url="{e(_panel_url(obj))}" data-status="{e(look.key)}" '
        f'data-errors="{int(st.errors)}" data-warnings="{int(st.warnings)}" '
        f'data-tooltip="{tooltip}" data-last-success="{last}" '
        f'aria-label="Health: {e(look.label)}, {tooltip}. {last}" '
        f'aria-haspopup="dialog"><img src="{e(status.icon_url(look))}" alt="" '
        'width="18" height="18"></button>'
    )
    return mark_safe(markup)  # noqa: S308 - every interpolated value is escaped


CHART_W, CHART_H, CHART_PAD = 1200, 150, 24


@register.inclusion_tag("collectors/_messages_chart.html")
def day_chart(per_day: list) -> dict:
    """Bars of messages per day as inline SVG geometry (no chart library).

    Heights are scaled to the busiest day; every bar keeps a title so the
    exact count shows on hover and reaches screen readers.
    """
    n = len(per_day) or 1
    peak = max((count for _, count in per_day), default=0) or 1
    slot = (CHART_W - CHART_PAD) / n
    usable = CHART_H - CHART_PAD
    bars = []
    for i, (day, count) in enumerate(per_day):
        h = round(usable * count / peak, 1)
        bars.append(
            {
                "x": round(CHART_PAD + i * slot + slot * 0.1, 1),
                "y": round(usable - h, 1),
                "w": round(max(slot * 0.8, 1), 1),
                "h": h,
                "cx": round(CHART_PAD + i * slot + slot / 2, 1),
                "day": day,
                "count": count,
            }
        )
    step = max(1, n // 8)
    labels = [b for i, b in enumerate(bars) if i % step == 0]
    return {
        "bars": bars,
        "labels": labels,
        "peak": peak if per_day else 0,
        "width": CHART_W,
        "height": CHART_H,
        "base": usable,
        "pad": CHART_PAD,
    }

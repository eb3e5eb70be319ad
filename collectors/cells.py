"""The live cells of a Collection row and of the source page, drawn once.

The Collection page, its refresh endpoint and the source page all draw a
source's Health, Status (state, backfill progress, the states it just passed),
Messages and Last-24-hours cells with these functions, so what the page shows
on load and what a refresh puts in place are the same markup. Looks come from
`collectors.status` (through `status_icon`); every value is escaped here.

`RowData.load` fetches what the cells need for a set of rows in a constant
number of queries (activity, backfill counts, recent transitions).
"""

from __future__ import annotations

import html
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from django.utils.safestring import SafeString, mark_safe

from collectors.choices import SourceState
from collectors.days import last_collectable_day
from collectors.message_stats import per_owner
from collectors.models import (
    ACTIVITY_HOURS,
    NO_ACTIVITY,
    Activity,
    BackfillProgress,
    LogMessage,
    Source,
    StateTransition,
)
from collectors.templatetags.collectors_tags import status_icon

e = html.escape
SPARK_W, SPARK_H, SPARK_BAR = 96, 20, 4


@dataclass
class RowData:
    """What the live cells of some rows need beyond the rows themselves."""

    now: datetime
    activity: dict[int, Activity] = field(default_factory=dict)
    collector_activity: dict[int, Activity] = field(default_factory=dict)
    backfill: dict[int, tuple[int, int]] = field(default_factory=dict)
    trails: dict[int, list[str]] = field(default_factory=dict)
    behind: set[int] = field(default_factory=set)
    _progress: dict[int, BackfillProgress | None] = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        now: datetime,
        sources: list[Source],
        collector_ids: list[int],
        since: datetime | None = None,
    ) -> RowData:
        """Activity of the sources and of every source of the collectors (the
        collectors' sources, then their activity: two queries), backfill
        counts of the sources that are behind (one), and the transitions since
        `since` (one, only when asked)."""
        data = cls(now)
        source_ids = [s.pk for s in sources]
        if collector_ids:  # a collector's figures count all its sources
            owner_of = dict(
                Source.objects.filter(collector_id__in=collector_ids).values_list(
                    "pk", "collector_id"
                )
            )
        else:
            owner_of = {s.pk: s.collector_id for s in sources}
        wanted = sorted(set(owner_of) | set(source_ids))
        if wanted:
            data.activity = LogMessage.objects.filter(source_id__in=wanted).activity(
                now
            )
            data.collector_activity = per_owner(data.activity, owner_of)
        behind = [s.pk for s in sources if s.backfill_progress(now, 0, 0)]
        data.behind = set(behind)
        if behind:
            data.backfill = LogMessage.objects.filter(
                source_id__in=behind
            ).backfill_counts(now)
        if since is not None and source_ids:
            data.trails = recent_trails(source_ids, since)
        return data

    def progress(self, source: Source) -> BackfillProgress | None:
        """The source's backfill progress (None unless `load` found it
        behind), computed once per source however many cells show it."""
        if source.pk not in self.behind:
            return None
        if source.pk not in self._progress:
            stored, recent = self.backfill.get(source.pk, (0, 0))
            self._progress[source.pk] = source.backfill_progress(
                self.now, stored, recent
            )
        return self._progress[source.pk]


def recent_trails(source_ids: list[int], since: datetime) -> dict[int, list[str]]:
    """Per source, the states it passed through after `since` (the first
    transition's from-state, then each to-state but the last, which is the
    current state), so a refresh can show Pending → Started → … briefly."""
    moves = (
        StateTransition.objects.filter(source_id__in=source_ids, at__gt=since)
        .order_by("source_id", "at", "id")
        .values_list("source_id", "from_state", "to_state")
    )
    trails: dict[int, list[str]] = defaultdict(list)
    for source_id, from_state, to_state in moves:
        trail = trails[source_id]
        if not trail and from_state:  # blank: the creation row
            trail.append(from_state)
        trail.append(to_state)
    return {pk: trail[:-1] for pk, trail in trails.items() if len(trail) > 1}


def _label(state: str) -> str:
    try:
        return SourceState(state).label
    except ValueError:
        return state


def state_pill(state: str) -> str:
    return f'<span class="state state-{e(state)}" data-state>{e(_label(state))}</span>'


def progress_html(progress: BackfillProgress | None, *, detailed: bool = False) -> str:
    """A backfill bar (a native <progress>) with days, events and the ETA."""
    if progress is None:
        return ""
    words = (
        f"{progress.days_done:,} of {progress.days_total:,} days · "
        f"{progress.stored:,} events · {progress.eta_text}"
    )
    if detailed:
        words = (
            f"{progress.days_done:,} of {progress.days_total:,} days stored "
            f"({progress.start:%Y-%m-%d} to {progress.end:%Y-%m-%d}), "
            f"{progress.stored:,} events, {progress.recent:,} in the last 10 "
            f"minutes · {progress.eta_text}"
        )
    return (
        f'<div class="backfill"><progress max="{progress.days_total}" '
        f'value="{progress.days_done}" aria-label="Backfill: {progress.percent}% '
        f'of days stored">{progress.percent}%</progress>'
        f'<span class="backfill-text">Backfill {progress.percent}% · {e(words)}</span>'
        "</div>"
    )


def no_backfill_html(source: Source, now: datetime) -> str:
    """The Backfill fact when no bar is drawn: caught up, or why there is none.
    A source in Error before it stored any day has no bar either, and must not
    read as having every day."""
    done = source.last_complete_day
    if source.state == SourceState.STOPPING:
        text = "none: the source is being deleted"
    elif done is None:
        text = "not started: no closed day is stored yet"
    elif done >= last_collectable_day(now):
        text = "none: every closed day is stored"
    else:
        text = (
            f"none: caught up to {done:%Y-%m-%d}; the days after it are read at "
            "the next attempt"
        )
    return f'<span class="muted">{text}</span>'


def trail_html(trail: list[str]) -> str:
    """The states just passed, fading out (CSS) in front of the current one."""
    if not trail:
        return ""
    steps = " → ".join(e(_label(state)) for state in trail)
    return f'<span class="state-trail" aria-hidden="true">{steps} →</span> '


def status_cell(source: Source, data: RowData) -> str:
    """The Status cell: passed states, the state, and the backfill bar."""
    return (
        trail_html(data.trails.get(source.pk, []))
        + state_pill(source.state)
        + progress_html(data.progress(source))
    )


def sparkline(activity: Activity) -> str:
    """Hourly messages over the last 24 hours as a tiny inline SVG bar chart.

    Drawn for every row of the Collection page (500 per page): one f-string,
    whole-pixel bars; the label holds only numbers and fixed words.
    """
    hourly = activity.hourly
    peak = max(hourly)
    scale = (SPARK_H - 2) / (peak or 1)
    bars = "".join(
        f'<rect x="{i * SPARK_BAR}" y="{SPARK_H - h}" width="{SPARK_BAR - 1}" '
        f'height="{h}"></rect>'
        for i, count in enumerate(hourly)
        if count and (h := max(1, round(count * scale)))
    )
    label = (
        f"{sum(hourly):,} messages in the last 24 hours, at most {peak:,} in one hour"
    )
    return (
        f'<svg class="sparkline" width="{SPARK_W}" height="{SPARK_H}" '
        f'viewBox="0 0 {ACTIVITY_HOURS * SPARK_BAR} {SPARK_H}" role="img" '
        f'aria-label="{label}"><title>{label}</title>'
        f'<line x1="0" y1="{SPARK_H - 0.5}" x2="{ACTIVITY_HOURS * SPARK_BAR}" '
        f'y2="{SPARK_H - 0.5}"></line>{bars}</svg>'
    )


def source_cells(source: Source, data: RowData) -> dict[str, str]:
    """Every live cell of a source, keyed by the page's data-live names."""
    activity = data.activity.get(source.pk, NO_ACTIVITY)
    return {
        "health": status_icon(source),
        "status": status_cell(source, data),
        "state": trail_html(data.trails.get(source.pk, [])) + state_pill(source.state),
        "messages": f"{activity.total:,}",
        "activity": sparkline(activity),
        "progress": progress_html(data.progress(source), detailed=True)
        or no_backfill_html(source, data.now),
        "next_attempt": e(source.next_attempt(data.now).text),
    }


def collector_cells(collector, data: RowData) -> dict[str, str]:
    """Every live cell of a collector row: health, source count, activity."""
    activity = data.collector_activity.get(collector.pk, NO_ACTIVITY)
    count = getattr(collector, "source_count", 0)
    return {
        "health": status_icon(collector),
        "sources": f"{count:,}",
        "messages": f"{activity.total:,}",
        "activity": sparkline(activity),
    }


def safe(cells: dict[str, str]) -> dict[str, SafeString]:
    """The cells for a template: each was escaped while it was built."""
    return {k: mark_safe(v) for k, v in cells.items()}  # noqa: S308

"""The Overview's charts as inline SVG geometry (no chart library, no CDN).

Python computes every rectangle; the templates only print numbers and
classes, so the charts need no script, no `style` attribute (CSP) and render
the same with JavaScript off. Colours come from CSS classes (`.series-N`),
which dark mode and the contrast checks see like any other style.
"""

from __future__ import annotations

from django import template

register = template.Library()

WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM = 1200, 220, 44, 22


def _nice_peak(peak: int) -> int:
    """Round the scale up to 1, 2 or 5 times a power of ten (readable ticks)."""
    if peak <= 0:
        return 1
    step = 1
    while True:
        for m in (1, 2, 5):
            if peak <= m * step:
                return m * step
        step *= 10


@register.inclusion_tag("collectors/overview/_stacked_chart.html")
def stacked_chart(panel: dict) -> dict:
    """Bars per day, one segment per event type, each day a link to its
    messages; heights scale to the busiest day."""
    days = panel["days"]
    n = len(days) or 1
    peak = _nice_peak(max((sum(d["counts"]) for d in days), default=0))
    usable = HEIGHT - PAD_BOTTOM
    slot = (WIDTH - PAD_LEFT) / n
    bars = []
    for i, d in enumerate(days):
        x = PAD_LEFT + i * slot + slot * 0.1
        y = usable
        segments = []
        for s, count in enumerate(d["counts"]):
            if not count:
                continue
            h = usable * count / peak
            y -= h
            segments.append(
                {
                    "series": s,
                    "name": panel["series"][s]["name"],
                    "count": count,
                    "y": round(y, 1),
                    "h": round(h, 1),
                }
            )
        bars.append(
            {
                "day": d["day"],
                "url": d["url"],
                "total": sum(d["counts"]),
                "x": round(x, 1),
                "w": round(max(slot * 0.8, 1), 1),
                "cx": round(PAD_LEFT + i * slot + slot / 2, 1),
                "segments": segments,
            }
        )
    step = max(1, n // 10)
    return {
        "bars": bars,
        "labels": [b for i, b in enumerate(bars) if i % step == 0],
        "peak": peak,
        "half": peak // 2 if peak % 2 == 0 else None,
        "half_y": usable / 2,
        "width": WIDTH,
        "height": HEIGHT,
        "base": usable,
        "pad": PAD_LEFT,
    }


RISK_W, RISK_H, RISK_PAD = 440, 200, 22


@register.inclusion_tag("collectors/overview/_risk_chart.html")
def risk_chart(rows: list[dict]) -> dict:
    """One bar per risk level present (lowest first), each a link."""
    n = len(rows) or 1
    peak = _nice_peak(max((r["count"] for r in rows), default=0))
    usable = RISK_H - RISK_PAD
    slot = (RISK_W - RISK_PAD) / n
    bars = []
    for i, row in enumerate(rows):
        h = usable * row["count"] / peak
        bars.append(
            {
                **row,
                "label": "none" if row["level"] is None else str(row["level"]),
                "x": round(RISK_PAD + i * slot + slot * 0.15, 1),
                "w": round(max(slot * 0.7, 1), 1),
                "y": round(usable - h, 1),
                "h": round(h, 1),
                "cx": round(RISK_PAD + i * slot + slot / 2, 1),
                "tone": _risk_tone(row["level"]),
            }
        )
    return {
        "bars": bars,
        "peak": peak,
        "width": RISK_W,
        "height": RISK_H,
        "base": usable,
        "pad": RISK_PAD,
    }


def _risk_tone(level: int | None) -> str:
    """A colour class by risk: KnowBe4 levels run from -10 (safe) to 10."""
    if level is None:
        return "risk-none"
    if level >= 5:
        return "risk-high"
    if level > 0:
        return "risk-mid"
    return "risk-low"


PPP_W, PPP_H, PPP_PAD, PPP_BOTTOM = 600, 180, 36, 20


@register.inclusion_tag("collectors/overview/_ppp_chart.html")
def ppp_chart(tests: list[dict]) -> dict:
    """Phish-prone percentage over time: one linked point per started test
    with a percentage, placed by start time, joined oldest to newest."""
    shown = [t for t in tests if t["started"] and t["ppp"] is not None]
    peak = _nice_peak(int(max((t["ppp"] for t in shown), default=0)) + 1)
    usable = PPP_H - PPP_BOTTOM
    first = shown[0]["started"] if shown else None
    span = (shown[-1]["started"] - first).total_seconds() if shown else 0
    points = []
    for i, t in enumerate(shown):
        if span:
            frac = (t["started"] - first).total_seconds() / span
        else:
            frac = (i + 0.5) / len(shown)
        points.append(
            {
                **t,
                "x": round(PPP_PAD + 8 + frac * (PPP_W - PPP_PAD - 16), 1),
                "y": round(usable - usable * t["ppp"] / peak, 1),
            }
        )
    return {
        "points": points,
        "line": " ".join(f"{p['x']},{p['y']}" for p in points),
        "peak": peak,
        "width": PPP_W,
        "height": PPP_H,
        "base": usable,
        "pad": PPP_PAD,
        "first": points[0] if points else None,
        "last": points[-1] if points else None,
    }

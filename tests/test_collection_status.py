"""The Collection page's refresh endpoint: states and the rendered live cells
(looks come from the health icon the page itself draws)."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime

import pytest
from django.urls import reverse

from collectors.choices import ErrorType, HealthEventName, Severity, SourceState
from collectors.models import HealthEvent
from tests.cast import make_collector, make_source


def event(source=None, *, collector=None, severity=Severity.ERROR, name=None):
    return HealthEvent.objects.create(
        source=source,
        collector=collector,
        severity=severity,
        event_name=name or HealthEventName.THIRD_PARTY_GENERIC,
        error_type=ErrorType.THIRD_PARTY_GENERIC,
        message="x",
    )


def look(item: dict) -> dict:
    """The health icon's data attributes from a row's rendered Health cell."""
    cell = item["cells"]["health"]
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', cell))
    icon = re.search(r'<img src="([^"]+)"', cell).group(1)
    return {
        "status": attrs["status"],
        "tooltip": html.unescape(attrs["tooltip"]),
        "last_success_text": html.unescape(attrs["last-success"]),
        "errors": int(attrs["errors"]),
        "warnings": int(attrs["warnings"]),
        "icon": icon,
    }


def status(client) -> dict:
    resp = client.get(reverse("collection-status"))
    assert resp.status_code == 200
    data = resp.json()
    return {
        "sources": {s["id"]: s for s in data["sources"]},
        "collectors": {c["id"]: c for c in data["collectors"]},
    }


@pytest.mark.django_db
def test_it_reports_states_looks_and_tooltips(admin_client, collector):
    red = make_source(collector, "Red", state=SourceState.ERROR)
    orange = make_source(collector, "Orange", state=SourceState.COLLECTING)
    green = make_source(
        collector,
        "Green",
        state=SourceState.COLLECTING,
        last_success_at=datetime(2026, 11, 26, 3, 0, tzinfo=UTC),
    )
    pending = make_source(collector, "Pending")
    event(red, name=HealthEventName.THIRD_PARTY_CONFIG)
    event(red, severity=Severity.WARNING)
    event(orange, severity=Severity.WARNING)
    data = status(admin_client)
    s = {pk: {**item, **look(item)} for pk, item in data["sources"].items()}
    assert (s[red.pk]["status"], s[red.pk]["tooltip"]) == (
        "error",
        "1 error, 1 warning",
    )
    assert s[red.pk]["state_label"] == "Error"
    assert s[orange.pk]["status"] == "warning"
    assert s[green.pk]["status"] == "healthy"
    assert s[green.pk]["last_success_text"] == (
        "Last successful collection: 2026-11-26 03:00 UTC"
    )
    assert s[green.pk]["icon"].endswith("img/status-healthy.svg")
    assert s[pending.pk]["status"] == "neutral"
    c = look(data["collectors"][collector.pk])
    assert (c["errors"], c["warnings"]) == (1, 2)
    assert c["status"] == "error"
    assert c["last_success_text"] == "Last successful collection: 2026-11-26 03:00 UTC"


@pytest.mark.django_db
def test_it_counts_a_collectors_own_events_and_ignores_resolved(admin_client):
    collector = make_collector("Solo")
    done = event(collector=collector)
    done.resolved_at = done.last_seen
    done.save()
    event(collector=collector, severity=Severity.WARNING)
    c = look(status(admin_client)["collectors"][collector.pk])
    assert (c["status"], c["tooltip"]) == ("warning", "0 errors, 1 warning")


@pytest.mark.django_db
def test_it_runs_constant_queries(admin_client, django_assert_num_queries):
    def populate(n: int) -> None:
        for i in range(n):
            collector = make_collector(f"C{n}-{i}")
            for j in range(3):
                src = make_source(collector, f"S{j}")
                event(src, severity=Severity.WARNING if j else Severity.ERROR)

    populate(2)
    since = datetime(2026, 1, 1, tzinfo=UTC).isoformat()
    # session, user, sources, collectors (annotated), the collectors' sources,
    # activity, backfill counts, transitions
    with django_assert_num_queries(8):
        admin_client.get(reverse("collection-status"), {"since": since})
    populate(10)
    with django_assert_num_queries(8):
        resp = admin_client.get(reverse("collection-status"), {"since": since})
    data = {"sources": resp.json()["sources"]}
    assert len(data["sources"]) == 36


@pytest.mark.django_db
def test_it_requires_sign_in(client):
    assert client.get(reverse("collection-status")).status_code == 302


@pytest.mark.django_db
def test_it_answers_only_for_the_rows_the_page_names(admin_client):
    shown, hidden = make_collector("Shown"), make_collector("Hidden")
    a = make_source(shown, "A")
    b = make_source(hidden, "B")
    loose = make_source(hidden, "Loose", state=SourceState.ERROR)
    event(b)
    event(loose)
    resp = admin_client.get(
        reverse("collection-status"),
        {"collectors": f"{shown.pk},junk", "sources": str(loose.pk)},
    )
    data = resp.json()
    assert {s["id"] for s in data["sources"]} == {a.pk, loose.pk}
    assert [c["id"] for c in data["collectors"]] == [shown.pk]
    assert look(data["collectors"][0])["status"] == "healthy"  # b's is elsewhere
    assert look(next(s for s in data["sources"] if s["id"] == loose.pk))["errors"] == 1

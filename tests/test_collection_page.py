"""The Collection page: collectors with nested sources, health, filter, paging,
and a constant number of queries."""

from __future__ import annotations

import pytest
from django.urls import reverse

from collectors.choices import HealthEventName, Severity, SourceState
from collectors.models import HealthEvent, HostedCollector, Source
from tests.cast import make_collector, make_source

pytestmark = pytest.mark.django_db


def open_event(severity: str, *, source=None, collector=None, name=None) -> HealthEvent:
    return HealthEvent.objects.create(
        source=source,
        collector=collector,
        event_name=name or HealthEventName.THIRD_PARTY_GENERIC,
        error_type="ThirdPartyGeneric",
        severity=severity,
        message="KnowBe4 answered 503",
    )


def row(html: str, attr: str) -> str:
    """The <tr> that carries `attr` (e.g. data-source-id="3")."""
    start = html.index(attr)
    return html[start : html.index("</tr>", start)]


def test_it_is_the_home_page(admin_client):
    response = admin_client.get("/")
    assert response.status_code == 200
    assert response.templates[0].name == "collectors/collection.html"


def test_it_nests_sources_under_their_collector(admin_client):
    prod = make_collector("Production")
    make_collector("Staging")
    source = make_source(prod, "KB4 Prod", category="sec/kb4")
    html = admin_client.get("/").content.decode()
    assert html.index("Production") < html.index("KB4 Prod") < html.index("Staging")
    line = row(html, f'data-source-id="{source.pk}"')
    assert "KnowBe4" in line
    assert "sec/kb4" in line
    assert f'href="{source.get_absolute_url()}"' in line
    assert '<span class="state state-pending" data-state>Pending</span>' in line
    assert reverse("source-types", args=[prod.pk]) in html
    assert reverse("collector-add") in html
    assert 'id="health-panel-slot"' in html
    assert "js/health.js" in html


def test_it_names_each_sources_type(admin_client):
    prod = make_collector("Production")
    events = make_source(prod, "Events")
    kmsat = make_source(prod, "KMSAT", kind="reporting")
    html = admin_client.get(reverse("collection")).content.decode()
    badge = '<span class="type-badge">{}</span>'
    assert badge.format("KnowBe4") in row(html, f'data-source-id="{events.pk}"')
    assert badge.format("KnowBe4 KMSAT Reporting") in row(
        html, f'data-source-id="{kmsat.pk}"'
    )


def test_it_colours_health_from_open_events(admin_client):
    collector = make_collector()
    red = make_source(collector, "Red", state=SourceState.ERROR)
    orange = make_source(collector, "Orange", state=SourceState.COLLECTING)
    green = make_source(collector, "Green", state=SourceState.COLLECTING)
    open_event(Severity.ERROR, source=red)
    open_event(Severity.WARNING, source=orange)
    resolved = open_event(Severity.ERROR, source=green, name="FirstPartyGenericError")
    HealthEvent.objects.filter(pk=resolved.pk).update(resolved_at=resolved.first_seen)
    html = admin_client.get("/").content.decode()
    assert 'data-status="error"' in row(html, f'data-source-id="{red.pk}"')
    assert 'data-status="warning"' in row(html, f'data-source-id="{orange.pk}"')
    assert 'data-status="healthy"' in row(html, f'data-source-id="{green.pk}"')
    collector_row = row(html, f'data-collector-id="{collector.pk}"')
    assert 'data-status="error"' in collector_row
    assert "1 error, 1 warning" in collector_row


def test_it_counts_collector_events_without_multiplying(admin_client):
    collector = make_collector()
    for i in range(3):
        source = make_source(collector, f"S{i}")
        open_event(Severity.WARNING, source=source)
    open_event(Severity.WARNING, collector=collector)
    page = admin_client.get("/").context["page"]
    (annotated,) = page.object_list
    assert (annotated.open_errors, annotated.open_warnings) == (0, 4)
    counts = [(s.open_errors, s.open_warnings) for s in annotated.shown_sources]
    assert counts == [(0, 1)] * 3


def test_it_filters_by_name_or_category(admin_client):
    prod = make_collector("Production")
    staging = make_collector("Staging", category="test")
    make_source(prod, "Phishing events", category="sec/phish")
    make_source(prod, "Training events", category="sec/training")
    make_source(staging, "Other", category="misc")
    html = admin_client.get("/", {"q": "PHISH"}).content.decode()
    assert "Phishing events" in html
    assert "Training events" not in html
    assert "Staging" not in html
    html = admin_client.get("/", {"q": "staging"}).content.decode()
    assert "Other" in html
    assert "Phishing events" not in html
    html = admin_client.get("/", {"q": "sec/training"}).content.decode()
    assert "Training events" in html
    assert "Phishing events" not in html
    html = admin_client.get("/", {"q": "nothing-like-this"}).content.decode()
    assert "No collector or source matches" in html


def test_it_paginates_collectors_at_100(admin_client):
    HostedCollector.objects.bulk_create(
        HostedCollector(name=f"C{i:03}") for i in range(101)
    )
    page = admin_client.get("/").context["page"]
    assert len(page.object_list) == 100
    html = admin_client.get("/", {"page": 2}).content.decode()
    assert "C100" in html
    assert "C099" not in html
    assert admin_client.get("/", {"page": "junk"}).status_code == 200


def test_it_shows_a_stopping_source_without_edit_actions(admin_client, source):
    source.request_stop()
    html = admin_client.get("/").content.decode()
    line = row(html, f'data-source-id="{source.pk}"')
    assert "Stopping" in line
    assert reverse("source-edit", args=[source.pk]) not in line


def _populate(prefix: str, collectors: int, sources: int) -> None:
    """Collectors of sources, each source with one open error or warning."""
    HostedCollector.objects.bulk_create(
        HostedCollector(name=f"{prefix} {i:03}") for i in range(collectors)
    )
    rows = []
    for collector in HostedCollector.objects.filter(name__startswith=prefix):
        for j in range(sources):
            source = Source(
                collector=collector,
                name=f"Source {j}",
                base_url_key="us",
                api_key_hint="abcd",
                api_key_encrypted="x",
            )
            rows.append(source)
    Source.objects.bulk_create(rows)
    events = []
    mine = Source.objects.filter(collector__name__startswith=prefix)
    for i, source in enumerate(mine):
        severity = Severity.ERROR if i % 3 == 0 else Severity.WARNING
        events.append(
            HealthEvent(
                source=source,
                event_name=HealthEventName.THIRD_PARTY_GENERIC,
                error_type="ThirdPartyGeneric",
                severity=severity,
                message="m",
            )
        )
    HealthEvent.objects.bulk_create(events)


def test_it_runs_a_constant_number_of_queries(admin_client, django_assert_num_queries):
    _populate("Small", 2, 1)
    admin_client.get("/")  # warm the session
    with django_assert_num_queries(10) as small:
        admin_client.get("/")
    _populate("Big", 60, 5)
    with django_assert_num_queries(len(small.captured_queries)):
        response = admin_client.get("/")
    assert response.content.decode().count("data-source-id=") == 2 + 300


def test_it_escapes_names_and_categories(admin_client, collector):
    make_source(collector, "<script>alert(1)</script>", category='"><img src=x>')
    html = admin_client.get("/").content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert '"><img src=x>' not in html

"""No 500 on any input: every GET page of the app, each of its query
parameters set to a battery of hostile values.

The page list comes from the URLconf, so a page added later is covered
without touching this file; path parameters are filled with existing rows.
Each page's parameters are the fields of its GET forms, the query keys of
its own links, and a short per-view list of parameters no form shows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from django.apps import apps
from django.db import transaction
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from alerts.models import ConnectionKind, Notification
from collectors.choices import ErrorType, HealthEventName, Severity
from collectors.models import HealthEvent, LogMessage
from tests.alerts_support import make_connection, make_log_monitor
from tests.cast import make_field, make_source

pytestmark = pytest.mark.django_db

# Parameters a page reads that no form or link of its first page shows.
EXTRA_PARAMS = {
    "collection": ["q", "page"],
    "collection-status": ["sources", "collectors"],
    "health-events": ["page", "sort"],
    "messages": ["after", "before"],
    "messages-export": ["after", "before"],
}
# Sample values for path parameters that are not plain ids (regex groups).
SAMPLE_KWARGS = {"messages-export": [{"fmt": "csv"}, {"fmt": "jsonl"}]}
# Raw query-string values: sent as written (already percent-encoded or not).
RAW_VALUES = ["%ZZ", "%FF%FE%FD", "%", "%E2%82", "%00"]
VALUES = [
    "",
    " ",
    "0",
    "-1",
    "99999999999999999999",
    "-99999999999999999999",
    "9223372036854775808",
    "1e400",
    "NaN",
    "0001-01-01",
    "9999-12-31",
    "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+23:59_1",
    "9999-12-31T23:59:59-23:59_99999999999999999999",
    "2026-01-01T00:00:00_²",
    "²",
    "１２３",
    "١٢٣",
    "1,²,99999999999999999999,-5,,x",
    "x" * 10_000,
    "9" * 10_000,
    "\x00",
    "a\x00b",
    "\u202e\ufeff",
    "*" * 300,
    "'; DROP TABLE x; --",
]


# Admin lists have many filter parameters and Django validates most values
# itself: the values that got through it before (overflowing dates and
# numbers), and the ones that break parsing anywhere.
ADMIN_VALUES = [
    "",
    "-1",
    "99999999999999999999",
    "-99999999999999999999",
    "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59-23:59",
    "0001-01-01",
    "²",
    "１２３",
    "x" * 10_000,
    "\x00",
]


class _Params(HTMLParser):
    """Collects the names of GET-form fields and the query keys of links."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.names: set[str] = set()
        self._in_get_form = False

    def handle_starttag(self, tag, attrs) -> None:
        a = dict(attrs)
        if tag == "form":
            self._in_get_form = (a.get("method") or "get").lower() == "get"
        elif tag in ("input", "select", "textarea") and self._in_get_form:
            if a.get("name"):
                self.names.add(a["name"])
        elif tag == "a" and a.get("href"):
            parts = urlsplit(a["href"])
            if parts.path in ("", self.path):
                self.names.update(k for k, _ in parse_qsl(parts.query))

    def handle_endtag(self, tag) -> None:
        if tag == "form":
            self._in_get_form = False


@dataclass
class PostForm:
    """A POST form of a page: where it goes and the values it would send."""

    action: str
    fields: list[tuple[str, str]]

    @property
    def names(self) -> list[str]:
        return sorted({n for n, _ in self.fields} - {"csrfmiddlewaretoken"})

    def data(self, name: str, value) -> dict[str, list[str]]:
        """The form as sent, with field `name` set to `value` (a list: repeated)."""
        data: dict[str, list[str]] = {}
        for key, current in self.fields:
            data.setdefault(key, []).append(current)
        data[name] = value if isinstance(value, list) else [value]
        return data


class _PostForms(HTMLParser):
    """Collects the POST forms of a page with their fields' current values."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.forms: list[PostForm] = []
        self._form: PostForm | None = None
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag, attrs) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("method", "").lower() == "post":
            action = a.get("action") or self.url
            self._form = PostForm(action, [])
            self.forms.append(self._form)
        elif self._form is None or not a.get("name") and tag != "option":
            return
        elif tag == "input":
            kind = a.get("type", "text").lower()
            if kind in ("checkbox", "radio") and "checked" not in a:
                return
            if kind not in ("submit", "button", "image", "file"):
                self._form.fields.append((a["name"], a.get("value", "")))
        elif tag == "select":
            self._select = a["name"]
            self._form.fields.append((a["name"], ""))
        elif tag == "option" and self._select and "selected" in a:
            self._form.fields[-1] = (self._select, a.get("value", ""))
        elif tag == "textarea":
            self._textarea = a["name"]
            self._form.fields.append((a["name"], ""))

    def handle_data(self, data) -> None:
        if self._form is not None and self._textarea:
            name, text = self._form.fields[-1]
            self._form.fields[-1] = (name, text + data)

    def handle_endtag(self, tag) -> None:
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None


def _patterns(resolver=None, prefix: str = "", namespace: str | None = None):
    """(name, pattern) of every named page outside the admin."""
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            if entry.namespace == "admin":
                continue
            yield from _patterns(entry, prefix, entry.namespace or namespace)
        elif isinstance(entry, URLPattern) and entry.name:
            name = f"{namespace}:{entry.name}" if namespace else entry.name
            yield name, entry


def _kwarg_names(pattern: URLPattern) -> list[str]:
    return list(pattern.pattern.regex.groupindex)


@pytest.fixture
def world(admin_client, collector):
    """One row of every kind a page can be about."""
    source = make_source(collector)
    make_field("dept")
    HealthEvent.objects.create(
        source=source,
        event_name=HealthEventName.THIRD_PARTY_GENERIC,
        error_type=ErrorType.THIRD_PARTY_GENERIC,
        severity=Severity.ERROR,
        message="KnowBe4 answered HTTP 503",
    )
    HealthEvent.objects.create(
        collector=collector,
        event_name=HealthEventName.THIRD_PARTY_GENERIC,
        error_type=ErrorType.THIRD_PARTY_GENERIC,
        severity=Severity.WARNING,
        message="collector warning",
    )
    connection = make_connection(
        ConnectionKind.WEBHOOK, url="https://hooks.example.org/hook-0123"
    )
    monitor = make_log_monitor(connections=[connection])
    trigger = monitor.triggers.create(state="triggered", summary="3 clicks")
    Notification.objects.create(
        trigger=trigger,
        connection=connection,
        connection_name=connection.name,
        kind=connection.kind,
    )
    for n in range(3):
        LogMessage.objects.create(
            source=source,
            event_id=f"evt-{n}",
            raw=json.dumps({"id": f"evt-{n}"}),
            message_time=datetime(2026, 11, 20 + n, tzinfo=UTC),
            source_name=source.name,
            source_category=source.category,
            collector_name=collector.name,
        )
    return admin_client


def _candidate_ids() -> list[int]:
    """The pk of one existing row of every model that has rows."""
    ids: list[int] = []
    for model in apps.get_models():
        row = model._default_manager.order_by("pk").values_list("pk", flat=True)
        first = row.first()
        if isinstance(first, int) and first not in ids:
            ids.append(first)
    return ids


def _urls(client, name: str, pattern: URLPattern) -> list[str]:
    """Concrete URLs for a pattern: its samples, or ids of existing rows
    (the first id whose page is not a 404, so the page itself is tested)."""
    kwargs = _kwarg_names(pattern)
    if not kwargs:
        return [reverse(name)]
    if name in SAMPLE_KWARGS:
        return [reverse(name, kwargs=kw) for kw in SAMPLE_KWARGS[name]]
    assert set(kwargs) <= {"pk"}, f"add sample path parameters for {name}"
    urls = [reverse(name, kwargs={"pk": pk}) for pk in _candidate_ids()]
    found = [u for u in urls if client.get(u).status_code != 404]
    return found[:1] or urls[:1]


def _found(client, url: str) -> bool:
    return client.get(url).status_code != 404


def _param_names(client, name: str, url: str) -> list[str]:
    response = client.get(url)
    names = set(EXTRA_PARAMS.get(name, []))
    if "text/html" in response.get("Content-Type", ""):
        parser = _Params(urlsplit(url).path)
        parser.feed(response.content.decode("utf-8", "replace"))
        names |= parser.names
    return sorted(names - {"csrfmiddlewaretoken"})


def _queries(param: str, values: list[str]) -> list[str]:
    """The query strings sent for one parameter: each value, raw junk, lists."""
    p = quote(param)
    queries = [f"{p}={quote(v, safe='')}" for v in values]
    queries += [f"{p}={v}" for v in RAW_VALUES]
    queries += [
        f"{p}=1&{p}=2&{p}=x",
        f"{p}=&{p}=%ZZ&{p}=" + "9" * 30,
        f"{p}[]=1&{p}[]=2",
        p,
    ]
    return queries


def _fetch(client, url: str) -> int:
    """GET url, reading a streamed body too (an export fails mid-stream)."""
    response = client.get(url)
    if response.streaming:
        b"".join(response.streaming_content)
    return response.status_code


def _page_ids() -> list[str]:
    return sorted(name for name, _ in _patterns())


def _admin_changelists() -> list[str]:
    """The changelist of every model registered in the admin (their search,
    ordering, paging and filter parameters are found on the page)."""
    from django.contrib import admin

    return sorted(
        f"admin:{m._meta.app_label}_{m._meta.model_name}_changelist"
        for m in admin.site._registry
    )


def _hostile_failures(
    client, name: str, urls: list[str], values: list[str] = VALUES
) -> list[str]:
    """Every request of the battery that answered 5xx or raised."""
    failures = []
    for url in urls:
        for param in _param_names(client, name, url):
            for query in _queries(param, values):
                target = f"{url}?{query}"
                try:
                    status = _fetch(client, target)
                except Exception as exc:  # noqa: BLE001 - reported below
                    failures.append(f"{target[:120]!r}: {type(exc).__name__}: {exc}")
                    continue
                if status >= 500:
                    failures.append(f"{target[:120]!r}: HTTP {status}")
    return failures


@pytest.mark.parametrize("name", _page_ids())
def test_it_never_answers_500_to_a_hostile_query_parameter(world, name):
    pattern = dict(_patterns())[name]
    failures = _hostile_failures(world, name, _urls(world, name, pattern))
    assert not failures, "\n".join(failures[:40])


@pytest.mark.filterwarnings("ignore:DateTimeField .* naive datetime:RuntimeWarning")
@pytest.mark.parametrize("name", _admin_changelists())
def test_it_never_answers_500_to_a_hostile_admin_list_parameter(world, name):
    failures = _hostile_failures(world, name, [reverse(name)], ADMIN_VALUES)
    assert not failures, "\n".join(failures[:40])


@pytest.mark.parametrize(
    "query",
    [
        "at__year=99999999999999999999",
        "at__gte=0001-01-01T00:00:00%2B23:59",
    ],
)
def test_it_answers_an_overflowing_admin_filter_with_400_and_a_message(world, query):
    url = reverse("admin:collectors_statetransition_changelist")
    response = world.get(f"{url}?{query}")
    assert response.status_code == 400
    html = response.content.decode()
    assert "A filter of this list is out of range" in html
    assert f'href="{url}"' in html


def test_it_covers_every_page_of_the_urlconf(world):
    """Every named page resolves to a URL the test can request, and the pages
    the audit found 500s on are among them with their parameters."""
    names = dict(_patterns())
    for name, pattern in names.items():
        assert _urls(world, name, pattern), name
    for name in (
        "source-detail",
        "health-event-detail",
        "monitor-detail",
        "notification-detail",
        "connection-edit",
        "collector-edit",
    ):
        (url,) = _urls(world, name, names[name])
        assert _found(world, url), f"{name}: no row of its kind in `world`"
    messages = _param_names(world, "messages", reverse("messages"))
    assert {"since", "until", "after", "before", "q", "source"} <= set(messages)
    assert "sources" in _param_names(
        world, "collection-status", reverse("collection-status")
    )


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("until", "9999-12-31"),
        ("until", "0001-01-01"),
        ("since", "0001-01-01T00:00:00+23:59"),
        ("since", "9999-12-31T23:59:59-23:59"),
    ],
)
def test_it_refuses_a_time_outside_years_2_to_9998_with_a_message(world, param, value):
    response = world.get(reverse("messages"), {param: value})
    assert response.status_code == 200
    errors = response.context["form"].errors[param]
    assert errors == ["Enter a time between the years 2 and 9998."]
    assert "Enter a time between the years 2 and 9998." in response.content.decode()
    response = world.get(reverse("health-events"), {param: value})
    assert response.context["form"].errors[param]


def test_it_accepts_the_edges_of_the_allowed_years(world):
    response = world.get(
        reverse("messages"), {"since": "0002-01-01", "until": "9998-12-31T23:59"}
    )
    assert response.context["form"].is_valid()
    assert len(response.context["page"].rows) == 3


@pytest.mark.parametrize(
    "cursor",
    [
        "0001-01-01T00:00:00+23:59_1",
        "9999-12-31T23:59:59-23:59_5",
        "2026-11-21T00:00:00+00:00_²",
        "2026-11-21T00:00:00+00:00_99999999999999999999",
        "2026-11-21T00:00:00+00:00_-1",
    ],
)
def test_it_ignores_a_cursor_that_does_not_decode(world, cursor):
    for key in ("after", "before"):
        response = world.get(reverse("messages"), {key: cursor})
        assert response.status_code == 200
        assert [m.event_id for m in response.context["page"].rows] == [
            "evt-2",
            "evt-1",
            "evt-0",
        ]


def test_it_keeps_only_ascii_ids_within_63_bits_in_the_status_query(world, collector):
    source_id = collector.sources.get().pk
    response = world.get(
        reverse("collection-status"),
        {"sources": f"²,99999999999999999999,9223372036854775808,١,{source_id}"},
    )
    assert response.status_code == 200
    assert [s["id"] for s in response.json()["sources"]] == [source_id]
    response = world.get(reverse("collection-status"), {"sources": "²"})
    assert (response.json()["sources"], response.json()["collectors"]) == ([], [])


# POST values: those the GET battery found problems with, plus what a form
# field meets (lists, huge text, NUL, invalid UTF-8 sent raw below).
POST_VALUES = [
    "",
    "-1",
    "99999999999999999999",
    "0001-01-01T00:00:00+23:59",
    "9999-12-31",
    "²",
    "１２３",
    "x" * 10_000,
    "\x00",
    "\u202e\ufeff",
    ["1", "2", "x"],
]
# Forms whose POST ends the test client's session rather than testing input.
SKIPPED_ACTIONS = ("/logout/",)


def _post_forms(client) -> list[PostForm]:
    """Every distinct POST form of every GET page of the URLconf."""
    forms: dict[tuple, PostForm] = {}
    for name, pattern in sorted(_patterns()):
        for url in _urls(client, name, pattern):
            response = client.get(url)
            if "text/html" not in response.get("Content-Type", ""):
                continue
            parser = _PostForms(url)
            parser.feed(response.content.decode("utf-8", "replace"))
            for form in parser.forms:
                if not form.action.startswith(SKIPPED_ACTIONS):
                    forms.setdefault((form.action, tuple(form.names)), form)
    return list(forms.values())


def _post(client, form: PostForm, **kwargs) -> int:
    """POST inside a savepoint rolled back afterwards, so a form that saves
    or deletes leaves the world as it was for the next request."""
    with transaction.atomic():
        status = client.post(form.action, **kwargs).status_code
        transaction.set_rollback(True)
    return status


def test_it_never_answers_500_to_a_hostile_form_field(world):
    client = world
    forms = _post_forms(client)
    assert {"/collectors/add/", "/fields/add/"} <= {f.action for f in forms}
    failures = []
    for form in forms:
        attempts = [({"data": {}}, "nothing")]
        for name in form.names:
            attempts += [({"data": form.data(name, v)}, name) for v in POST_VALUES]
            body = "&".join(
                f"{quote(k)}={quote(v)}"
                for k, values in form.data(name, "").items()
                for v in values
            )
            attempts.append(
                (
                    {
                        "data": f"{body}&{quote(name)}=%FF%FE%ZZ",
                        "content_type": "application/x-www-form-urlencoded",
                    },
                    f"{name} (invalid UTF-8)",
                )
            )
        for kwargs, what in attempts:
            try:
                status = _post(client, form, **kwargs)
            except Exception as exc:  # noqa: BLE001 - reported below
                failures.append(f"{form.action} {what}: {type(exc).__name__}: {exc}")
                continue
            if status >= 500:
                failures.append(f"{form.action} {what}: HTTP {status}")
    assert not failures, "\n".join(failures[:40])


@pytest.mark.parametrize("value", ["99999999999999999999", "²", "-1", "１"])
def test_it_refuses_an_id_that_is_not_ascii_decimal_within_63_bits(world, value):
    response = world.post(
        reverse("monitor-add"), {"name": "m", "kind": "log", "sources": [value]}
    )
    assert response.status_code == 200
    errors = response.context["form"].errors["sources"]
    assert errors == [f"“{value}” is not a valid value."]

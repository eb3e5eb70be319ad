"""Pages fetched two ahead (`engine.fetch.Fetcher`, `window.pages_ahead`):
within a day whose page count KnowBe4 gives (`meta.total_pages`), the page
after next is asked for while a page is stored, so the fetch thread never
idles behind the run; never a page the day does not have, never past the
run's page budget, and with the rate limiter on no 429 and no slot left in
flight."""

from __future__ import annotations

from datetime import date
from urllib.parse import parse_qs

import pytest

from collectors import crypto, engine, ledger
from collectors.engine import daypages, window
from collectors.engine import store as engine_store
from collectors.knowbe4.client import EventsPage
from collectors.models import ApiKeyUsage
from tests import engine_support as es
from tests.sandbox_support import running_sandbox

clock = es.clock

DAY = date(2026, 3, 9)


@pytest.fixture
def pages_of_three(clock):
    """Two days of 250 events: pages of 100, 100 and 50 each; limits off."""
    with running_sandbox(days=2, events_per_day=250, rate_limit=False) as server:
        yield server


def asked(server) -> list[tuple[str, int]]:
    """The (day, page) of each /events request, in the order sent."""
    out = []
    for r in es.api_requests(server):
        query = parse_qs(r.query)
        out.append((query["occurred_date"][0], int(query["page"][0])))
    return out


def sent_when_storing(monkeypatch, server) -> list[int]:
    """How many /events requests had been sent as each page was stored."""
    seen, real = [], engine_store.store_page

    def spy(*args, **kw):
        seen.append(len(es.api_requests(server)))
        return real(*args, **kw)

    monkeypatch.setattr(engine_store, "store_page", spy)
    return seen


def page(next_page: int | None, total: object) -> EventsPage:
    return EventsPage([{}], next_page, {"total_pages": total})


def test_it_names_the_page_after_next_only_when_the_day_has_it():
    same_day = (DAY, 2, None)
    assert window.pages_ahead(page(2, 3), DAY, same_day) == [(DAY, 2), (DAY, 3)]
    assert window.pages_ahead(page(3, 3), DAY, (DAY, 3, None)) == [(DAY, 3)]
    # no count, or not a number: the next page only
    assert window.pages_ahead(page(2, None), DAY, same_day) == [(DAY, 2)]
    assert window.pages_ahead(page(2, "3"), DAY, same_day) == [(DAY, 2)]
    assert window.pages_ahead(page(2, True), DAY, same_day) == [(DAY, 2)]
    # the next day starts at its page 1, whose count is not known yet
    next_day = (date(2026, 3, 10), 1, DAY)
    assert window.pages_ahead(page(None, 1), DAY, next_day) == [next_day[:2]]
    assert window.pages_ahead(page(None, 1), DAY, (None, 1, DAY)) == []


def test_it_asks_for_two_pages_ahead_and_never_for_one_the_day_lacks(
    settings, pages_of_three, collector, monkeypatch
):
    settings.KNOWBE4_RATE_LIMIT = False
    monkeypatch.setattr(daypages, "ThreadPoolExecutor", es.InlinePool)
    source = es.sandbox_source(
        settings, pages_of_three, collector, initial_lookback_days=2
    )
    sent = sent_when_storing(monkeypatch, pages_of_three)

    result = engine.run(source.pk)

    assert (result.outcome, result.pages, result.stored) == ("caught_up", 6, 500)
    first, last = es.lookback(2)
    days = [first.isoformat(), last.isoformat()]
    # Every page once, in order: none past a day's third page.
    assert asked(pages_of_three) == [(d, p) for d in days for p in (1, 2, 3)]
    # Storing page 1 of a day, pages 2 and 3 are on their way; the next day's
    # page 1 is asked for once the day's last page is in.
    assert sent == [3, 3, 4, 6, 6, 6]
    assert sorted(es.stored_ids(source)) == sorted(
        pages_of_three.event_ids(first, last)
    )


def test_it_sends_nothing_ahead_past_the_runs_page_budget(
    settings, pages_of_three, collector, monkeypatch
):
    settings.KNOWBE4_RATE_LIMIT = False
    settings.COLLECTION_MAX_PAGES_PER_RUN = 2
    monkeypatch.setattr(daypages, "ThreadPoolExecutor", es.InlinePool)
    source = es.sandbox_source(
        settings, pages_of_three, collector, initial_lookback_days=2
    )

    result = engine.run(source.pk)

    assert (result.pages, result.stored, result.requests) == (2, 200, 2)
    first, _ = es.lookback(2)
    assert asked(pages_of_three) == [(first.isoformat(), 1), (first.isoformat(), 2)]
    source.refresh_from_db()
    assert (source.cursor_day, source.cursor_page) == (first, 3)


def test_it_keeps_to_the_rate_limit_with_two_requests_ahead(settings, clock, collector):
    """On the fetch thread for real, the limiter's slots in the database."""
    settings.KNOWBE4_RATE_LIMIT = True
    settings.REDIS_URL = ""
    with running_sandbox(days=2, events_per_day=250) as server:
        source = es.sandbox_source(settings, server, collector, initial_lookback_days=2)

        result = engine.run(source.pk)

        assert (result.outcome, result.stored) == ("caught_up", 500)
        assert [r.status for r in es.api_requests(server)] == [200] * 6
    usage = ApiKeyUsage.objects.get(key_hash=crypto.key_fingerprint(server.api_key))
    assert all(done for _at, _token, done in usage.recent)  # none left in flight


def test_it_counts_each_request_it_sends_while_polling_today(
    settings, pages_of_three, collector, monkeypatch
):
    """Today's poll asks for its next page ahead too; every request counted
    (the run's figure and the key's quota ledger) is one KnowBe4 received."""
    settings.KNOWBE4_RATE_LIMIT = False
    monkeypatch.setattr(daypages, "ThreadPoolExecutor", es.InlinePool)
    source = es.sandbox_source(
        settings,
        pages_of_three,
        collector,
        initial_lookback_days=1,
        collect_today=True,
        today_poll_minutes=15,
    )

    result = engine.run(source.pk)

    today = [k for k in asked(pages_of_three) if k[0] == es.TODAY.isoformat()]
    assert today and today[0] == (es.TODAY.isoformat(), 1)
    sent = len(es.api_requests(pages_of_three))
    assert result.requests == sent
    key = crypto.key_fingerprint(pages_of_three.api_key)
    assert ledger.window("events", key).used == sent

"""The events reader: KnowBe4's `/events` stream, day by day, page by page.

Closed days are read with `occurred_date=D` in order from the checkpoint
(`window`), each page stored with its checkpoint (`store`), the next page
fetched while this one is stored (`fetch`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta

from django.utils import timezone

from collectors.choices import SourceState
from collectors.engine import store, window
from collectors.engine.context import Finish, RunContext
from collectors.engine.fetch import Fetcher
from collectors.knowbe4.client import KnowBe4Client
from collectors.lifecycle import advance


class EventsReader:
    """Reads a source's closed days (and their re-scan) from `/events`."""

    name = "events"

    def read(self, ctx: RunContext, now: datetime) -> Finish:
        """Read and store page after page until caught up or out of budget."""
        source = ctx.source
        last = window.last_collectable_day(now)
        writer = store.MessageWriter(source)
        with KnowBe4Client(source.base_url.url, ctx.secret) as client:
            point = window.start_point(source, last)
            if point is None and source.state in (
                SourceState.STARTED,
                SourceState.INITIALIZED,
            ):
                self._authenticate(ctx, client, last)
            if point is not None:
                self._read_days(ctx, client, writer, point, last)
        return self._finish(ctx, last)

    def _authenticate(self, ctx: RunContext, client: KnowBe4Client, last: date) -> None:
        """Prove the key of a source that has nothing to read yet (caught up,
        then given a new key or Base URL, or restarted): one `/events` page of
        one item for the newest closed day. A wrong key thus shows red now,
        not when the next day closes."""
        ctx.limiter.acquire()
        ctx.result.requests += 1
        try:
            client.list_events(last, 1, per_page=1)
        finally:
            ctx.limiter.release()
        advance(
            ctx.source, SourceState.AUTHENTICATED, "First successful call to KnowBe4"
        )
        advance(
            ctx.source,
            SourceState.COLLECTING,
            "Caught up: the next day is collected once it closes",
        )

    def _read_days(
        self,
        ctx: RunContext,
        client: KnowBe4Client,
        writer: store.MessageWriter,
        point: tuple[date, int],
        last: date,
    ) -> None:
        """The page loop: the next page is fetched by a helper thread while
        this one is stored, so KnowBe4's latency and our writes overlap."""
        source = ctx.source
        day, page = point
        with ThreadPoolExecutor(1, thread_name_prefix="kb4-fetch") as pool:
            fetch = Fetcher(ctx, pool, client.list_events)
            try:
                while day is not None and day <= last:
                    if ctx.out_of_budget():
                        ctx.result.more = True
                        break
                    events_page = fetch.page(day, page)
                    advance(
                        source,
                        SourceState.AUTHENTICATED,
                        "First successful call to KnowBe4",
                    )
                    following = window.next_position(source, events_page, day, last)
                    if following[0] is not None and not ctx.out_of_budget(1):
                        fetch.ahead(following[0], following[1])
                    store.store_page(ctx, writer, events_page, (day, page), following)
                    day, page = following[0], following[1]
                    advance(source, SourceState.COLLECTING, "First page stored")
            finally:
                fetch.drain()

    def _finish(self, ctx: RunContext, last: date) -> Finish:
        """Due again now (budget) or when the next day closes."""
        source = ctx.source
        if ctx.result.more:
            return Finish(timezone.now())
        values = {}
        if source.last_complete_day is None and source.cursor_day is None:
            values["last_complete_day"] = last  # A look-back of 0 days.
        return Finish(window.collectable_at(last + timedelta(days=1)), values)

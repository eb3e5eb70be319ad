"""The events reader: KnowBe4's `/events` stream, day by day, page by page.

Closed days are read with `occurred_date=D` in order from the checkpoint
(`window`), each page stored with its checkpoint (`store`), the next pages
fetched while this one is stored (`fetch`). The re-scan window is read again
on a clock, and a source that opts in also polls the current UTC day: oldest
first, resuming at the last page it read (new events land at the end). The
closed-day pass still reads that day in full once it has settled, so
completeness never depends on the poll; ids make every re-read harmless.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta

from django.utils import timezone

from collectors import days, governor
from collectors.choices import SourceState
from collectors.engine import store, window
from collectors.engine.context import Finish, RunContext
from collectors.engine.fetch import Fetcher
from collectors.knowbe4.client import KnowBe4Client
from collectors.lifecycle import advance


class EventsReader:
    """Reads a source's closed days (and their re-scan), and today if asked."""

    name = "events"

    def read(self, ctx: RunContext, now: datetime) -> Finish:
        """Read and store page after page until caught up or out of budget."""
        source = ctx.source
        last = window.last_collectable_day(now)
        writer = store.MessageWriter(source)
        poll_every = self._poll_interval(ctx, now)
        today_due = window.today_due_at(source, poll_every)
        poll = today_due is not None and today_due <= now
        with (
            KnowBe4Client(source.base_url.url, ctx.secret) as client,
            ThreadPoolExecutor(1, thread_name_prefix="kb4-fetch") as pool,
        ):
            # The fetch thread also builds each page's rows (store.Prepared).
            fetch = Fetcher(ctx, pool, client.list_events, then=writer.prepare)
            try:
                point = window.start_point(source, last, now)
                if (
                    point is None
                    and not poll
                    and source.state
                    in (
                        SourceState.STARTED,
                        SourceState.INITIALIZED,
                    )
                ):
                    self._authenticate(ctx, client, last)
                if point is not None:
                    # A pass that starts now reads the re-scan window now.
                    fresh = {"last_rescan_at": now} if source.cursor_day is None else {}
                    with store.Batch(ctx):
                        self._read_days(ctx, fetch, writer, point, last, fresh)
                if poll and not ctx.result.more:
                    with store.Batch(ctx):
                        self._read_today(ctx, fetch, writer)
            finally:
                fetch.drain()
        return self._finish(ctx, last, poll_every)

    def _poll_interval(self, ctx: RunContext, now: datetime) -> timedelta | None:
        """Today's poll interval, widened by the governor when the budget is
        known and running low; None when no poll fits before the reset."""
        if not ctx.source.collect_today:
            return None
        if ctx.budget is None:
            return governor.poll_interval_setting(ctx.source)
        return governor.poll_interval(ctx.source, governor.plan(ctx.source, now), now)

    def _authenticate(self, ctx: RunContext, client: KnowBe4Client, last: date) -> None:
        """Prove the key of a source that has nothing to read yet (caught up,
        then given a new key or Base URL, or restarted): one `/events` page of
        one item for the newest closed day. A wrong key thus shows red now,
        not when the next day closes. The request is taken from the key's
        daily budget like any other: when that is spent it is not sent
        (BudgetSpent: a Warning, and the next attempt at the reset)."""
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
        fetch: Fetcher,
        writer: store.MessageWriter,
        point: tuple[date, int],
        last: date,
        progress: dict,
    ) -> None:
        """The closed-day loop: the next pages (`window.pages_ahead`, within the
        run's page budget) are fetched by a helper thread while this one is
        stored, so KnowBe4's latency and our writes overlap.
        `progress` is written with the first page (when the pass started)."""
        source = ctx.source
        day, page = point
        while day is not None and day <= last:
            if ctx.out_of_budget():
                ctx.result.more = True
                break
            prepared = fetch.page(day, page)
            advance(
                source, SourceState.AUTHENTICATED, "First successful call to KnowBe4"
            )
            following = window.next_position(source, prepared.page, day, last)
            keys = window.pages_ahead(prepared.page, day, following)
            fetch.ahead(*[k for n, k in enumerate(keys, 1) if not ctx.out_of_budget(n)])
            store.store_page(ctx, writer, prepared, (day, page), following, **progress)
            progress = {}
            day, page = following[0], following[1]
            advance(source, SourceState.COLLECTING, "First page stored")

    def _read_today(
        self,
        ctx: RunContext,
        fetch: Fetcher,
        writer: store.MessageWriter,
    ) -> None:
        """Today's poll: from the last page read (again: new events land at
        its end) to the newest. The closed-day checkpoint does not move.
        `today_read_at` is when the poll began, not the run (which may have
        read closed days for minutes first): the source page shows it, and the
        next poll is due one interval after it."""
        source = ctx.source
        read_at = timezone.now()
        today = days.utc_day(read_at)
        page = source.today_page if source.today_day == today else 1
        while True:
            if ctx.out_of_budget():
                ctx.result.more = True
                break
            prepared = fetch.page(today, page)
            events_page = prepared.page
            advance(
                source, SourceState.AUTHENTICATED, "First successful call to KnowBe4"
            )
            more = events_page.next_page is not None and events_page.events
            after = events_page.next_page if more else page
            if more and not ctx.out_of_budget(1):
                fetch.ahead((today, after))
            unchanged = (
                source.cursor_day,
                source.cursor_page,
                source.last_complete_day,
            )
            store.store_page(
                ctx,
                writer,
                prepared,
                (today, page),
                unchanged,
                today_day=today,
                today_page=after,
                today_read_at=read_at,
            )
            advance(source, SourceState.COLLECTING, "First page stored")
            if not more:
                break
            page = after

    def _finish(
        self, ctx: RunContext, last: date, poll_every: timedelta | None
    ) -> Finish:
        """Due again now (budget), else at the earliest of: the next day
        closing, the next re-scan on the clock, today's next poll."""
        source = ctx.source
        if ctx.result.more:
            return Finish(timezone.now())
        values = {}
        if source.last_complete_day is None and source.cursor_day is None:
            values["last_complete_day"] = last  # A look-back of 0 days.
        next_at = window.next_due(
            window.collectable_at(last + timedelta(days=1)),
            window.rescan_due_at(source),
            window.today_due_at(source, poll_every),
        )
        return Finish(next_at, values)

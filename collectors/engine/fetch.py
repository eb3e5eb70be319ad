"""The page fetcher: requests sent ahead on a helper thread, within the limits.

KnowBe4's latency and our writes overlap: while a page is stored, the next
one is already on its way (and its rows built), and within a day whose page
count is known the one after it too, so the helper thread never waits for
the run to ask, and the run finds more pages to commit at once. Only pages
certain to be read are asked for (`window.pages_ahead`). Before the run
waits (for an answer, the limiter or a Retry-After) it commits the pages it
has stored (`store.Batch`): no transaction is open while it waits. The
helper thread never touches the database; the limiter is acquired and
released in the run's thread (its bookkeeping is per thread and may use the
database). A short Retry-After on 429 Too Many Requests is waited out here
rather than ending the run.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from collectors.engine.context import BudgetSpent, RunContext
from collectors.knowbe4.client import TooManyRequests
from collectors.ratelimit import WaitLonger

logger = logging.getLogger(__name__)

sleep = time.sleep  # Replaced by tests that must not really wait.


@dataclass
class _Request:
    """One request sent: its page key, its answer to come, and when that
    answer arrived (set on the helper thread, read for the limiter)."""

    key: tuple
    future: Future | None = None
    finished_at: float | None = None


class Fetcher:
    """Sends page requests on a helper thread, up to two ahead.

    `request(key)` is the reader's HTTP call for one page key (a (day, page)
    for the events stream) and `then(answer)` what the reader does with the
    answer before the run's thread needs it (the events reader builds the
    rows). Both run on the helper thread, so they must not use the database.
    The helper thread sends one request at a time, in the order asked: a
    request sent ahead waits in its queue until the one before it is
    answered, so KnowBe4 never sees two at once, and it leaves no earlier
    than the limiter granted it (a later send only makes the schedule safer).
    """

    def __init__(
        self,
        ctx: RunContext,
        pool: ThreadPoolExecutor,
        request: Callable[..., Any],
        then: Callable[[Any], Any] = lambda answer: answer,
    ) -> None:
        self.ctx, self.pool, self.request, self.then = ctx, pool, request, then
        self.limiter = ctx.limiter
        # Sent ahead and not yet used, oldest first (the limiter's order).
        self.pending: deque[_Request] = deque()

    def _send(self, key: tuple) -> _Request:
        """Send one request: the limiter takes it from the key's daily budget
        first (BudgetSpent when it is used up: nothing is sent). Should the
        limiter make it wait, or keep its slots in the database (which a
        rolled-back batch would undo), the pages stored so far are committed
        first."""
        batch = self.ctx.batch
        if batch is None or not batch.open:
            self.limiter.acquire()
        elif self.limiter.uses_database:
            # Its slots are rows: they must not roll back with the pages.
            self._idle()
            self.limiter.acquire()
        else:
            try:
                self.limiter.acquire(longest=0, take=batch.take_request)
            except WaitLonger:
                self._idle()
                self.limiter.acquire()
        self.ctx.result.requests += 1
        sent = _Request(key)
        sent.future = self.pool.submit(self._timed, sent)
        return sent

    def _timed(self, sent: _Request) -> Any:
        """On the helper thread: the request, noting when its answer arrived
        (for the limiter), then the reader's work on it."""
        try:
            answer = self.request(*sent.key)
        finally:
            sent.finished_at = time.monotonic()
        return self.then(answer)

    def _idle(self) -> None:
        """The run is about to wait: commit the pages stored so far, so that
        no transaction stays open while KnowBe4 answers (`store.Batch`)."""
        if self.ctx.batch is not None:
            self.ctx.batch.commit()

    def _receive(self, sent: _Request) -> Any:
        """The answer, once the pages stored so far are committed. Should that
        commit fail (Abandon), the answer is still waited out and its limiter
        slot freed, then the failure raised."""
        try:
            if not sent.future.done():
                self._idle()
        except BaseException:
            self._settle(sent)
            raise
        try:
            return sent.future.result()
        finally:
            # The limiter counts the next second from the answer's arrival, not
            # from now (after the previous page was stored): safe and faster.
            self.limiter.release(finished_at=sent.finished_at)

    def _settle(self, sent: _Request) -> None:
        """Wait out a request whose answer will not be used; free its slot."""
        with contextlib.suppress(Exception):  # Its page is read again later.
            sent.future.result()
        self.limiter.release(finished_at=sent.finished_at)

    def ahead(self, *keys: tuple) -> None:
        """Have the pages of `keys` (in reading order: the next page, then
        the one after it) on their way. Requests already sent for them are
        kept; any other sent ahead is dropped. Stops at the daily budget (the
        page loop stops there)."""
        if [r.key for r in self.pending] != list(keys[: len(self.pending)]):
            self.drain()
        for key in keys[len(self.pending) :]:
            try:
                self.pending.append(self._send(key))
            except BudgetSpent:  # Not ahead of time: the page loop stops there.
                return

    def page(self, *key) -> Any:
        """The page: from the request sent ahead, or a new one."""
        if self.pending and self.pending[0].key == key:
            sent = self.pending.popleft()
        else:
            self.drain()
            sent = self._send(key)
        inline = settings.COLLECTION_INLINE_RETRY_AFTER
        for attempt in range(3):
            try:
                return self._receive(sent)
            except TooManyRequests as exc:
                wait = exc.retry_after
                if attempt == 2 or wait is None or wait > inline:
                    raise
                if time.monotonic() + wait >= self.ctx.deadline:
                    raise
                logger.debug("source %s: 429, waiting %.1fs", self.ctx.source_id, wait)
                self.drain()  # what was sent after it is answered alike
                self._idle()
                sleep(wait)
                sent = self._send(key)
        raise AssertionError("unreachable")  # pragma: no cover

    def drain(self) -> None:
        """Wait for the requests sent ahead that will not be used, oldest
        first (the limiter frees its slots in that order); drop them."""
        if not self.pending:
            return
        try:
            if not all(sent.future.done() for sent in self.pending):
                self._idle()  # An Abandon propagates, after the settling.
        finally:
            while self.pending:
                self._settle(self.pending.popleft())

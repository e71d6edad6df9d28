"""Work a request needs done but its client need not wait for: run once the response is sent.

A cold batch of persona contexts writes the entries it built to the cache; the answer does not depend on
that write, and under daphne it was a Redis round trip (plus pickling every entry) between the query and
the response. ``after_response(work)`` queues ``work`` while the project's ASGI handler
(``storyproject.handlers``) serves a request, and the handler runs the queue after it has handed the
response to the server. Anywhere else (Django's test client, a WebSocket consumer, a management command,
a task started during a request that outlives it) the work runs at once, as a plain call would.

Only for work whose timing does not matter to correctness: the stamped cache entries qualify, since an
entry counts only while its tag equals the current stamp, however late it is written
(``storyproject.stamped_cache``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

logger = logging.getLogger(__name__)


class AfterResponse:
    """The queue of one request; once drained, closed (later work runs at once)."""

    def __init__(self) -> None:
        self._work: list[Callable[[], object]] = []
        self._closed = False
        # The view appends from its worker thread; a task started by the request may append from the
        # event loop's thread after the handler drained the queue.
        self._lock = threading.Lock()

    def add(self, work: Callable[[], object]) -> bool:
        """Queue ``work``; False when the queue is already drained (the caller runs it)."""
        with self._lock:
            if self._closed:
                return False
            self._work.append(work)
            return True

    @property
    def pending(self) -> bool:
        with self._lock:
            return bool(self._work)

    def drain(self) -> None:
        """Close the queue and run what it holds, in order; a failure is logged, the rest still runs."""
        with self._lock:
            self._closed = True
            work, self._work = self._work, []
        for item in work:
            try:
                item()
            except Exception:
                logger.exception("work after the response failed")


_current: ContextVar[AfterResponse | None] = ContextVar("after_response", default=None)


def after_response(work: Callable[[], object]) -> None:
    """Run ``work`` after the current response is sent, or now when no handler will (see the module)."""
    queue = _current.get()
    if queue is None or not queue.add(work):
        work()


@contextmanager
def collected() -> Iterator[AfterResponse]:
    """A request's queue, current within the block (the ASGI handler; the view's thread sees it through
    the context ``sync_to_async`` copies). Draining it is the caller's job, inside the block."""
    queue = AfterResponse()
    token = _current.set(queue)
    try:
        yield queue
    finally:
        _current.reset(token)

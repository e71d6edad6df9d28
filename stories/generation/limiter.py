"""A semaphore whose limit moves while it is in use: parallel mode's answer to rate limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class AdaptiveLimiter:
    """A semaphore whose limit moves while it is in use (additive increase, multiplicative decrease).

    A 429 halves the limit (never below one). Each time as many calls as the current limit have
    succeeded since, counting only calls that started after the last 429, the limit grows by one, back
    up to the configured concurrency: a brief rate limit does not slow the rest of a long run.
    The slot is given back synchronously, so even a task that is being cancelled returns it.
    """

    def __init__(self, limit: int) -> None:
        self.ceiling = self.limit = max(limit, 1)
        self.active = 0
        self.max_active = 0
        self._epoch = 0  # one more after every 429
        self._successes = 0
        self._waiters: list[asyncio.Future[None]] = []

    def reduce(self) -> None:
        self.limit = max(self.limit // 2, 1)
        self._epoch += 1
        self._successes = 0

    def succeeded(self, epoch: int) -> None:
        """A call that held a slot taken in ``epoch`` (what ``slot()`` yielded) finished well."""
        if epoch != self._epoch or self.limit >= self.ceiling:
            return  # it started before the last 429: it says nothing about the lowered limit
        self._successes += 1
        if self._successes >= self.limit:
            self.limit += 1
            self._successes = 0
            self._wake()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[int]:
        while self.active >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        # No await between the check above and this line: the slot cannot be taken twice.
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            yield self._epoch
        finally:
            self.active -= 1
            self._wake()

    def _wake(self) -> None:
        # Every waiter re-checks the (possibly changed) limit; there are at most a few dozen.
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

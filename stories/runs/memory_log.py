"""The run event log in this process's memory: the embedded default, and Redis's local mirror.

Appending is a list append and a wake-up of the followers waiting on the run: no I/O, no copy. A run's
events are kept after its end for STORY_RUN_EVENTS_RETENTION_SECONDS (swept when a run opens), at most
STORY_RUN_EVENTS_MAX of them (the oldest dropped first).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from stories.runs.log import TERMINAL, LoggedEvent, retention_seconds

# With Redis, how long this process keeps its own copy of a finished run's events.
_MIRROR_KEEP_SECONDS = 120
# Ended runs are looked for at most this often: each look reads every run kept, which with Redis is the
# last two minutes' runs (4,800 at 40 a second), and it came at every run's start.
_SWEEP_EVERY_SECONDS = 1.0


@dataclass
class _Run:
    events: list[dict[str, Any]] = field(default_factory=list)
    # The seq of events[0] minus one: events dropped from the front past STORY_RUN_EVENTS_MAX.
    base: int = 0
    ended_at: float | None = None
    seen_at: float = field(default_factory=time.monotonic)
    cancel: bool = False
    waiters: list[asyncio.Future[bool]] = field(default_factory=list)
    # The followers reading the run now (a token each): a run they follow counts as followed
    # (followed_within) without each of them waking every second to say so. A set, not a count: a
    # follower on a blocking view's thread adds and discards its own, each one atomic call.
    followers: set[object] = field(default_factory=set)

    @property
    def last_seq(self) -> int:
        return self.base + len(self.events)

    def after(self, seq: int) -> list[dict[str, Any]]:
        return self.events[max(seq - self.base, 0) :]

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            _wake(waiter)


def _wake(waiter: asyncio.Future[bool]) -> None:
    if waiter.done():
        return
    loop = waiter.get_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is running:
        waiter.set_result(True)
    elif not loop.is_closed():
        # A follower on another thread's loop (a blocking view's): wake it there.
        loop.call_soon_threadsafe(_wake, waiter)


class MemoryRunEventLog:
    def __init__(self) -> None:
        self.runs: dict[int, _Run] = {}
        # Cancels asked for a run this log does not hold (yet): a run orphaned by a dead process, which
        # this process may resume, then cancelled at once (the cancel was answered 202 "cancelling").
        # By run id: when it was asked (monotonic), swept with the ended runs.
        self.cancels_pending: dict[int, float] = {}
        self.swept_at = float("-inf")

    async def open(self, run_id: int, *, last_seq: int = 0) -> None:
        self._sweep()
        kept = self.runs.get(run_id)
        if last_seq and kept is not None and kept.last_seq == last_seq:
            # Resumed here: the events kept so far stay replayable.
            kept.ended_at, kept.cancel = None, False
            return
        self.runs[run_id] = _Run(base=last_seq, cancel=self.cancels_pending.pop(run_id, None) is not None)
        if kept is not None:
            kept.wake()  # its followers go on with the run opened in its place

    async def holds_all(self, run_id: int) -> bool:
        return run_id in self.runs

    def kept_from(self, run_id: int) -> int:
        """The seq after which this log holds the run's events: 0 for a run it holds from its start; more
        for a run resumed here (its earlier events were a dead process's) or one past STORY_RUN_EVENTS_MAX."""
        run = self.runs.get(run_id)
        return 0 if run is None else run.base

    async def append(self, run_id: int, event: dict[str, Any]) -> int:
        return self.append_now(run_id, event)["seq"]

    async def flush(self) -> None:
        """Nothing to wait for: no other process reads this log."""

    def forget(self, run_id: int) -> None:
        run = self.runs.pop(run_id, None)
        if run is not None:
            run.wake()

    def append_now(self, run_id: int, event: dict[str, Any]) -> dict[str, Any]:
        """``append`` without awaiting: the event as kept, with its address."""
        run = self.runs.get(run_id)
        if run is None:
            run = self.runs[run_id] = _Run()
        stamped = LoggedEvent(event, run_id=run_id, seq=run.last_seq + 1)
        run.events.append(stamped)
        limit = settings.STORY_RUN_EVENTS_MAX
        if len(run.events) > limit:
            # Drop a tenth at once, so the list is not shifted on every event past the bound.
            dropped = len(run.events) - limit + limit // 10
            del run.events[:dropped]
            run.base += dropped
        if event["type"] in TERMINAL:
            run.ended_at = time.monotonic()
        run.wake()
        return stamped

    async def read(self, run_id: int, after: int) -> list[dict[str, Any]]:
        run = self.runs.get(run_id)
        return [] if run is None else run.after(after)

    def kept_after(self, run_id: int, after: int) -> tuple[list[dict[str, Any]], int] | None:
        """``read`` without awaiting, with the run's last seq; None for a run this log does not hold."""
        run = self.runs.get(run_id)
        return None if run is None else (run.after(after), run.last_seq)

    async def follow(self, run_id: int, after: int) -> AsyncIterator[dict[str, Any]]:
        # Counted as a follower while it reads, however it stops (an end, a cancel, a close): no timer
        # per wait to say it is still there (a timer set and cancelled for every event followed).
        following: _Run | None = None
        me = object()
        try:
            while (run := self.runs.get(run_id)) is not None:
                if run is not following:
                    if following is not None:
                        following.followers.discard(me)
                    following = run
                    run.followers.add(me)
                run.seen_at = time.monotonic()
                for event in run.after(after):
                    yield event
                    after = event["seq"]
                    if event["type"] in TERMINAL:
                        return
                if run.ended_at is not None:
                    if run.last_seq > after:
                        # Its end was appended while an event read before it was being handed on:
                        # read again. Stopping here lost the end (an SSE stream ended without it).
                        continue
                    return  # ended, and the terminal event was dropped by the bound
                # The run wakes the waiter: an append, its end, or its being forgotten.
                waiter = asyncio.get_running_loop().create_future()
                run.waiters.append(waiter)
                try:
                    await waiter
                finally:
                    if waiter in run.waiters:  # cancelled while waiting
                        run.waiters.remove(waiter)
        finally:
            if following is not None:
                following.followers.discard(me)
                following.seen_at = time.monotonic()

    async def exists(self, run_id: int) -> bool:
        return run_id in self.runs

    async def last_seq(self, run_id: int) -> int:
        run = self.runs.get(run_id)
        return 0 if run is None else run.last_seq

    async def cancel_request(self, run_id: int) -> None:
        run = self.runs.get(run_id)
        if run is not None:
            run.cancel = True
        else:
            self.cancels_pending[run_id] = time.monotonic()

    async def cancels_requested(self, run_ids: list[int]) -> set[int]:
        # A cancel asked before the run's log was opened here counts too (a dead process's run, before
        # its resume opens the log or finds nothing to resume).
        return {
            run_id
            for run_id in run_ids
            if ((run := self.runs.get(run_id)) is not None and run.cancel) or run_id in self.cancels_pending
        }

    async def touch(self, run_id: int) -> None:
        run = self.runs.get(run_id)
        if run is not None:
            run.seen_at = time.monotonic()

    async def followed_within(self, run_ids: list[int], seconds: float) -> set[int]:
        since = time.monotonic() - seconds
        return {
            run_id
            for run_id in run_ids
            if (run := self.runs.get(run_id)) is not None and (run.followers or run.seen_at > since)
        }

    async def ended(self, run_id: int) -> bool:
        run = self.runs.get(run_id)
        return run is not None and run.ended_at is not None

    def _sweep(self) -> None:
        now = time.monotonic()
        if now - self.swept_at < _SWEEP_EVERY_SECONDS:
            return
        self.swept_at = now
        keep = retention_seconds()
        if settings.REDIS_URL:
            # Only a mirror for this process's followers: Redis keeps the events for everybody.
            keep = min(keep, _MIRROR_KEEP_SECONDS)
        stale = [
            run_id
            for run_id, run in self.runs.items()
            if run.ended_at is not None and now - run.ended_at > keep
        ]
        for run_id in stale:
            del self.runs[run_id]
        for run_id in [run_id for run_id, asked in self.cancels_pending.items() if now - asked > keep]:
            del self.cancels_pending[run_id]


# This process's log (a process holds one, whatever the event loops its threads run).
LOG = MemoryRunEventLog()

"""Fewer text events: a run's text deltas merged into at most one event per ``STORY_STREAM_COALESCE_MS``.

A model streams text a few tokens at a time; passed on one by one, each chunk costs a WebSocket frame
(and an event-log entry, a JSON encoding, a trip through the ASGI stack). ``text_coalesced`` wraps the
events of a run (``pipeline.generation_run``) so that every interface gets fewer of them:

- a text event (``delta``, ``outline_delta``, ``scene_delta``) that comes when none was sent for the
  interval goes out at once: the first of a run is never delayed, and neither is one after a pause;
- one that comes sooner waits, with any others, until the interval since the last one sent is over,
  then goes out merged with them, one event per stream (a ``scene_delta`` per scene index), in order;
- any other event (``scene``, ``progress``, ``saved``, an error...) first sends the text waiting, so
  the order of text and structure is kept; so does the end of the run.

Text waits at most one interval (while the process paces its model reads, backends/read_pacing, the
longer of this interval and that pace). The upstream is read by one task of its own (``_Feed``), so a model
that stalls does not hold back text already received; a cancel reaches the upstream exactly as it would
have directly (and a cancel the upstream absorbs, as a save under way does, is absorbed here too). One
task for the run, not one per event: a task and a timer per event cost about what the merged frames
saved (bench/results/stream_cpu.md). While text waits for its interval to end, more text does not wake
the reader (only another event, or a full queue, does): it is taken from the queue when the interval
ends, so a model chunk costs the reader nothing but a queue append.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncGenerator
from typing import Any

from stories.generation.backends.read_pacing import paced_interval_seconds
from stories.generation.tasks import reader_stop, settled

Event = dict[str, Any]
TEXT_EVENTS = frozenset({"delta", "outline_delta", "scene_delta"})
# What follows the upstream's last event in the queue, however it ended.
_END: Event = {"type": "_end"}
_AHEAD = 16


class _Pending:
    """Text waiting to go out, one entry per stream (event type and scene index), in arrival order."""

    def __init__(self) -> None:
        self.streams: dict[tuple[str, Any], tuple[Event, list[str]]] = {}

    def add(self, event: Event) -> None:
        key = (event["type"], event.get("index"))
        entry = self.streams.get(key)
        if entry is None:
            self.streams[key] = (event, [event["text"]])
        else:
            entry[1].append(event["text"])

    def drain(self) -> list[Event]:
        events = [
            first if len(texts) == 1 else {**first, "text": "".join(texts)}
            for first, texts in self.streams.values()
        ]
        self.streams.clear()
        return events


async def text_coalesced(
    events: AsyncGenerator[Event, None], *, interval_ms: int
) -> AsyncGenerator[Event, None]:
    """``events`` with their text merged as the module docstring says; closing this closes ``events``."""
    if interval_ms <= 0:
        async for event in events:
            yield event
        return
    base = interval_ms / 1000
    feed = _Feed(events)
    pending = _Pending()
    last_sent = -base
    try:
        while True:
            # While the process reads its model streams in bursts, text goes out at that pace: a
            # shorter interval would only split each read's text in two frames.
            interval = max(base, paced_interval_seconds())
            if not feed.queue:
                # Nothing to read: wait for the upstream, or for the end of the interval if text waits
                # (then more text does not wake this task: it is taken when the interval is over).
                due = last_sent + interval - time.monotonic() if pending.streams else None
                if due is not None and (due <= 0 or not await feed.wait(due, quiet_text=True)):
                    feed.text_into(pending)
                    for merged in pending.drain():
                        yield merged
                    last_sent = time.monotonic()
                    continue
                if not feed.queue:
                    await feed.wait(None)
            event = feed.take()
            if event is _END:
                break
            if event["type"] in TEXT_EVENTS:
                if pending.streams or time.monotonic() - last_sent < interval:
                    pending.add(event)
                    continue
                last_sent = time.monotonic()
                yield event
                continue
            for merged in pending.drain():
                yield merged
            yield event
        for merged in pending.drain():
            yield merged
        feed.pump.result()  # the upstream's own error, after the text it sent before it
    finally:
        await feed.close()


class _Feed:
    """The upstream, read by a task of its own into a queue, so the reader can wait with a deadline.

    One task for the whole run (not one per event): the upstream's events are appended as they come;
    ``_END`` follows the last, however the upstream ended. The upstream runs at most ``_AHEAD`` events
    ahead of the reader, so a cancel still finds it where the reader is (a model streaming in bursts
    never waits for that; an unpaced one would otherwise run to the save before a cancel came).
    """

    def __init__(self, events: AsyncGenerator[Event, None]) -> None:
        self.events = events
        self.queue: collections.deque[Event] = collections.deque()
        # What the reader awaits while the queue is empty (None when it is not waiting).
        self.waiter: asyncio.Future[bool] | None = None
        self.room = asyncio.Event()
        # The reader waits for the end of an interval with text waiting: more text need not wake it.
        self.quiet_text = False
        self.pump = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        try:
            async for event in self.events:
                self.queue.append(event)
                if not self.quiet_text or event["type"] not in TEXT_EVENTS or len(self.queue) >= _AHEAD:
                    self._wake()
                if len(self.queue) >= _AHEAD:
                    self.room.clear()
                    await self.room.wait()
        finally:
            self.queue.append(_END)
            self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    def take(self) -> Event:
        if not self.room.is_set():
            self.room.set()
        return self.queue.popleft()

    def text_into(self, pending: _Pending) -> None:
        """Move the text events at the head of the queue into ``pending``."""
        queue = self.queue
        while queue and queue[0]["type"] in TEXT_EVENTS:
            pending.add(self.take())

    async def wait(self, timeout: float | None, *, quiet_text: bool = False) -> bool:
        """Whether an event came within ``timeout`` seconds (None: however long it takes); with
        ``quiet_text``, an event other than text (or a full queue): text is left in the queue.

        A cancel of this task is passed on to the upstream, as if it ran here, and its outcome
        awaited: an upstream that ends cancelled cancels this task; one that absorbs the cancel (as a
        save under way does) goes on, its remaining events read as usual, the cancel withdrawn.
        """
        if self.queue:
            return True
        loop = asyncio.get_running_loop()
        waiter = self.waiter = loop.create_future()
        # A timer that ends the wait (not asyncio.timeout, which cancels the task and raises at every
        # interval's end: a frame's worth of exception handling for every merged frame).
        timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
        self.quiet_text = quiet_text
        try:
            return await waiter
        except asyncio.CancelledError:
            if not self.pump.cancel():
                raise  # the upstream had ended already: the cancel is this task's alone
            await settled(self.pump)
            if self.pump.cancelled():
                raise
            task = asyncio.current_task()
            while task is not None and task.cancelling():
                task.uncancel()
        finally:
            self.quiet_text = False
            self.waiter = None
            if timer is not None:
                timer.cancel()
        return True

    async def close(self) -> None:
        """Stop the upstream where it is (its step cancelled and seen to its end), then close it."""
        await reader_stop(self.pump, self.events)


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)

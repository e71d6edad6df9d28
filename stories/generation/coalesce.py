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

Text waits at most one interval. The upstream keeps running while text waits: its next step runs as a
task, so a model that stalls does not hold back text already received; a cancel reaches that step
exactly as it would have reached the upstream directly (and a cancel the upstream absorbs, as a save
under way does, is absorbed here too).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from contextlib import suppress
from typing import Any, TypeVar

_T = TypeVar("_T")
Event = dict[str, Any]
TEXT_EVENTS = frozenset({"delta", "outline_delta", "scene_delta"})
# What _next gives at the end of the upstream (a StopAsyncIteration cannot cross a task's result).
_END: Event = {"type": "_end"}


async def seen_through(work: asyncio.Future[_T]) -> _T:
    """The result of work that no cancel can stop (a worker thread's, or a step being cancelled),
    waited for through every cancel.

    A cancel often comes twice (``cancel``, then the socket's disconnect); each is absorbed here, so
    what the work did (a run admitted, a version saved) is known and recorded as it is.
    """
    while True:
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            if work.cancelled():
                raise


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
    interval = interval_ms / 1000
    pending = _Pending()
    last_sent = -interval
    step: asyncio.Future[Event] | None = None
    try:
        while True:
            if step is None:
                step = asyncio.ensure_future(_next(events)) if pending.streams else None
            if step is not None:
                due = last_sent + interval - time.monotonic()
                if not await _within(step, due if pending.streams else None):
                    for merged in pending.drain():
                        yield merged
                    last_sent = time.monotonic()
                    continue
                event, step = step.result(), None
            else:
                event = await _next(events)
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
    finally:
        if step is not None:
            # Closed while the upstream's next step runs: that step is cancelled and seen to its end
            # (whatever it brings is dropped, an error retrieved), then the upstream is closed.
            step.cancel()
            await _settled(step)
            if not step.cancelled():
                step.exception()
        await events.aclose()


async def _next(events: AsyncGenerator[Event, None]) -> Event:
    try:
        return await events.__anext__()
    except StopAsyncIteration:
        return _END


async def _within(step: asyncio.Future[Event], timeout: float | None) -> bool:
    """Whether ``step`` finished within ``timeout`` seconds (None: however long it takes).

    A cancel of this task is passed on to the step, as if the upstream ran here, and its outcome
    awaited: a cancelled step cancels this task; one that ended otherwise (its cancel absorbed, as a
    save under way absorbs it) is this task's result too, the cancel withdrawn.
    """
    try:
        done, _ = await asyncio.wait({step}, timeout=max(timeout, 0) if timeout is not None else None)
    except asyncio.CancelledError:
        if not step.cancel():
            raise  # the step had ended already: the cancel is this task's alone
        await _settled(step)
        # Any ending but a cancelled step (an error too: step.result() raises it to the caller) means
        # the upstream absorbed the cancel.
        if step.cancelled():
            raise
        task = asyncio.current_task()
        while task is not None and task.cancelling():
            task.uncancel()
        return True
    return bool(done)


async def _settled(step: asyncio.Future[Event]) -> None:
    """Wait until ``step`` is done, through every cancel of this task (``cancelling()`` keeps count)."""
    while not step.done():
        with suppress(asyncio.CancelledError):
            await asyncio.wait({step})

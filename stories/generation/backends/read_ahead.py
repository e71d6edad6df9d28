"""A model's stream events read by a task of their own and handed on in batches: one trip up the
pipeline per read of the network, not one per event.

Every event the API streams went up a dozen async generators (back-end, call, writer, pipeline) and
through the scene scan one at a time. ``in_batches`` reads its source in a task of its own and gives,
at each step, every event that has arrived since the last: the events of one network read (a server
that flushes each event as it has it sends one chunked-encoding part per event, as the fake server
does, and the HTTP client yields a read's parts one by one) reach the reader together, and the
Anthropic back-end merges their text into one delta. A read that finds one event gives a batch of
one: what it costs then is a task wake-up.

The task reads at most ``AHEAD`` events ahead of the reader (then waits for it to take them): a source
faster than its reader is held back, as it was when the reader pulled each event itself, rather than
read into memory whole. Order and errors are kept: the source's events come out in order, and an
error it raises comes after the events it sent before it. Closing or cancelling the reader cancels the reading task and waits for
it (an HTTP read in flight is stopped there), then closes the source.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Generic, TypeVar

from stories.generation.tasks import reader_stop

_T = TypeVar("_T")
# More than one network read brings at a model's pace (8 events a read at 100 ms and 120 tokens/s), and
# little memory when the reader lags (a parsed event each: blocking views run several calls at once).
AHEAD = 64


async def in_batches(source: AsyncGenerator[_T, None]) -> AsyncGenerator[list[_T], None]:
    """``source``'s items, as lists of those that arrived while the reader was away (none empty)."""
    reading = _Reading(source)
    try:
        while True:
            if reading.items:
                batch, reading.items = reading.items, []
                reading.room.set()
                yield batch
            elif reading.task.done():
                reading.task.result()  # the source's error, after the items before it
                return
            else:
                reading.arrived.clear()
                await reading.arrived.wait()
    finally:
        await reader_stop(reading.task, source)


class _Reading(Generic[_T]):
    """The source, read to its end by a task: items appended, ``arrived`` set for each; past ``AHEAD``
    items not taken yet, the task waits for ``room``."""

    def __init__(self, source: AsyncGenerator[_T, None]) -> None:
        self.source = source
        self.items: list[_T] = []
        self.arrived = asyncio.Event()
        self.room = asyncio.Event()
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            async for item in self.source:
                self.items.append(item)
                self.arrived.set()  # wakes the reader once, however many items come before it runs
                if len(self.items) >= AHEAD:
                    self.room.clear()
                    await self.room.wait()
        finally:
            self.arrived.set()

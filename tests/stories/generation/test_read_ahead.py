"""The model's events read ahead and handed on in batches (stories.generation.backends.read_ahead)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing

import pytest

from stories.generation.backends.read_ahead import AHEAD, in_batches


async def _source(script: list[object], log: list[str]) -> AsyncGenerator[str, None]:
    """Items as scripted; a number is a pause in seconds, an exception is raised."""
    try:
        for step in script:
            if isinstance(step, float):
                await asyncio.sleep(step)
            elif isinstance(step, Exception):
                raise step
            else:
                yield str(step)
    finally:
        log.append("closed")


async def test_items_that_arrive_together_come_as_one_batch_in_order() -> None:
    log: list[str] = []
    batches = [b async for b in in_batches(_source(["a", 0.05, "b", "c", "d", 0.05, "e"], log))]
    assert batches == [["a"], ["b", "c", "d"], ["e"]]
    assert log == ["closed"]


async def test_an_error_comes_after_the_items_before_it() -> None:
    got: list[list[str]] = []
    with pytest.raises(RuntimeError, match="stream broke"):
        async for batch in in_batches(_source(["a", 0.01, "b", RuntimeError("stream broke")], [])):
            got.append(batch)
    assert got == [["a"], ["b"]]


async def test_closing_the_reader_stops_the_source_where_it_waits() -> None:
    log: list[str] = []
    async with aclosing(in_batches(_source(["a", 10.0, "never"], log))) as batches:
        assert await anext(batches) == ["a"]
    assert log == ["closed"]


async def test_a_cancel_of_the_reader_reaches_the_source() -> None:
    log: list[str] = []

    async def read() -> None:
        async for _ in in_batches(_source(["a", 10.0, "never"], log)):
            pass

    task = asyncio.ensure_future(read())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["closed"]


async def test_a_source_faster_than_its_reader_is_read_at_most_a_bound_ahead() -> None:
    produced: list[int] = []

    async def endless() -> AsyncGenerator[int, None]:
        for number in range(100_000):
            produced.append(number)
            yield number

    async with aclosing(in_batches(endless())) as batches:
        first = await anext(batches)
        await asyncio.sleep(0.05)  # the reader is away: the source must not run on to its end
        assert len(first) <= AHEAD
        assert len(produced) <= 2 * AHEAD + 1
        second = await anext(batches)
    assert first + second == list(range(len(first) + len(second)))

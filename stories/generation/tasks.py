"""A task that reads an async generator on another's behalf (generation.coalesce, backends.read_ahead)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import suppress
from typing import Any


async def reader_stop(task: asyncio.Future[Any], source: AsyncGenerator[Any, None]) -> None:
    """Stop ``task`` where it is (cancelled, and seen to its end through every cancel of the caller),
    then close ``source``, the generator it read; an error it ended with is retrieved (its owner raises
    it when it got that far)."""
    task.cancel()
    await settled(task)
    if not task.cancelled():
        task.exception()
    await source.aclose()


async def settled(step: asyncio.Future[Any]) -> None:
    """Wait until ``step`` is done, through every cancel of this task (``cancelling()`` keeps count)."""
    while not step.done():
        with suppress(asyncio.CancelledError):
            await asyncio.wait({step})

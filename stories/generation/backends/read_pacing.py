"""A model's response body read in bursts: fewer wake-ups per streamed token.

The API sends each stream event as soon as it has it, so a body read as it arrives costs a wake-up of
the event loop, a socket read and a trip through the HTTP stack (httpcore, h11, anyio) for every few
tokens: after the WebSocket frames (generation.coalesce), the larger part of daphne's CPU time per
token (bench/results/stream_cpu.md). ``PacedBody`` wraps the body (an ``httpx2.AsyncByteStream``,
what ``Response.stream`` holds): after a read that had to wait for the network, it pauses for the
interval before reading again. Meanwhile the kernel keeps what arrives (anyio pauses reading between
receives), and the next read takes all of it at once: one wake-up for the interval's events.

What waits: at most one interval (``STORY_STREAM_PACED_READ_MS``, off by default: a scene that ends
during a pause reaches the writer that much later). What does not: the first read, and a read right after a wait, so the first
text of a call goes on at once; and a read that finds data waiting (a burst is read through). At most
one pause per interval, so however the reads are timed, the body is read at least half the time, far
faster than any model writes. Timeouts are unchanged: the idle-read timeout applies to each read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx2

# A read that took this long waited for the network (one served from a buffer takes microseconds).
_WAITED_SECONDS = 0.002


class PacedBody(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, *, interval_ms: int) -> None:
        self._inner = inner
        self._interval = interval_ms / 1000

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = self._inner.__aiter__()
        paused_until = -self._interval
        try:
            while True:
                asked = time.monotonic()
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    return
                waited = time.monotonic() - asked >= _WAITED_SECONDS
                yield chunk
                if waited and time.monotonic() - paused_until >= self._interval:
                    await asyncio.sleep(self._interval)
                    paused_until = time.monotonic()
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()

    async def aclose(self) -> None:
        await self._inner.aclose()

"""A model's response body read in bursts when the process is busy: fewer network reads per token.

The API sends each stream event as soon as it has it, so a body read as it arrives costs, for every
few tokens, a wake-up of the event loop and a trip through the HTTP client's read (through httpx2:
anyio's receive with its cancel scope, the transport's pause and resume, h11; through aiohttp, the
transport daphne's loop uses, less than half that: bench/results/http_client.md). ``PacedBody`` wraps
the body (an ``httpx2.AsyncByteStream``, what ``Response.stream`` holds, whichever the transport): after
a read that went to the network, it pauses for the interval before reading again. Meanwhile what
arrives waits in aiohttp's buffer (or, through httpx2, in the kernel: anyio pauses reading between
receives), and the next read takes all of it at once; the back-end's read-ahead (read_ahead) then
hands those events on as one batch, their text as one delta.

A read "went to the network" when the event loop ran while it waited (a callback scheduled before it
ran before it returned); the events h11 already holds from an earlier read come without that and are
read through without a pause. A model faster than the pace is never slowed down: each read takes
everything buffered.

When: only while at least ``STORY_STREAM_PACED_READ_STREAMS`` model streams are open in this process
and the process is busy: its CPU time over the last two seconds (``time.process_time``: every thread,
so also the database calls that hold the GIL the event loop needs) is at least
``STORY_STREAM_PACED_READ_BUSY_PERCENT`` of a core, and then until it falls under ``_BUSY_OFF`` (55 %)
of that, about 52 % of a core. Paced reads cost up to a third less CPU, so a process at 52 % paced
would be at about 70 % unpaced, still under the mark: a higher off mark switches them off only for the
process to saturate and switch them on again. Since the model's stream is read through aiohttp, 200
paced streams keep a process at 68-80 % of a core, and the earlier off mark, 74 % of the threshold
(70 % of a core), did just that: reads paced 57-78 % of the time after the ramp, and the runs that
flipped were the slow ones (docs/performance.md, "Eighth step"). A process with CPU to spare reads each event as it
comes; a busy one trades latency for CPU. Measured (docs/performance.md, "Sixth step": 30 and 60
streams on one process): paced reads saved a sixth to a third of the CPU per token and cost about
150 ms at a call's end and at its first scene, which a process short of saturation does better to
spend. At 200 streams the process is at 92-100 % of a core while its event loop's thread is at
56-67 %: the GIL, which the database threads hold too, is what saturates, hence the whole process's
time.

The interval, ``STORY_STREAM_PACED_READ_MS``: 300 ms. Reads are paced only in a saturated process, where
what a writer waits for is mostly the event loop's queue; longer bursts cost less CPU and so shorten
it. At 200 streams on one process (docs/performance.md, "Seventh step", three runs each in turn),
300 ms against 100 ms: overhead p95 353-683 ms against 821-1186, first token lag p95 69-123 against
173-260, first scene lag about the same.

What waits while reads are paced: text and a finished scene, up to two intervals (one in a buffer,
one behind the first event of the read that took it). What does not: the first text of a call (its
read waited for the model: it goes on at once), and its end. Through aiohttp (daphne's loop), a pause
ends as soon as the whole body has arrived: ``message_stop`` is the stream's final event (Anthropic's
"Streaming Messages" docs, build-with-claude/streaming, "Event types"), the SDK's ``AsyncStream`` reads
the body to its end after it (anthropic 2.14 _streaming.py), and tests/fake_anthropic.py ends its body
right after it; so the call's last events are read at once, not up to an interval later
(``_body_reader``). Through httpx2
the end waits up to one interval, and once the back-end has its ``message_delta`` it stops the pauses
(``stop_pausing``). Timeouts are unchanged: the idle-read timeout applies to each read.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import aiohttp
import httpx2
from django.conf import settings

# The model streams this process has open through a PacedBody: on daphne's event loop, and on the
# loops of blocking views' threads (hence the lock; taken once per stream, not per read).
_open = 0
_open_lock = threading.Lock()


# How long the CPU gauge averages over, and the fraction of the threshold under which pacing stops.
_BUSY_WINDOW_SECONDS = 2.0
_BUSY_OFF = 0.55


class _CpuGauge:
    """This process's CPU time per second of wall time, over about the last ``_BUSY_WINDOW_SECONDS``;
    read when a paced read asks (so: while model streams are open), and whether reads are paced now."""

    def __init__(self) -> None:
        self.at = time.monotonic()
        self.cpu = time.process_time()
        self.busy = 0.0
        self.pacing = False

    def busy_enough(self, threshold: float) -> bool:
        now = time.monotonic()
        if now - self.at >= _BUSY_WINDOW_SECONDS:
            cpu = time.process_time()
            self.busy = (cpu - self.cpu) / (now - self.at)
            self.at, self.cpu = now, cpu
            self.pacing = self.busy >= threshold * (_BUSY_OFF if self.pacing else 1.0)
        return self.pacing


_gauge = _CpuGauge()
_gauge_lock = threading.Lock()


def pacing_now(*, from_streams: int, busy: float) -> bool:
    """Whether reads are paced now: ``from_streams`` model streams open or more, and the process at
    least ``busy`` of a core busy (0: whatever its load)."""
    if _open < from_streams:
        return False
    if not busy:
        return True
    with _gauge_lock:  # the loops of blocking views' threads read it too
        return _gauge.busy_enough(busy)


class PacedBody(httpx2.AsyncByteStream):
    def __init__(
        self, inner: httpx2.AsyncByteStream, *, interval_ms: int, from_streams: int, busy: float = 0.0
    ) -> None:
        self._inner = inner
        self._interval = interval_ms / 1000
        self._from_streams = from_streams
        self._busy = busy
        # The pause under way, which the body's end cuts short.
        self._pause: asyncio.Future[None] | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = self._inner.__aiter__()
        loop = asyncio.get_running_loop()
        reader = _body_reader(self._inner)
        if reader is not None:
            # Called at once if the body has arrived already, else when it has.
            reader.on_eof(self._body_complete)
        _opened(1)
        try:
            while True:
                ran = [False]
                mark = loop.call_soon(ran.__setitem__, 0, True)
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    return
                finally:
                    mark.cancel()
                yield chunk
                if ran[0] and self._interval and pacing_now(from_streams=self._from_streams, busy=self._busy):
                    await self._paused(loop)
        finally:
            _opened(-1)
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()

    async def _paused(self, loop: asyncio.AbstractEventLoop) -> None:
        # asyncio.sleep's own future and timer, kept where the body's end can set it.
        pause = self._pause = loop.create_future()
        timer = loop.call_later(self._interval, _pause_end, pause)
        try:
            await pause
        finally:
            timer.cancel()
            self._pause = None

    def _body_complete(self) -> None:
        # The whole body has arrived: nothing more to wait for.
        self.stop_pausing()
        if self._pause is not None:
            _pause_end(self._pause)

    def stop_pausing(self) -> None:
        """Read the rest as it comes (the call is ending: a pause would only hold its end back)."""
        self._interval = 0.0

    async def aclose(self) -> None:
        await self._inner.aclose()


def _body_reader(stream: httpx2.AsyncByteStream) -> aiohttp.StreamReader | None:
    """The aiohttp buffer a body read through the SDK's aiohttp transport arrives in, else None.

    httpx2's client hands the transport's stream on wrapped in its ``BoundAsyncStream`` (httpx2
    _client.py, attribute ``_stream``); the SDK's transport returns an ``AiohttpResponseStream`` over
    the aiohttp ``ClientResponse`` (anthropic 2.14 _vendor/httpx_aiohttp/transport.py, attribute
    ``_aiohttp_response``), whose ``content`` is aiohttp's ``StreamReader``, with its public
    ``on_eof``. Private attributes of both: if either changes, pauses simply run their whole interval
    (as through httpx2), and test_read_pacing.py, which checks that the reader is found, fails.
    """
    inner = getattr(stream, "_stream", stream)
    content = getattr(getattr(inner, "_aiohttp_response", None), "content", None)
    return content if isinstance(content, aiohttp.StreamReader) else None


def _pause_end(pause: asyncio.Future[None]) -> None:
    if not pause.done():
        pause.set_result(None)


def _opened(change: int) -> None:
    global _open
    with _open_lock:
        _open += change


def paced_interval_seconds() -> float:
    """The pause between reads while this process paces its model streams now, else 0."""
    interval_ms = settings.STORY_STREAM_PACED_READ_MS
    paced = interval_ms and pacing_now(
        from_streams=settings.STORY_STREAM_PACED_READ_STREAMS,
        busy=settings.STORY_STREAM_PACED_READ_BUSY_PERCENT / 100,
    )
    return interval_ms / 1000 if paced else 0.0


def paced_streams() -> int:
    """How many model streams are open through a PacedBody in this process now."""
    return _open

"""The model's body read in bursts (stories.generation.backends.read_pacing): what is read, and when."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import anthropic
import httpx2
import pytest

from stories.generation.backends import read_pacing
from stories.generation.backends.read_pacing import PacedBody, paced_streams


class _Network(httpx2.AsyncByteStream):
    """Chunks as a socket would give them: each once its time (seconds from the first read) has come,
    at once if that time has passed (the kernel kept it)."""

    def __init__(self, script: list[tuple[float, bytes]]) -> None:
        self.script = script
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        started = time.monotonic()
        for at, chunk in self.script:
            wait = started + at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            yield chunk

    async def aclose(self) -> None:
        self.closed = True


async def _read(body: PacedBody) -> list[tuple[float, bytes]]:
    started = time.monotonic()
    return [(time.monotonic() - started, chunk) async for chunk in body]


async def test_a_chunk_that_waited_goes_on_at_once_and_the_next_read_comes_an_interval_later() -> None:
    network = _Network([(0.05, b"first"), (0.06, b"second"), (0.07, b"third")])
    out = await _read(PacedBody(network, interval_ms=40, from_streams=1))
    assert [chunk for _, chunk in out] == [b"first", b"second", b"third"]
    (first, _), (second, _), (third, _) = out
    assert first < 0.08
    assert second - first >= 0.04  # the pause, while the network buffers "second" and "third"
    assert third - second < 0.01  # data already there is read through without another pause


async def test_a_steady_stream_is_not_slowed_down() -> None:
    # 100 chunks 5 ms apart: every read waits, but at most one pause per 40 ms.
    network = _Network([(0.005 * (index + 1), b"x") for index in range(100)])
    out = await _read(PacedBody(network, interval_ms=40, from_streams=1))
    assert len(out) == 100
    # The last chunk comes at 0.5 s: it is read at most one interval later (not after 100 pauses).
    assert out[-1][0] < 0.5 + 0.04 + 0.1


async def test_closing_the_body_closes_the_network_stream() -> None:
    network = _Network([(0.0, b"a")])
    body = PacedBody(network, interval_ms=40, from_streams=1)
    await body.aclose()
    assert network.closed


async def test_a_process_with_fewer_streams_than_the_threshold_reads_each_chunk_as_it_comes() -> None:
    network = _Network([(0.05, b"first"), (0.06, b"second"), (0.07, b"third")])
    out = await _read(PacedBody(network, interval_ms=40, from_streams=2))
    (first, _), (second, _), (third, _) = out
    assert second - first < 0.03 and third - second < 0.03  # no pause: one stream is open, not two


async def test_a_second_open_stream_turns_the_pauses_on_and_each_stream_counts_until_it_ends() -> None:
    slow = _Network([(0.05, b"a"), (0.06, b"b")])
    other = _Network([(0.3, b"z")])
    fast_then_paced = PacedBody(slow, interval_ms=40, from_streams=2)
    waiting = asyncio.ensure_future(_read(PacedBody(other, interval_ms=40, from_streams=2)))
    await asyncio.sleep(0.01)
    assert paced_streams() == 1
    out = await _read(fast_then_paced)
    assert out[1][0] - out[0][0] >= 0.04  # two streams open: the pause after "a"
    await waiting
    assert paced_streams() == 0


async def test_once_told_to_stop_pausing_the_rest_is_read_as_it_comes() -> None:
    network = _Network([(0.05, b"message_delta"), (0.06, b"message_stop")])
    body = PacedBody(network, interval_ms=200, from_streams=1)
    started = time.monotonic()
    out = []
    async for chunk in body:
        out.append((time.monotonic() - started, chunk))
        body.stop_pausing()
    assert [chunk for _, chunk in out] == [b"message_delta", b"message_stop"]
    assert out[1][0] < 0.15  # not held back by the 200 ms pause


class _Clock:
    """time.monotonic and time.process_time as a test sets them (seconds)."""

    def __init__(self) -> None:
        self.wall = 1000.0
        self.cpu = 10.0

    def monotonic(self) -> float:
        return self.wall

    def process_time(self) -> float:
        return self.cpu

    def spend(self, *, seconds: float, busy: float) -> None:
        self.wall += seconds
        self.cpu += seconds * busy


def test_reads_are_paced_from_the_cpu_threshold_and_until_well_under_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = _Clock()
    monkeypatch.setattr(read_pacing, "time", clock)
    monkeypatch.setattr(read_pacing, "_gauge", read_pacing._CpuGauge())
    monkeypatch.setattr(read_pacing, "_open", 10)
    paced: list[bool] = []
    # Two seconds at each load, in percent of a core, against a threshold of 95 %.
    for busy in (50, 90, 97, 75, 60, 53, 51, 90, 100):
        clock.spend(seconds=2.0, busy=busy / 100)
        paced.append(read_pacing.pacing_now(from_streams=8, busy=0.95))
    # Off below 95 %; once on, on until under 52.25 % (55 % of the threshold), then off until 95 % again.
    assert paced == [False, False, True, True, True, True, False, False, True]
    # Not before the window has passed: the last window's figure holds.
    clock.spend(seconds=1.0, busy=0.0)
    assert read_pacing.pacing_now(from_streams=8, busy=0.95)
    # Fewer open streams than the threshold: never, whatever the load; 0 %: from the stream count alone.
    assert not read_pacing.pacing_now(from_streams=11, busy=0.95)
    clock.spend(seconds=2.0, busy=0.0)
    assert read_pacing.pacing_now(from_streams=8, busy=0.0)
    assert not read_pacing.pacing_now(from_streams=8, busy=0.95)


class _ChunkedServer:
    """A local HTTP server whose one response is a chunked body: its first part at once, the rest (and
    the body's end) ``rest_after`` seconds later."""

    def __init__(self, *, rest_after: float) -> None:
        self.rest_after = rest_after
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        writer.write(b"5\r\nfirst\r\n")
        await writer.drain()
        await asyncio.sleep(self.rest_after)
        writer.write(b"6\r\nsecond\r\n5\r\nthird\r\n0\r\n\r\n")
        await writer.drain()
        writer.close()


async def test_through_aiohttp_a_pause_ends_as_soon_as_the_whole_body_has_arrived() -> None:
    # The transport daphne's loop reads the model through (the SDK's DefaultAioHttpClient). A pause of
    # 30 s after the first read: the rest and the body's end come 0.2 s in, and are read then, not
    # 30 s later (a call's last events, message_delta and message_stop, end its body).
    client = anthropic.DefaultAioHttpClient()
    try:
        async with _ChunkedServer(rest_after=0.2) as url, client.stream("GET", url) as response:
            assert isinstance(response.stream, httpx2.AsyncByteStream)
            assert read_pacing._body_reader(response.stream) is not None  # found under this SDK
            body = PacedBody(response.stream, interval_ms=30_000, from_streams=1)
            out = await asyncio.wait_for(_read(body), timeout=10)
    finally:
        await client.aclose()
    assert b"".join(chunk for _, chunk in out) == b"firstsecondthird"
    assert out[0][0] < 0.15 and out[-1][0] < 5  # not held back by the 30 s pause


async def test_through_httpx2_the_body_reader_is_not_found_and_pauses_run_their_interval() -> None:
    client = httpx2.AsyncClient()
    try:
        async with _ChunkedServer(rest_after=0.05) as url, client.stream("GET", url) as response:
            assert isinstance(response.stream, httpx2.AsyncByteStream)
            assert read_pacing._body_reader(response.stream) is None
            out = await _read(PacedBody(response.stream, interval_ms=300, from_streams=1))
    finally:
        await client.aclose()
    assert b"".join(chunk for _, chunk in out) == b"firstsecondthird"
    assert out[-1][0] >= 0.3  # the rest waited for the pause's end

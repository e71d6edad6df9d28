"""A run's Redis stream gets every event its process holds, after Redis was down or lost it, in order.

Followers in other processes read a run only from its stream (``stories.runs.redis_log``): an event the
stream lacks is one they never get.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as redis

from stories.runs import redis_writer
from stories.runs.memory_log import MemoryRunEventLog
from stories.runs.redis_conn import run_key
from stories.runs.redis_log import RedisRunEventLog
from tests.stories.runs.test_log import REDIS_URL


class RedisCut:
    """A TCP relay in front of the real Redis that can be cut: cut, it drops every connection through it
    and every new one at once, as a Redis that went down does for its clients."""

    def __init__(self) -> None:
        target = urlsplit(REDIS_URL)
        self.target = (target.hostname or "127.0.0.1", target.port or 6379)
        self.cut = False
        self.open: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}{urlsplit(REDIS_URL).path or '/0'}"

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.open |= {writer, up_writer}

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    def down(self) -> None:
        self.cut = True
        for writer in self.open:
            writer.close()
        self.open.clear()

    def up(self) -> None:
        self.cut = False

    async def stop(self) -> None:
        self.down()
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def relay(settings: Any) -> AsyncIterator[RedisCut]:
    cut = RedisCut()
    settings.REDIS_URL = await cut.start()
    settings.CACHES = {
        **settings.CACHES,
        "default": {**settings.CACHES["default"], "KEY_PREFIX": uuid.uuid4().hex},
    }
    yield cut
    await cut.stop()


async def _stream(run_id: int) -> list[tuple[int, str]]:
    """The run's stream as another process reads it (straight from Redis): (seq, type) of each event."""
    import json

    client = redis.Redis.from_url(REDIS_URL)
    try:
        entries: Any = await client.xrange(run_key(run_id, "events"))
    finally:
        await client.aclose()
    return [(event["seq"], event["type"]) for event in (json.loads(fields[b"e"]) for _, fields in entries)]


async def test_the_events_of_an_outage_reach_the_stream_in_order_once_redis_answers_again(
    relay: RedisCut,
) -> None:
    log = RedisRunEventLog(local=MemoryRunEventLog())
    await log.open(61)
    await log.append(61, {"type": "accepted"})
    await log.append(61, {"type": "delta", "text": "INT."})
    await log.flush()
    assert await _stream(61) == [(1, "accepted"), (2, "delta")]

    relay.down()
    await log.append(61, {"type": "delta", "text": " LIGHTHOUSE"})
    await log.append(61, {"type": "scene", "index": 0})
    await log.flush()  # tried, and failed: Redis is down
    assert await _stream(61) == [(1, "accepted"), (2, "delta")]

    relay.up()
    await log.append(61, {"type": "delta", "text": "EXT."})
    await log.append(61, {"type": "done"})  # returns once the stream holds it
    # Before, seqs 3 and 4 were never written: a follower in another process went from 2 to 5.
    assert await _stream(61) == [
        (1, "accepted"),
        (2, "delta"),
        (3, "delta"),
        (4, "scene"),
        (5, "delta"),
        (6, "done"),
    ]


async def test_a_run_whose_stream_redis_lost_is_written_again_from_its_start(relay: RedisCut) -> None:
    log = RedisRunEventLog(local=MemoryRunEventLog())
    await log.open(62)
    for event in ({"type": "accepted"}, {"type": "delta", "text": "INT."}, {"type": "scene", "index": 0}):
        await log.append(62, event)
    await log.flush()
    # Redis restarted empty (its keys of this test: FLUSHDB would take other tests' keys too).
    client = redis.Redis.from_url(REDIS_URL)
    await client.delete(run_key(62, "events"))
    await client.aclose()

    await log.append(62, {"type": "delta", "text": "EXT."})
    await log.append(62, {"type": "done"})
    # Before, the stream began at seq 4: an attach from 0 in another process started mid-run, with no
    # `accepted` and nothing saying so.
    assert await _stream(62) == [(1, "accepted"), (2, "delta"), (3, "scene"), (4, "delta"), (5, "done")]


async def test_while_writes_fail_redis_is_asked_once_a_second_and_nothing_is_rebuilt_until_it_answers(
    relay: RedisCut, monkeypatch: pytest.MonkeyPatch
) -> None:
    sends: list[int] = []
    asks: list[bool] = []
    send, answers = redis_writer._Writer._send, redis_writer._Writer._answers

    async def send_counted(self: Any, batch: Any) -> Any:
        sends.append(len(batch))
        return await send(self, batch)

    async def asked(self: Any) -> bool:
        asks.append(await answers(self))
        return asks[-1]

    monkeypatch.setattr(redis_writer._Writer, "_send", send_counted)
    monkeypatch.setattr(redis_writer._Writer, "_answers", asked)
    log = RedisRunEventLog(local=MemoryRunEventLog())
    await log.open(63)
    relay.down()
    for n in range(50):
        await log.append(63, {"type": "delta", "text": str(n)})
    await asyncio.sleep(2.5)
    # One write at the first interval, then a PING a second (not a write of everything lacking every
    # 0.1 s: 25 of them, each rebuilding every event since the outage began).
    assert sends == [50], sends
    assert 1 <= len(asks) <= 3 and not any(asks), asks
    relay.up()
    await log.append(63, {"type": "done"})
    assert await _stream(63) == [*((n, "delta") for n in range(1, 51)), (51, "done")]

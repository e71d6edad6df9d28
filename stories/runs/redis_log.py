"""The run event log in Redis Streams, so that every process sees every run (with REDIS_URL).

One stream per run, ``<prefix>:run:<id>:events``, whose entry ids are ``0-<seq>``: an XREAD from
``0-<after>`` is exactly "the events after ``after``", first the kept ones, then, blocking, the live
ones. Every write trims the stream to STORY_RUN_EVENTS_MAX and sets its expiry (the retention after the
terminal event; while the run goes on, the retention plus STORY_STREAMING_STALE_SECONDS, so the log of
a run whose process died does not stay forever). A cancel is a key, ``<prefix>:run:<id>:cancel``, which
the runner's process polls (``stories.runs.runner``); a follower refreshes ``<prefix>:run:<id>:seen``.

The process that runs a run also keeps its events in memory (``stories.runs.memory_log``): its own
followers read them there, with no round trip, and they keep working while Redis is down (a failed
write is logged and the run goes on; other processes then miss those events).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from django.conf import settings
from redis.exceptions import RedisError

from stories.runs.log import TERMINAL, retention_seconds
from stories.runs.memory_log import MemoryRunEventLog

logger = logging.getLogger(__name__)

# How long one XREAD waits for a live event before the follower checks the stream still exists.
_BLOCK_MS = 1000
_READ_COUNT = 1000
# At most this many events go in one pipelined write.
_WRITE_BATCH = 500
# Connections per process (followers of another process's run hold one through each blocking XREAD),
# and how long a command waits for one when all are busy.
_MAX_CONNECTIONS = 500
_POOL_WAIT_SECONDS = 10
# A follower refreshes its "seen" key at most this often.
_TOUCH_SECONDS = 1.0

# redis.asyncio clients belong to the event loop that made them: one per loop (daphne has one).
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.Redis] = weakref.WeakKeyDictionary()


def _client() -> redis.Redis:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        # A blocking pool: past its size a command waits for a free connection instead of failing.
        # redis-py's default pool raises MaxConnectionsError past 100 connections, which 200 runs
        # polling for a cancel on a busy loop reached (bench.flow, 200 concurrent): the polls failed,
        # and so would a batch of events written meanwhile (other processes would never see it).
        pool = redis.BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            max_connections=_MAX_CONNECTIONS,
            timeout=_POOL_WAIT_SECONDS,
            socket_connect_timeout=2,
            socket_timeout=_BLOCK_MS / 1000 + 5,
        )
        client = redis.Redis(connection_pool=pool)
        _clients[loop] = client
    return client


def redis_client() -> redis.Redis:
    """This event loop's client of the runs' Redis (REDIS_URL), shared with the run event logs."""
    return _client()


def key_prefix() -> str:
    return str(settings.CACHES["default"].get("KEY_PREFIX") or "story")


def run_key(run_id: int, part: str) -> str:
    return f"{key_prefix()}:run:{run_id}:{part}"


def _decode(entries: Any) -> list[dict[str, Any]]:
    # redis-py's reply types are unions over RESP versions; these are RESP2's (id, {field: value}).
    return [json.loads(fields[b"e"]) for _, fields in entries]


@dataclass
class _Pending:
    """An event waiting to be written to its stream."""

    run_id: int
    seq: int
    data: str
    terminal: bool


class RedisRunEventLog:
    """Writes go through one writer task per log: the runner never waits for Redis on an event (a
    round trip each would hold the run back when the model streams fast); the writer sends everything
    pending in one pipelined round trip, in order, and the terminal event's append waits for it, so
    the stream is complete before the run is over. A cancelled runner does not cut a write short."""

    def __init__(self, *, local: MemoryRunEventLog) -> None:
        self.local = local
        self.pending: list[_Pending] = []
        self.writer: asyncio.Task[None] | None = None

    async def open(self, run_id: int, *, last_seq: int = 0) -> None:
        await self.local.open(run_id, last_seq=last_seq)
        if last_seq == 0:
            # A fresh run: whatever the stream holds under its id is stale (a database reset).
            await _client().delete(run_key(run_id, "events"), run_key(run_id, "cancel"))

    async def append(self, run_id: int, event: dict[str, Any]) -> int:
        stamped = self.local.append_now(run_id, event)
        seq: int = stamped["seq"]
        terminal = event["type"] in TERMINAL
        self.pending.append(_Pending(run_id, seq, json.dumps(stamped, ensure_ascii=False), terminal))
        if self.writer is None or self.writer.done():
            self.writer = asyncio.create_task(self._write())
        if terminal or len(self.pending) >= _WRITE_BATCH:
            # The end waits for the stream to be complete; a full batch holds the runner back until it
            # is written, so what waits in memory stays bounded. Shielded: a cancel of the runner
            # meanwhile does not cut the write short.
            await asyncio.shield(self.writer)
        return seq

    async def flush(self) -> None:
        if self.writer is not None:
            await asyncio.shield(self.writer)

    def forget(self, run_id: int) -> None:
        self.local.forget(run_id)

    async def _write(self) -> None:
        while self.pending:
            batch, self.pending = self.pending[:_WRITE_BATCH], self.pending[_WRITE_BATCH:]
            pipe = _client().pipeline(transaction=False)
            for item in batch:
                pipe.xadd(run_key(item.run_id, "events"), {"e": item.data}, id=f"0-{item.seq}")
            for run_id, terminal in {(item.run_id, item.terminal) for item in batch}:
                key = run_key(run_id, "events")
                pipe.xtrim(key, maxlen=settings.STORY_RUN_EVENTS_MAX, approximate=True)
                stale = 0 if terminal else settings.STORY_STREAMING_STALE_SECONDS
                pipe.expire(key, retention_seconds() + stale)
            try:
                await pipe.execute()
            except RedisError:
                logger.warning("%s run events not written to Redis", len(batch), exc_info=True)

    async def read(self, run_id: int, after: int) -> list[dict[str, Any]]:
        if await self.local.exists(run_id):
            return await self.local.read(run_id, after)
        entries: Any = await _client().xrange(run_key(run_id, "events"), min=f"0-{after + 1}")
        return _decode(entries)

    async def follow(self, run_id: int, after: int) -> AsyncIterator[dict[str, Any]]:
        if await self.local.exists(run_id):
            async for event in self.local.follow(run_id, after):
                yield event
            return
        async for event in self._follow_stream(run_id, after):
            yield event

    async def _follow_stream(self, run_id: int, after: int) -> AsyncIterator[dict[str, Any]]:
        client, key = _client(), run_key(run_id, "events")
        touched = 0.0
        while True:
            if time.monotonic() - touched > _TOUCH_SECONDS:
                await self.touch(run_id)
                touched = time.monotonic()
            reply: Any = await client.xread({key: f"0-{after}"}, count=_READ_COUNT, block=_BLOCK_MS)
            if not reply:
                if not await self._goes_on(key):
                    return  # never written, expired, or ended at or before ``after``
                continue
            for event in _decode(reply[0][1]):
                yield event
                after = event["seq"]
                if event["type"] in TERMINAL:
                    return

    async def _goes_on(self, key: str) -> bool:
        """Whether more may come: the stream exists and its last event is not a terminal one."""
        last: Any = await _client().xrevrange(key, count=1)
        return bool(last) and _decode(last)[0]["type"] not in TERMINAL

    async def exists(self, run_id: int) -> bool:
        return await self.local.exists(run_id) or bool(await _client().exists(run_key(run_id, "events")))

    async def ended(self, run_id: int) -> bool:
        if await self.local.exists(run_id):
            return await self.local.ended(run_id)
        last: Any = await _client().xrevrange(run_key(run_id, "events"), count=1)
        return bool(last) and _decode(last)[0]["type"] in TERMINAL

    async def last_seq(self, run_id: int) -> int:
        if await self.local.exists(run_id):
            return await self.local.last_seq(run_id)
        entries: Any = await _client().xrevrange(run_key(run_id, "events"), count=1)
        return int(entries[0][0].split(b"-")[1]) if entries else 0

    async def cancel_request(self, run_id: int) -> None:
        await self.local.cancel_request(run_id)
        await _client().set(run_key(run_id, "cancel"), b"1", ex=retention_seconds())

    async def cancel_requested(self, run_id: int) -> bool:
        if await self.local.cancel_requested(run_id):
            return True
        return bool(await _client().exists(run_key(run_id, "cancel")))

    async def touch(self, run_id: int) -> None:
        await self.local.touch(run_id)
        timeout = settings.STORY_RUN_DETACHED_TIMEOUT_SECONDS
        if timeout:
            await _client().set(run_key(run_id, "seen"), b"1", ex=timeout)

    async def followed_within(self, run_id: int, seconds: float) -> bool:
        if await self.local.followed_within(run_id, seconds):
            return True
        return bool(await _client().exists(run_key(run_id, "seen")))

"""Writing runs' events to their Redis Streams: one writer per event loop, for all its runs, in batches.

The runner never waits for Redis on an event: ``event_queue`` hands the event to its loop's writer,
which sends what has gathered every WRITE_INTERVAL_SECONDS in one pipelined round trip, in order.
Measured before (bench.flow, 2026-11-26): a round trip per event, 0.27-0.32 ms of CPU each
(XADD, XTRIM, EXPIRE), added about 60 ms of CPU to a short generation at one stream, and at 200
concurrent runs each run's writer made its own round trips. Now one round trip carries every run's
events of the interval, the trim rides on the XADD (``MAXLEN ~``), and a stream's expiry is set on its
first write, every EXPIRY_REFRESH_SECONDS and at its end. Another process's follower therefore sees
an event up to WRITE_INTERVAL_SECONDS later than this process's followers (who read it in memory at
once). The terminal event is not held: its append returns once the stream is complete, so the run
is over only when every process can read all of it. A cancelled runner does not cut a write short.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass, field

import redis
from django.conf import settings

from stories.runs.log import retention_seconds
from stories.runs.redis_conn import redis_client, run_key
from storyproject.logs import RepeatedFailure

logger = logging.getLogger(__name__)
# Per process: an outage is said once, then once a minute (storyproject.logs.RepeatedFailure).
_WRITES = RepeatedFailure(logger, "writing run events to Redis")

WRITE_INTERVAL_SECONDS = 0.1
# At most this many events go in one pipelined write; a runner that finds this many waiting waits for
# them to be written, so what waits in memory stays bounded.
WRITE_BATCH = 500
EXPIRY_REFRESH_SECONDS = 60.0


@dataclass
class _Pending:
    """An event waiting to be written to its stream; ``written`` is set for an appender that waits."""

    run_id: int
    seq: int
    data: str
    terminal: bool
    written: asyncio.Future[None] | None = None


@dataclass
class _Writer:
    pending: list[_Pending] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    # Runs opened fresh here: whatever their stream and cancel key hold is stale (a database reset) and
    # is deleted in the round trip of their first events, before them.
    fresh: set[int] = field(default_factory=set)
    # When each open run's stream expiry was last set (time.monotonic()).
    expiry_set: dict[int, float] = field(default_factory=dict)
    wake: asyncio.Future[None] | None = None
    urgent: bool = False
    # Waiting for everything queued so far to be written (writes_flush).
    flushes: list[asyncio.Future[None]] = field(default_factory=list)

    async def run(self) -> None:
        batch: list[_Pending] = []
        try:
            while self.pending:
                await self._gather()
                batch, self.pending = self.pending[:WRITE_BATCH], self.pending[WRITE_BATCH:]
                try:
                    await self._send(batch)
                except Exception:
                    # Redis down or slow: the run goes on (its own process's followers read it in
                    # memory); other processes miss these events.
                    _WRITES.failed(f"{len(batch)} events not written")
                else:
                    _WRITES.succeeded()
                _settle_all(batch)
                batch = []
                if not self.pending:
                    self._flushed()
        finally:
            # Cancelled (the event loop is closing: asyncio.run cancels every task): nobody may wait
            # for a write that will not come (a cancelled run's terminal event waited for ever).
            _settle_all(batch)
            _settle_all(self.pending)
            self._flushed()

    def _flushed(self) -> None:
        flushes, self.flushes = self.flushes, []
        for future in flushes:
            _settle(future)

    async def _gather(self) -> None:
        """Let events gather for WRITE_INTERVAL_SECONDS, unless one is urgent."""
        if not self.urgent:
            loop = asyncio.get_running_loop()
            self.wake = loop.create_future()
            timer = loop.call_later(WRITE_INTERVAL_SECONDS, _settle, self.wake)
            try:
                await self.wake
            finally:
                timer.cancel()
        self.urgent = False

    async def _send(self, batch: list[_Pending]) -> None:
        pipe = redis_client().pipeline(transaction=False)
        # Each run in the batch, with whether it ends in it (a terminal event is always a run's last).
        runs = {item.run_id: item.terminal for item in batch}
        stale = runs.keys() & self.fresh
        for run_id in stale:
            pipe.delete(run_key(run_id, "events"), run_key(run_id, "cancel"))
        self.fresh -= runs.keys()
        # Every event in one command (_XADD_ALL): an XADD of its own each cost this process three times
        # the CPU (redis-py packs, and reads the reply of, each command of a pipeline on its own; 16
        # against 5 microseconds an event). EVAL with the script's text, not redis-py's Script: in a
        # pipeline that asks SCRIPT EXISTS first, a round trip more at every write.
        keys = [run_key(item.run_id, "events") for item in batch]
        values: list[str | int] = [settings.STORY_RUN_EVENTS_MAX]
        for item in batch:
            values += (f"0-{item.seq}", item.data)
        pipe.eval(_XADD_ALL, len(keys), *keys, *values)
        now = time.monotonic()
        for run_id, ended in runs.items():
            if ended or now - self.expiry_set.get(run_id, -EXPIRY_REFRESH_SECONDS) >= EXPIRY_REFRESH_SECONDS:
                # While the run goes on, the retention plus STORY_STREAMING_STALE_SECONDS, so the log of a
                # run whose process died does not stay forever; after its end, the retention.
                stale_after = 0 if ended else settings.STORY_STREAMING_STALE_SECONDS
                pipe.expire(run_key(run_id, "events"), retention_seconds() + stale_after)
                self.expiry_set[run_id] = now
            if ended:
                self.expiry_set.pop(run_id, None)
        replies = await pipe.execute()
        refused = replies[len(stale)]
        if refused:
            raise redis.ResponseError(f"{refused} of {len(batch)} events refused by XADD")


# XADD of each event to its stream (KEYS[i]; ARGV[1]: the streams' bound, then each event's id and
# data), trimmed as one XADD ... MAXLEN ~ does. pcall: an event Redis refuses (an id at or below its
# stream's last) does not stop the others, as with one command each. Returns how many were refused.
_XADD_ALL = """
local refused = 0
for i, key in ipairs(KEYS) do
  local reply = redis.pcall('XADD', key, 'MAXLEN', '~', ARGV[1], ARGV[2 * i], 'e', ARGV[2 * i + 1])
  if type(reply) == 'table' and reply.err then refused = refused + 1 end
end
return refused
"""


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _settle_all(items: list[_Pending]) -> None:
    for item in items:
        if item.written is not None:
            _settle(item.written)


_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Writer] = weakref.WeakKeyDictionary()


def _writer() -> _Writer:
    loop = asyncio.get_running_loop()
    writer = _writers.get(loop)
    if writer is None:
        writer = _writers[loop] = _Writer()
    return writer


def stream_fresh(run_id: int) -> None:
    """A fresh run opens under ``run_id``: its stale stream goes before its first events are written."""
    _writer().fresh.add(run_id)


def _urge(writer: _Writer) -> None:
    writer.urgent = True
    if writer.wake is not None:
        _settle(writer.wake)


async def writes_flush() -> None:
    """Wait until every event this event loop queued so far is written (a run handed to another
    process: what it wrote must be there for the process that goes on with it)."""
    writer = _writer()
    if writer.task is None or writer.task.done():
        if not writer.pending:
            return
        writer.task = asyncio.create_task(writer.run())
    flushed = asyncio.get_running_loop().create_future()
    writer.flushes.append(flushed)
    _urge(writer)
    await asyncio.shield(flushed)


async def event_queue(*, run_id: int, seq: int, data: str, terminal: bool) -> None:
    """Queue a run's event for its stream; wait only for a terminal event, or when too many wait."""
    writer = _writer()
    item = _Pending(run_id, seq, data, terminal)
    writer.pending.append(item)
    if writer.task is None or writer.task.done():
        writer.task = asyncio.create_task(writer.run())
    if terminal or len(writer.pending) >= WRITE_BATCH:
        item.written = asyncio.get_running_loop().create_future()
        _urge(writer)
        # Shielded: a cancel of the runner meanwhile does not cut the write short.
        await asyncio.shield(item.written)

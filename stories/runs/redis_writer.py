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

A stream that lacks events this process holds is written again from this process's copy of the run
(``stories.runs.memory_log``), from the first one it lacks, ahead of the run's new events: after a
write that failed (Redis down or unreachable: the events of the outage, not only the run's end, reach
other processes once it answers again), and when a write finds the run's stream missing its start
(Redis restarted empty: an ``attach`` from 0 in another process began mid-run, with no ``accepted``).
While writes fail, Redis is asked every RETRY_SECONDS (a PING, not every interval, and without rebuilding
what the streams lack until it answers).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass, field

from django.conf import settings

from stories.runs.log import TERMINAL, event_text, retention_seconds
from stories.runs.memory_log import MemoryRunEventLog
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
# While writes fail, how often they are tried again (a refused connection costs little; an address
# that does not answer costs the client's connect timeout each time).
RETRY_SECONDS = 1.0


@dataclass
class _Pending:
    """An event waiting to be written to its stream; ``written`` is set for an appender that waits."""

    run_id: int
    seq: int
    data: str
    terminal: bool
    # This process's copy of the run, from which a stream that lacks some of its events is written again.
    source: MemoryRunEventLog | None
    written: asyncio.Future[None] | None = None
    # Written again from the copy, after its stream was found lacking it: not checked again.
    again: bool = False


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
    # Runs whose stream lacks events from a seq on, with the copy that holds them (see the docstring).
    gaps: dict[int, tuple[int, MemoryRunEventLog]] = field(default_factory=dict)
    failing: bool = False

    async def run(self) -> None:
        batch: list[_Pending] = []
        try:
            while self.pending or self.gaps:
                await self._gather()
                batch, self.pending = self.pending[:WRITE_BATCH], self.pending[WRITE_BATCH:]
                if self.failing and not await self._answers():
                    # Still down: what the streams lack is not rebuilt from the runs' copies for nothing
                    # (every event since the outage began, at every try).
                    self._gaps_note(batch, first_of_run=False)
                else:
                    await self._write(self._gaps_filled(batch) if self.gaps else batch)
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

    async def _answers(self) -> bool:
        """Whether Redis answers again (a PING), after writes failed."""
        try:
            await redis_client().ping()
        except Exception:
            _WRITES.failed("still unreachable")
            return False
        return True

    async def _write(self, sent: list[_Pending]) -> None:
        """Write ``sent``, and at once again the runs whose stream it found missing its start, so that a
        terminal event's appender returns only once its stream is whole."""
        while sent:
            try:
                refused, missing = await self._send(sent)
            except Exception:
                # Redis down or slow: the run goes on (its own process's followers read it in memory);
                # its stream gets these events once a write succeeds again.
                self.failing = True
                _WRITES.failed(f"{len(sent)} events not written yet")
                self._gaps_note(sent, first_of_run=False)
                return
            self.failing = False
            if refused:
                # An event at or below its stream's last (written by a write whose answer was lost, or a
                # stream of the run's id written elsewhere): writing it again would not help.
                _WRITES.failed(f"{refused} of {len(sent)} events refused by XADD")
            else:
                _WRITES.succeeded()
            self._gaps_note([item for item in sent if item.run_id in missing], first_of_run=True)
            sent = self._gaps_filled([]) if missing else []

    def _gaps_note(self, items: list[_Pending], *, first_of_run: bool) -> None:
        """Remember, for each run of ``items``, the first of its events its stream lacks: that of the
        failed write, or the run's first (``first_of_run``: its stream was found missing its start)."""
        for item in items:
            if item.source is None or item.run_id in self.gaps:
                continue
            self.gaps[item.run_id] = (1 if first_of_run else item.seq, item.source)

    def _gaps_filled(self, batch: list[_Pending]) -> list[_Pending]:
        """``batch`` with each gap's run written from its copy instead: every event from the gap on (the
        run's queued events among them, here and still waiting), none checked for a missing start."""
        gaps, self.gaps = self.gaps, {}
        filled: list[_Pending] = []
        upto: dict[int, int] = {}
        for run_id, (seq, source) in gaps.items():
            kept = source.kept_after(run_id, seq - 1)
            if kept is None:
                continue  # forgotten here (handed over, or past its retention): nothing to write from
            events, upto[run_id] = kept
            for event in events:
                text, terminal = event_text(event), event["type"] in TERMINAL
                filled.append(_Pending(run_id, event["seq"], text, terminal, source, again=True))
        if not upto:
            return batch
        # The queued events of those runs are in the copy already; their appenders are settled as usual.
        waiting = [item for item in self.pending if item.seq <= upto.get(item.run_id, 0)]
        if waiting:
            self.pending = [item for item in self.pending if item.seq > upto.get(item.run_id, 0)]
            _settle_all(waiting)
        return filled + [item for item in batch if item.seq > upto.get(item.run_id, 0)]

    async def _gather(self) -> None:
        """Let events gather for WRITE_INTERVAL_SECONDS (RETRY_SECONDS while writes fail), unless one is
        urgent."""
        if not self.urgent:
            loop = asyncio.get_running_loop()
            self.wake = loop.create_future()
            interval = RETRY_SECONDS if self.failing else WRITE_INTERVAL_SECONDS
            timer = loop.call_later(interval, _settle, self.wake)
            try:
                await self.wake
            finally:
                timer.cancel()
        self.urgent = False

    async def _send(self, batch: list[_Pending]) -> tuple[int, set[int]]:
        """Write ``batch``; how many of its events Redis refused, and the runs whose stream was found
        missing its start (none of their events of the batch written: they are written again from
        their copy)."""
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
        # pipeline that asks SCRIPT EXISTS first, a round trip more at every write. Each run's first
        # event of the batch is checked for a stream missing its start, unless it is the run's first
        # (or its stream was just deleted as stale) or it is written from the run's copy.
        keys = [run_key(item.run_id, "events") for item in batch]
        values: list[str | int] = [settings.STORY_RUN_EVENTS_MAX]
        checked: set[int] = set(stale)
        for item in batch:
            check = item.run_id not in checked and item.seq > 1 and item.source is not None and not item.again
            checked.add(item.run_id)
            values += (f"0-{item.seq}", item.data, "1" if check else "")
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
        try:
            replies = await pipe.execute()
        except Exception:
            # Perhaps not done: the stale streams are deleted, and the expiry set, at the next write.
            self.fresh |= stale
            for run_id in runs:
                self.expiry_set.pop(run_id, None)
            raise
        refused, missing = replies[len(stale)]
        if not missing:
            return int(refused), set()
        keys_missing = {key.decode() if isinstance(key, bytes) else key for key in missing}
        return int(refused), {run_id for run_id in runs if run_key(run_id, "events") in keys_missing}


# XADD of each event to its stream (KEYS[i]; ARGV[1]: the streams' bound, then each event's id, data and
# whether to check its stream), trimmed as one XADD ... MAXLEN ~ does. pcall: an event Redis refuses (an
# id at or below its stream's last) does not stop the others, as with one command each. An event to
# check whose stream does not exist (its run's earlier events lost: Redis restarted empty) is not
# written, nor are the later events of its stream in this batch. Returns how many were refused, and the
# streams found missing.
_XADD_ALL = """
local refused = 0
local missing = {}
local skip = {}
for i, key in ipairs(KEYS) do
  if ARGV[3 * i + 1] == '1' and redis.call('EXISTS', key) == 0 then
    skip[key] = true
    missing[#missing + 1] = key
  end
  if not skip[key] then
    local reply = redis.pcall('XADD', key, 'MAXLEN', '~', ARGV[1], ARGV[3 * i - 1], 'e', ARGV[3 * i])
    if type(reply) == 'table' and reply.err then refused = refused + 1 end
  end
end
return {refused, missing}
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


async def event_queue(
    *, run_id: int, seq: int, data: str, terminal: bool, source: MemoryRunEventLog | None = None
) -> None:
    """Queue a run's event for its stream; wait only for a terminal event, or when too many wait.
    ``source``: this process's copy of the run, which holds the event (see the module docstring)."""
    writer = _writer()
    item = _Pending(run_id, seq, data, terminal, source)
    writer.pending.append(item)
    if writer.task is None or writer.task.done():
        writer.task = asyncio.create_task(writer.run())
    if terminal or len(writer.pending) >= WRITE_BATCH:
        item.written = asyncio.get_running_loop().create_future()
        _urge(writer)
        # Shielded: a cancel of the runner meanwhile does not cut the write short.
        await asyncio.shield(item.written)

"""The run event log in Redis Streams, so that every process sees every run (with REDIS_URL).

One stream per run, ``<prefix>:run:<id>:events``, whose entry ids are ``0-<seq>``: an XREAD from
``0-<after>`` is exactly "the events after ``after``", first the kept ones, then, blocking, the live
ones. The stream is trimmed to STORY_RUN_EVENTS_MAX and expires (``stories.runs.redis_writer``). A
cancel is a key, ``<prefix>:run:<id>:cancel``, which the runner's process polls for all its runs at
once (``stories.runs.runner``); a follower refreshes ``<prefix>:run:<id>:seen``.

The process that runs a run also keeps its events in memory (``stories.runs.memory_log``): its own
followers read them there, with no round trip, and they keep working while Redis is down (a failed
write is logged and the run goes on; its stream gets the events it missed from that copy once Redis
answers again, and so does a stream that Redis lost, restarted empty). A run resumed here
after its process died has its copy start at the resume's jump: what the dead process logged before
it is read from Redis first.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from django.conf import settings

from stories.runs.log import TERMINAL, event_text, retention_seconds
from stories.runs.memory_log import MemoryRunEventLog
from stories.runs.redis_conn import BLOCK_MS, redis_client, run_key
from stories.runs.redis_writer import event_queue, stream_fresh, writes_flush

__all__ = ["RedisRunEventLog", "run_key"]

logger = logging.getLogger(__name__)

_READ_COUNT = 1000
# A follower refreshes its "seen" key at most this often.
_TOUCH_SECONDS = 1.0
# A follower whose stream has had nothing new for this long hands back to its caller, which asks the
# database whether the run is still going (stories.runs.follow): a run that ended while Redis was down
# never got its last events, its end included, into its stream.
_QUIET_SECONDS = 5.0


def _decode(entries: Any) -> list[dict[str, Any]]:
    # redis-py's reply types are unions over RESP versions; these are RESP2's (id, {field: value}).
    return [json.loads(fields[b"e"]) for _, fields in entries]


class RedisRunEventLog:
    """Events are kept in this process's memory at once and written to Redis by this event loop's
    writer (``stories.runs.redis_writer``), in batches; the terminal event's append returns once the
    stream is complete."""

    def __init__(self, *, local: MemoryRunEventLog) -> None:
        self.local = local

    async def open(self, run_id: int, *, last_seq: int = 0) -> None:
        await self.local.open(run_id, last_seq=last_seq)
        if last_seq == 0:
            stream_fresh(run_id)

    async def append(self, run_id: int, event: dict[str, Any]) -> int:
        stamped = self.local.append_now(run_id, event)
        seq: int = stamped["seq"]
        data = event_text(stamped)
        await event_queue(
            run_id=run_id, seq=seq, data=data, terminal=event["type"] in TERMINAL, source=self.local
        )
        return seq

    async def flush(self) -> None:
        await writes_flush()

    def forget(self, run_id: int) -> None:
        self.local.forget(run_id)

    async def read(self, run_id: int, after: int) -> list[dict[str, Any]]:
        if await self.local.exists(run_id):
            return [*await self._before_local(run_id, after), *await self.local.read(run_id, after)]
        entries: Any = await redis_client().xrange(run_key(run_id, "events"), min=f"0-{after + 1}")
        return _decode(entries)

    async def follow(self, run_id: int, after: int) -> AsyncIterator[dict[str, Any]]:
        if await self.local.exists(run_id):
            for event in await self._before_local(run_id, after):
                yield event
            async for event in self.local.follow(run_id, after):
                yield event
            return
        async for event in self._follow_stream(run_id, after):
            yield event

    async def _before_local(self, run_id: int, after: int) -> list[dict[str, Any]]:
        """The events after ``after`` that came before this process's copy of the run: those of the dead
        process of a run resumed here, which only Redis keeps (the copy starts at the resume's jump)."""
        kept_from = self.local.kept_from(run_id)
        if after >= kept_from:
            return []
        try:
            entries: Any = await redis_client().xrange(
                run_key(run_id, "events"), min=f"0-{after + 1}", max=f"0-{kept_from}"
            )
        except Exception:
            # Redis down: this process's followers get what it keeps, as for the rest of the run.
            logger.warning("run %s: its events before this process's copy could not be read", run_id)
            return []
        return _decode(entries)

    async def _follow_stream(self, run_id: int, after: int) -> AsyncIterator[dict[str, Any]]:
        client, key = redis_client(), run_key(run_id, "events")
        touched = 0.0
        heard = time.monotonic()
        while True:
            if time.monotonic() - touched > _TOUCH_SECONDS:
                await self.touch(run_id)
                touched = time.monotonic()
            reply: Any = await client.xread({key: f"0-{after}"}, count=_READ_COUNT, block=BLOCK_MS)
            if not reply:
                if not await self._goes_on(key, after) or time.monotonic() - heard >= _QUIET_SECONDS:
                    return  # never written, expired, ended at or before ``after``, or quiet
                continue
            heard = time.monotonic()
            for event in _decode(reply[0][1]):
                yield event
                after = event["seq"]
                if event["type"] in TERMINAL:
                    return

    async def _goes_on(self, key: str, after: int) -> bool:
        """Whether more may come after ``after``: the stream exists, and its last event is not a terminal
        one or is past ``after``. The run's last events may have been written after the read that found
        nothing and before this question: the next read gets them (they were lost, the end included)."""
        last: Any = await redis_client().xrevrange(key, count=1)
        if not last:
            return False
        event = _decode(last)[0]
        return event["type"] not in TERMINAL or event["seq"] > after

    async def exists(self, run_id: int) -> bool:
        return await self.local.exists(run_id) or bool(await redis_client().exists(run_key(run_id, "events")))

    async def ended(self, run_id: int) -> bool:
        if await self.local.exists(run_id):
            return await self.local.ended(run_id)
        last: Any = await redis_client().xrevrange(run_key(run_id, "events"), count=1)
        return bool(last) and _decode(last)[0]["type"] in TERMINAL

    async def last_seq(self, run_id: int) -> int:
        if await self.local.exists(run_id):
            return await self.local.last_seq(run_id)
        entries: Any = await redis_client().xrevrange(run_key(run_id, "events"), count=1)
        return int(entries[0][0].split(b"-")[1]) if entries else 0

    async def holds_all(self, run_id: int) -> bool:
        return await self.local.exists(run_id)

    async def cancel_request(self, run_id: int) -> None:
        await self.local.cancel_request(run_id)
        await redis_client().set(run_key(run_id, "cancel"), b"1", ex=retention_seconds())

    async def cancels_requested(self, run_ids: list[int]) -> set[int]:
        return await self._flagged(run_ids, "cancel", await self.local.cancels_requested(run_ids))

    async def touch(self, run_id: int) -> None:
        await self.local.touch(run_id)
        timeout = settings.STORY_RUN_DETACHED_TIMEOUT_SECONDS
        if timeout:
            await redis_client().set(run_key(run_id, "seen"), b"1", ex=timeout)

    async def followed_within(self, run_ids: list[int], seconds: float) -> set[int]:
        return await self._flagged(run_ids, "seen", await self.local.followed_within(run_ids, seconds))

    async def _flagged(self, run_ids: list[int], part: str, known: set[int]) -> set[int]:
        """``known`` and those of the other ``run_ids`` whose ``part`` key exists: one MGET for all."""
        rest = [run_id for run_id in run_ids if run_id not in known]
        if not rest:
            return known
        values = await redis_client().mget([run_key(run_id, part) for run_id in rest])
        return known | {run_id for run_id, value in zip(rest, values, strict=True) if value is not None}

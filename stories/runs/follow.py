"""Following a run: its events after a seq, then the live ones, to its end, from wherever it runs.

Once the log has expired (STORY_RUN_EVENTS_RETENTION_SECONDS after the end), or is gone with the process
that kept it (a restart without Redis), a run's end is rebuilt from the database instead
(``stories.selectors.run_final_events``): its saved scenes, ``saved`` and ``done``, its ``error`` or its
``cancelled``, with ``seq`` null (their place in the sequence is no longer known).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from django.db import DatabaseError
from redis.exceptions import RedisError

from stories.errors import GenerationError
from stories.generation.events import AttachedEvent
from stories.runs.log import TERMINAL
from stories.runs.runner import run_settled, run_start
from stories.runs.store import run_event_log
from stories.selectors import run_elapsed, run_final_events, run_find_for_user
from storyproject.db import db_call
from storyproject.logs import RepeatedFailure

logger = logging.getLogger(__name__)
_LOG_READS = RepeatedFailure(logger, "reading a run's events from Redis")
_DATABASE_READS = RepeatedFailure(logger, "reading a followed run's end from the database")

# How often a follower asks again about a run that is running but has no log it can read yet.
_POLL_SECONDS = 1.0


async def run_owned(*, run_id: int, user_id: int) -> bool:
    return await db_call(run_find_for_user)(run_id=run_id, user_id=user_id) is not None


async def run_starter(*, run_id: int, user_id: int) -> str | None:
    """The digest of the credential that started the writer's run (``GenerationRun.started_by``, "" when
    none did); None when the run is not theirs."""
    run = await db_call(run_find_for_user)(run_id=run_id, user_id=user_id)
    return None if run is None else run.started_by


async def run_last_seq_ended(*, run_id: int) -> int | None:
    """The seq of the run's terminal event while its log holds it; None while the run goes on (or its
    log went quiet without its end), and when there is no log."""
    log = run_event_log()
    try:
        if not await log.exists(run_id) or not await log.ended(run_id):
            return None
        return await log.last_seq(run_id)
    except RedisError:
        _LOG_READS.failed(f"run {run_id}")
        return None  # Redis down: followed as a run whose log cannot be read (run_events_follow)


async def run_after_past_end(*, run_id: int, after: int) -> GenerationError | None:
    """The refusal of an ``after`` past the ended run's last event, else None (no log read for 0).

    A socket's ``attach`` and an event stream alike: a seq past the end (another run's, a made-up one)
    would get nothing, and its client would wait for an end that never comes, or take the run for ended."""
    last = await run_last_seq_ended(run_id=run_id) if after else None
    if last is None or after <= last:
        return None
    return GenerationError(
        "invalid_request",
        f"after {after} is past the last event of run {run_id} (seq {last}): follow it from the last seq "
        "you showed, or from the start (after 0) to replay the run",
    )


async def run_attached(*, run_id: int) -> AttachedEvent:
    """The answer to an ``attach`` that asked where its replay ends (``confirm``), sent before it.

    ``replay_to`` is the seq of the last event the run's log holds now: the events up to it are a replay,
    those after it live. None when the run has ended and its log is gone (its end is rebuilt from the
    database: everything that follows is a replay); 0 when a running run has no log to read yet.
    ``elapsed_ms`` is the run's time so far (to its end once it has ended), from its record: the replayed
    ``accepted`` and ``progress`` events cannot say it (a model that has not written for a while sends
    no progress; a resumed run's progress counts from its resume).
    """
    streaming, elapsed_ms = await db_call(run_elapsed)(run_id=run_id)
    log = run_event_log()
    try:
        replay_to: int | None = await log.last_seq(run_id) if await log.exists(run_id) else None
    except RedisError:
        _LOG_READS.failed(f"run {run_id}")
        replay_to = None
    if replay_to is None and streaming:
        replay_to = 0  # nothing to replay yet: every event is live
    return {"type": "attached", "run_id": run_id, "replay_to": replay_to, "elapsed_ms": elapsed_ms}


async def run_events_follow(*, run_id: int, after: int = 0) -> AsyncGenerator[dict[str, Any], None]:
    """The run's events with ``seq > after``, then the live ones, ending with its terminal event.

    While Redis is down, a run of another process (whose log only Redis holds) is followed in the
    database: its end, rebuilt from its row once it is over; its log is read again once Redis answers.
    The error went up to the socket (an `error` as if the run had failed) or cut the event stream
    without an end, and a new event stream was a 500.
    """
    log = run_event_log()
    while True:
        try:
            async for event in log.follow(run_id, after):
                yield event
                after = event["seq"]
                if event["type"] in TERMINAL:
                    return
            exists = await log.exists(run_id)
            if exists and await log.ended(run_id):
                if await log.last_seq(run_id) > after:
                    # It ended after the follow handed back (a quiet stream): the rest, its end included.
                    continue
                return  # the log ended at or before ``after``: the client has it all
            _LOG_READS.succeeded()
        except RedisError:
            _LOG_READS.failed(f"run {run_id}")
            exists = False
        # No log, or one that went quiet without its end: the run may be over without its log saying
        # so (it ended while Redis was down, and its last events never reached the stream).
        try:
            final = await db_call(run_final_events)(run_id=run_id)
        except DatabaseError:
            # The database refusing for a moment: asked again, as a run still going is. Raised, it ended
            # the follow as if the run had failed (the socket's "the run's events could not be read").
            _DATABASE_READS.failed(f"run {run_id}")
            await asyncio.sleep(_POLL_SECONDS)
            continue
        _DATABASE_READS.succeeded()
        if final is not None:
            for event in final:
                yield event
            return
        if not exists:
            # Still running, but no log here yet (another process without Redis, or a dead process
            # whose run is not resumed yet): ask again.
            await asyncio.sleep(_POLL_SECONDS)


async def run_events(events: AsyncGenerator[dict[str, Any], None]) -> AsyncGenerator[dict[str, Any], None]:
    """Start a run and follow it to its end: the whole run's events, or its refusal alone.

    For the blocking interfaces (REST, the story page's form, the command), which fold them with
    ``stories.generation.events.events_fold``: the run is driven and logged as any other, so it can
    be watched and cancelled from elsewhere meanwhile. When the process stops before the run ends
    (``blocking_follows_end``), a GenerationError ``server_stopping`` naming the run.
    """
    start = await run_start(events)
    if start.run_id is None:
        assert start.refusal is not None
        yield start.refusal
        return
    stop = asyncio.get_running_loop().create_future()
    _blocking_follows.add(stop)
    try:
        async with aclosing(run_events_follow(run_id=start.run_id)) as followed:
            while True:
                step = asyncio.ensure_future(anext(followed))
                try:
                    await asyncio.wait((step, stop), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if not step.done():  # the stop, or this request's own end (a client gone)
                        step.cancel()
                        await asyncio.wait((step,))  # the generator free again, for aclosing
                if step.cancelled():
                    raise _stopping(start.run_id)
                try:
                    event = step.result()
                except StopAsyncIteration:
                    return
                if event["type"] in TERMINAL:
                    await run_settled(run_id=start.run_id)
                yield event
    finally:
        _blocking_follows.discard(stop)


# The blocking follows of this process (run_events), each waiting on its future as well as on its run.
_blocking_follows: set[asyncio.Future[None]] = set()


def blocking_follows_end() -> int:
    """End every blocking follow of this process with ``server_stopping``: the process is stopping
    (``make serve``'s graceful stop, once its runs are handed over), and its requests are to be answered
    before it does. How many there were."""
    ended = 0
    for stop in list(_blocking_follows):
        if not stop.done():
            stop.set_result(None)
            ended += 1
    return ended


def _stopping(run_id: int) -> GenerationError:
    return GenerationError(
        "server_stopping",
        f"The server process answering this request is stopping; run {run_id} goes on on another one. Do "
        f"not send the request again: follow the run at /api/runs/{run_id}/events/ (its story gets the new "
        "version when it ends).",
        run_id=run_id,
    )

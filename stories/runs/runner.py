"""The runner: drives one run's events into the log, as a task this process owns, not a socket.

``run_start`` takes a run's events (``stories.generation.pipeline.generation_run`` or a scene rewrite),
starts driving them in a task of its own and returns once the run is admitted (its ``accepted`` is in
the log) or refused (the refusal, which belongs to no run, is returned instead). From then on the run
goes on whoever follows it or leaves; it ends with ``done``, ``error`` or ``cancelled`` in the log.
It stops early only when cancelled (``run_cancel``, from any process through the log) or, with
STORY_RUN_DETACHED_TIMEOUT_SECONDS, when nobody has followed it that long; either way the pipeline
records it ``cancelled`` and closes the upstream request at once. A stopping server process may
instead hand a run to another process (``run_held``, stories.generation.handover): its task stops and
writes nothing more to the log, so the process that resumes the run goes on after its last seq.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DatabaseError

from stories.errors import GenerationError, RunTakenOver, database_failure
from stories.runs.log import TERMINAL, RunEventLog
from stories.runs.store import run_event_log
from stories.services import generation_run_cancel_orphaned
from storyproject.db import db_call, lock_wait_exceeded
from storyproject.logs import RepeatedFailure, run_log_context_bind, run_log_context_release

logger = logging.getLogger(__name__)
# Where a resumed run's log goes on when the dead process's could not be read, or is not kept anywhere
# this process can read (a run writes a few thousand events).
SEQ_AFTER_UNREAD = 10_000_000
_CANCEL_CHECKS = RepeatedFailure(logger, "checking this process's runs for a cancel")
_CANCEL_REQUESTS = RepeatedFailure(logger, "passing a cancel on to other processes")

# How often a running run looks for a cancel sent from another process, and for followers.
WATCH_SECONDS = 0.25

# The runs this process drives, by id, as their runners see them: a cancel here stops their task at
# once, a hand-over holds their events.
_driving: dict[int, _Driven] = {}
# Every runner task until it is done: the event loop keeps only weak references to tasks.
_tasks: set[asyncio.Task[None]] = set()
# Per event loop (daphne has one; a blocking view runs its own): the runs its watcher looks after, and
# the watcher.
_watched: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, asyncio.Task[None]]] = (
    weakref.WeakKeyDictionary()
)
_watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = (
    weakref.WeakKeyDictionary()
)
# How long a run given to another process has to stop here (its close writes nothing any more).
_DROP_SECONDS = 10.0


@dataclass(frozen=True)
class RunStart:
    """A started run's id, or the refusal (an ``error`` event of no run) when none was admitted."""

    run_id: int | None = None
    refusal: dict[str, Any] | None = None


async def run_start(events: AsyncGenerator[dict[str, Any], None]) -> RunStart:
    """Drive ``events`` in a task of this process; return once the run is admitted or refused."""
    started: asyncio.Future[RunStart] = asyncio.get_running_loop().create_future()
    _keep(asyncio.create_task(_drive(events, _Driven(log=run_event_log(), started=started))))
    # Shielded: a caller that goes away meanwhile leaves the run to go on.
    return await asyncio.shield(started)


async def run_resume(*, run_id: int, events: AsyncGenerator[dict[str, Any], None]) -> None:
    """Drive, in this process, the rest of a run that started elsewhere (a process that died).

    The run's log goes on past every seq the dead process gave out (``_seq_after_dead_process``): a
    client that re-attaches after the last seq it had gets `resumed` and the rest, never a repeat.
    For resuming runs after a killed process (issue 16 part B); returns once the task is started.
    """
    log = run_event_log()
    await log.open(run_id, last_seq=await _seq_after_dead_process(log, run_id))
    started: asyncio.Future[RunStart] = asyncio.get_running_loop().create_future()
    driven = _Driven(log=log, started=started, run_id=run_id)
    # Registered before its task first runs: a cancel from now on finds it.
    _driving[run_id] = driven
    driven.task = _keep(asyncio.create_task(_drive(events, driven)))
    await asyncio.shield(started)


async def _seq_after_dead_process(log: RunEventLog, run_id: int) -> int:
    """Where the log of a run whose process died goes on: past every seq that process gave out.

    Its own followers got each event before it reached Redis (every 0.1 s, and not at all while Redis
    was down), so they may hold seqs past the last one the log kept: going on right after it gave
    them other events under seqs they had, and they missed `resumed` (or the end) by re-attaching
    after them. Only a log this process wrote itself holds every seq it gave out.
    """
    try:
        last_seq = await log.last_seq(run_id)
        if await log.holds_all(run_id):
            return last_seq
    except Exception:
        # Redis down: what the dead process wrote cannot be read, and the run is resumed all the same
        # (Redis only speeds things up). Its log goes on far past anything a run writes, so that once
        # Redis is back its events follow the old ones (a client following it sees a jump, no repeat).
        logger.warning(
            "run %s: its event log could not be read; it goes on after seq %s", run_id, SEQ_AFTER_UNREAD
        )
        return SEQ_AFTER_UNREAD
    # Nothing of the run's log is here (without Redis it died with the dead process), or its last events
    # may never have reached it: a seq far past anything a run writes, after what it kept.
    return last_seq + SEQ_AFTER_UNREAD


def _keep(task: asyncio.Task[None]) -> asyncio.Task[None]:
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return task


async def run_cancel(*, run_id: int) -> bool:
    """Cancel the run wherever it runs: here at once, elsewhere within WATCH_SECONDS. An orphaned run
    (its process died; nothing runs it) is closed as cancelled here and now: returns True then."""
    # Asked from a socket or a request, not from the run's task: its lines carry the run's id all the same.
    logged_before = run_log_context_bind(run_id=run_id)
    try:
        return await _run_cancel(run_id)
    finally:
        run_log_context_release(logged_before)


async def _run_cancel(run_id: int) -> bool:
    task = _task(run_id)
    if task is not None:
        loop = task.get_loop()
        if loop is asyncio.get_running_loop():
            task.cancel()
        else:
            # Asked from another thread's loop (a blocking view's): cancelled on its own loop.
            loop.call_soon_threadsafe(task.cancel)
    log = run_event_log()
    try:
        await log.cancel_request(run_id)
        _CANCEL_REQUESTS.succeeded()
    except Exception:
        # Redis down: a run of this process is stopped above all the same (the socket that started a
        # run follows it here); one that another process runs cannot be told until Redis is back. The
        # error went up to the client's socket, which daphne closed with 1011, a traceback in the log.
        _CANCEL_REQUESTS.failed(f"run {run_id}")
    if task is not None or not await _orphan_cancelled(run_id):
        return False
    try:
        # Its followers (the log the dead process wrote, in Redis) get the end it will never write.
        if await log.exists(run_id) and not await log.ended(run_id):
            await log.open(run_id, last_seq=await _seq_after_dead_process(log, run_id))
            await log.append(run_id, {"type": "cancelled"})
            await log.flush()
    except Exception:
        # Redis down: a follower finds the end in the database (stories.runs.follow).
        logger.warning("run %s: its cancel could not be written to its event log", run_id, exc_info=True)
    return True


async def _orphan_cancelled(run_id: int) -> bool:
    """Whether the run was orphaned and is now closed as cancelled. A lock held on its row elsewhere
    (storyproject.db.lock_wait_bound) is said as the run's own writes say it: ``llm_unavailable``,
    retryable; the run is left as it was (with Redis, its claim finds the cancel asked above)."""
    try:
        return await db_call(generation_run_cancel_orphaned)(run_id=run_id)
    except DatabaseError as error:
        if not lock_wait_exceeded(error):
            raise
        raise database_failure(run_id, error) from None


def run_is_local(*, run_id: int) -> bool:
    return run_id in _driving


def _task(run_id: int) -> asyncio.Task[None] | None:
    driven = _driving.get(run_id)
    return None if driven is None else driven.task


async def run_settled(*, run_id: int) -> None:
    """Wait until this process's runner of ``run_id`` (if any) is done, its terminal event included.

    A blocking caller that has read the terminal event waits for this before its event loop may end:
    the runner may still be writing that event, and a loop closing under it would cancel the run's
    last steps (and record a finished run as cancelled).
    """
    task = _task(run_id)
    if task is not None and task is not asyncio.current_task():
        await asyncio.shield(task)


async def _drive(events: AsyncGenerator[dict[str, Any], None], driven: _Driven) -> None:
    if driven.run_id is not None:
        driven.adopt()
    try:
        async with aclosing(events) as stream:
            async for event in stream:
                await driven.take(event)
    except asyncio.CancelledError:
        await driven.end({"type": "cancelled"})
    except RunTakenOver:
        # This process stalled past the run's lease and another one took it over: that one writes the
        # rest of its log, its end included. Written here, an `error` ended the run for its followers
        # (and an attach after it got nothing more) while the other process saved it.
        logger.warning("run %s was taken over by another server process; it goes on there", driven.run_id)
        await driven.let_go()
    except Exception:
        logger.exception("generation run %s failed unexpectedly", driven.run_id)
        await driven.end(GenerationError("llm_unavailable", "the generation failed unexpectedly").as_event())
    finally:
        await driven.close()


@dataclass
class _Driven:
    """One run as its runner sees it: admitted or not, ended or not (its loop's watcher looks after it)."""

    log: RunEventLog
    started: asyncio.Future[RunStart]
    # Known from the start for a resumed run, from its ``accepted`` event for a new one.
    run_id: int | None = None
    task: asyncio.Task[None] | None = None
    ended: bool = False
    # Cleared while a hand-over holds the run's events (run_held); dropped once another process has it.
    flowing: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: bool = False

    def __post_init__(self) -> None:
        self.flowing.set()

    async def take(self, event: dict[str, Any]) -> None:
        if self.run_id is None:
            await self._first(event)
        else:
            await self._append(event)

    def adopt(self) -> None:
        """Drive a run whose log is already open (a resumed run): every event is appended."""
        assert self.run_id is not None and self.task is not None
        _watch_start(self.run_id, self.task, self.log)
        self._answer(RunStart(run_id=self.run_id))

    async def _first(self, event: dict[str, Any]) -> None:
        if event["type"] != "accepted":
            # Refused before admission (busy, rate limited, a bad story...): no run, no log.
            self._answer(RunStart(refusal=event))
            return
        run_id = self.run_id = int(event["run_id"])
        self.task = asyncio.current_task()
        assert self.task is not None
        _driving[run_id] = self
        await self.log.open(run_id)
        await self._append(event)
        _watch_start(run_id, self.task, self.log)
        self._answer(RunStart(run_id=run_id))

    async def _append(self, event: dict[str, Any]) -> None:
        assert self.run_id is not None
        if not self.flowing.is_set():
            await self.flowing.wait()
        if self.dropped:
            return  # another process goes on with the run and its log
        await self.log.append(self.run_id, event)
        self.ended = event["type"] in TERMINAL

    async def end(self, terminal: dict[str, Any]) -> None:
        """Close the run with ``terminal`` unless it ended already (a refusal has no run to close)."""
        if self.run_id is None:
            self._answer(RunStart(refusal=terminal))
        elif not self.ended:
            await self._append(terminal)

    async def let_go(self) -> None:
        """Write nothing more of the run: what was written reaches the other processes, and this
        process's followers go on from there (the log it keeps of the run, dropped, ends their follow
        here: stories.runs.follow then reads the log the other process writes, or the database)."""
        self.dropped = True
        if self.run_id is None:
            return
        try:
            await self.log.flush()
        except Exception:
            logger.warning("run %s: its last events could not be written to its event log", self.run_id)
        self.log.forget(self.run_id)

    async def close(self) -> None:
        if self.run_id is not None and not self.ended and not self.dropped:
            await self._append(
                GenerationError("llm_unavailable", "the generation ended without a result").as_event()
            )
        if self.run_id is not None:
            self._answer(RunStart(run_id=self.run_id))
            _driving.pop(self.run_id, None)
        else:
            self._answer(RunStart(refusal={"type": "cancelled"}))

    def _answer(self, start: RunStart) -> None:
        if not self.started.done():
            self.started.set_result(start)


def _watch_start(run_id: int, task: asyncio.Task[None], log: RunEventLog) -> None:
    """Have this event loop's watcher look after ``run_id`` (started when its first run needs it)."""
    loop = asyncio.get_running_loop()
    watched = _watched.setdefault(loop, {})
    watched[run_id] = task
    watcher = _watchers.get(loop)
    if watcher is None or watcher.done():
        _watchers[loop] = _keep(asyncio.create_task(_watch(watched, log)))


async def _watch(watched: dict[int, asyncio.Task[None]], log: RunEventLog) -> None:
    """Cancel this loop's runs when a cancel arrives from elsewhere, or nobody has followed one too long.

    One watcher per event loop asks about all its runs at once (one Redis round trip every WATCH_SECONDS,
    whatever the number of runs): a poll per run made 200 runs' polls 800 round trips a second, and, as
    they came due together, 200 connections opened at once (bench.flow, 200 concurrent).
    """
    while watched:
        await asyncio.sleep(WATCH_SECONDS)
        for run_id in [run_id for run_id, task in watched.items() if task.done()]:
            del watched[run_id]
        if not watched:
            # No run left to ask about: asking nothing of Redis would say it "works again" while down.
            break
        try:
            stops = await _stop_reasons(list(watched), log)
        except Exception:
            _CANCEL_CHECKS.failed(f"{len(watched)} runs")
            continue
        _CANCEL_CHECKS.succeeded()
        for run_id, reason in stops.items():
            task = watched.pop(run_id, None)
            if task is not None and not task.done():
                logger.info("run %s cancelled: %s", run_id, reason)
                task.cancel()


async def _stop_reasons(run_ids: list[int], log: RunEventLog) -> dict[int, str]:
    if not run_ids:
        return {}
    stops = dict.fromkeys(await log.cancels_requested(run_ids), "a cancel was asked")
    timeout = settings.STORY_RUN_DETACHED_TIMEOUT_SECONDS
    if timeout:
        followed = await log.followed_within([i for i in run_ids if i not in stops], timeout)
        for run_id in run_ids:
            if run_id not in stops and run_id not in followed:
                stops[run_id] = f"nobody followed it for {timeout} s"
    return stops


def running_ids() -> list[int]:
    """The ids of the runs this process drives now."""
    return list(_driving)


class RunHold:
    """A run of this process whose events are held (``run_held``)."""

    def __init__(self, driven: _Driven) -> None:
        self._driven = driven

    def drop(self) -> None:
        """Another process takes the run on: stop it here, writing nothing more to its log."""
        self._driven.dropped = True


@asynccontextmanager
async def run_held(*, run_id: int) -> AsyncIterator[RunHold | None]:
    """Hold the events of a run this process drives, for a hand-over to another process.

    Within the block no event of the run is written to its log, and every one written before is where
    other processes read it (the log is flushed). When the block called ``drop()``, the run's task is
    then cancelled and nothing more of it reaches the log, not even a terminal event; otherwise its
    events go on. None: the run is not driven here (on this event loop), or is over.
    """
    driven = _driving.get(run_id)
    task = None if driven is None else driven.task
    if driven is None or task is None or driven.ended or task.get_loop() is not asyncio.get_running_loop():
        # (A run on another thread's loop, a blocking view's outside daphne, is not held from here.)
        yield None
        return
    driven.flowing.clear()
    try:
        await driven.log.flush()
        yield RunHold(driven)
    finally:
        driven.flowing.set()
        if driven.dropped:
            task.cancel()
            await asyncio.wait([task], timeout=_DROP_SECONDS)
            driven.log.forget(run_id)

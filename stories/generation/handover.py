"""Handing a stopping server process's runs to another process: ``make serve``'s graceful stop.

A process that is told to stop lets its runs finish for ``SERVE_GRACEFUL_SECONDS``
(storyproject.serve_worker); past that, ``runs_hand_over`` gives each run still going to whichever
process resumes it (stories.generation.resume) instead of cancelling it:

1. the run's events are held in the runner (stories.runs.runner.run_held): nothing more reaches its
   log, and what was written is flushed to Redis, where the resuming process reads its last seq;
2. its lease is released (one UPDATE, only while it is still streaming and held here): the run is
   orphaned at once, not after ``STORY_RUN_LEASE_SECONDS``, and every later write of this process to
   it (checkpoint, close, save) finds it no longer held;
3. its task here is cancelled: the model call is closed, and no terminal event is written;
4. the other server processes are told (stories.runs.orphans, with Redis), so one of them resumes the
   run under the same id at once; with none left, the next start's ``recover_runs`` does.

From the signal on, ``process_stopping`` says so: the WebSocket consumer closes its idle sockets and
starts no new run on one still open (stories.consumers), so the client reconnects to another process.

A follower sees ``resumed`` after the last event this process wrote, then the rest. Only a run that
can be resumed is handed over (its checkpoint holds a resume point); another (a scene rewrite, a run
before its outline or first scene) is cancelled, as before there was a hand-over. A run that ended
while it was being handed over (it was saving) is left to end here.
"""

from __future__ import annotations

import asyncio
import logging

from django.core.exceptions import ObjectDoesNotExist
from django.db import DatabaseError

from stories.generation.checkpoint import NotResumable, resume_point
from stories.generation.resume import orphans_watch_stop
from stories.models import GenerationRun
from stories.runs.orphans import orphans_announce
from stories.runs.runner import run_cancel, run_held, run_settled, running_ids
from stories.selectors import run_get
from stories.services import RUN_LEASE_OWNER, generation_run_lease_release
from storyproject.db import db_call, lock_wait_exceeded
from storyproject.logs import run_log_context_bind

logger = logging.getLogger(__name__)

# How long a run that is not handed over (cancelled, or ending by itself) has to end here.
_SETTLE_SECONDS = 10.0
_stopping = False


def process_stop_begin() -> None:
    """This process is stopping (``make serve``'s graceful stop): it starts no new run from now on."""
    global _stopping
    _stopping = True


def process_stopping() -> bool:
    """Whether this process is stopping: a new generation belongs on another process."""
    return _stopping


async def runs_hand_over() -> dict[str, int]:
    """Hand every resumable run this process drives to another process; cancel the others.

    Counts the runs by outcome: "handed_over", "cancelled", "ended" (it ended by itself meanwhile),
    "kept" (its row was locked elsewhere: it goes on here until this process stops).
    This process stops looking for orphaned runs first: a stopping process takes on no run.
    """
    await orphans_watch_stop()
    outcomes = await asyncio.gather(*(_hand_over(run_id) for run_id in running_ids()))
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome] = counts.get(outcome, 0) + 1
    if counts.get("handed_over"):
        await orphans_announce()
    return counts


async def _hand_over(run_id: int) -> str:
    run_log_context_bind(run_id=run_id)  # a task of its own (gather): its lines carry the run's id
    try:
        run = await db_call(run_get)(run_id=run_id)
    except ObjectDoesNotExist:
        return await _settled(run_id, "ended")
    if run.status != GenerationRun.Status.STREAMING or run.lease_owner != RUN_LEASE_OWNER:
        return await _settled(run_id, "ended")
    try:
        resume_point(checkpoint=run.checkpoint, mode=run.mode)
    except NotResumable as why:
        logger.info("run %s cannot be handed over (%s): cancelled", run_id, why)
        await run_cancel(run_id=run_id)
        return await _settled(run_id, "cancelled")
    async with run_held(run_id=run_id) as hold:
        try:
            released = hold is not None and await db_call(generation_run_lease_release)(
                run_id=run_id, lease_owner=RUN_LEASE_OWNER
            )
        except DatabaseError as error:
            if not lock_wait_exceeded(error):
                raise
            # Its row locked elsewhere past STORY_RUN_LOCK_TIMEOUT_SECONDS: it goes on here, its events
            # flowing again, until this process stops; its lease then lapses and another resumes it.
            logger.warning("run %s could not be handed over: its record is locked elsewhere", run_id)
            return "kept"
        if hold is not None and released:
            hold.drop()
    if not released:
        # Saved (or closed) meanwhile: its last events go out, now that the hold has ended.
        return await _settled(run_id, "ended")
    logger.info("run %s handed over: its lease is released for another process to resume it", run_id)
    return "handed_over"


async def _settled(run_id: int, outcome: str) -> str:
    try:
        await asyncio.wait_for(run_settled(run_id=run_id), _SETTLE_SECONDS)
    except TimeoutError:
        logger.warning("run %s did not end within %s s of the stop", run_id, _SETTLE_SECONDS)
    except Exception:  # a run on another event loop cannot be awaited from this one
        logger.warning("run %s: could not wait for its end", run_id, exc_info=True)
    return outcome

"""Resuming a run whose process died: take it over, keep its finished work, write only the rest.

A ``streaming`` run whose lease has expired (stories.generation.checkpoint) is orphaned. ``run_resume``
claims it (one UPDATE that only succeeds while the lease is expired, so one process gets it) and
finishes it under the same run id, as protocol events, ``resumed`` first: parallel mode writes only the
scenes missing from the checkpoint (never the outline or a finished scene again); single mode continues
after the last complete scene with the continuation prompt. The screenplay is then checked and saved in
the one-transaction save, as any run's. A run with nothing to resume from is closed as failed,
``interrupted``; or as ``cancelled`` when a cancel was asked for it while its process was dead (within
its lease, when nothing could close it yet): the writer asked to stop it, not to be offered a retry.

Two callers: ``manage.py recover_runs`` (at start-up, to completion) and ``orphans_watch``, which a
server process starts on its first request (storyproject.asgi) and which looks for orphans every
lease period, and at once when a stopping process announces runs it handed over (stories.runs.orphans).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from django.conf import settings
from django.db import DatabaseError

from stories.generation.checkpoint import NotResumable, ResumePoint, resume_point
from stories.generation.parallel import parallel_write
from stories.generation.pipeline import run_events
from stories.generation.requests import model_label
from stories.generation.run import Run, Writer
from stories.generation.single import single_write
from stories.models import GenerationRun
from stories.runs.orphans import orphans_wait
from stories.runs.runner import run_resume as run_logged_resume
from stories.runs.runner import run_settled
from stories.runs.store import run_event_log
from stories.selectors import (
    generation_pace_get,
    generation_run_measures,
    generation_runs_orphaned,
    generation_settings_get,
)
from stories.services import (
    INTERRUPTED_MESSAGE,
    RUN_LEASE_OWNER,
    generation_run_cancel_claimed,
    generation_run_claim,
    generation_run_fail_claimed,
    generation_run_interrupt,
    generation_run_release,
)
from storyproject.db import db_call
from storyproject.logs import run_log_context_bind

logger = logging.getLogger(__name__)


class _EndedAsTold:
    """A claimed run whose log already holds its end: its process told its followers how it ended
    (``error``, ``cancelled``) but could not record it (the database was down then). It is closed
    as told, and nothing more is written to its log: resumed, it would be saved after the writer was
    told it failed, with events after its terminal one."""


_ENDED_AS_TOLD = _EndedAsTold()


async def run_resume(*, run_id: int) -> AsyncGenerator[dict[str, Any], None]:
    """Take over the orphaned run ``run_id`` and finish it; yield its events, ``resumed`` first.

    Yields nothing when the run is not orphaned (it ended, or its process is alive and renewing its
    lease), or when its log already holds its end (closed as told). A run that cannot be resumed is
    closed as failed "interrupted", and the one event is an ``error`` with that code.
    """
    claim = await _claim(run_id)
    if claim is None or isinstance(claim, _EndedAsTold):
        return
    async with aclosing(_claimed_events(claim)) as events:
        async for event in events:
            yield event


async def _claimed_events(
    claim: tuple[Run, ResumePoint] | dict[str, Any],
) -> AsyncGenerator[dict[str, Any], None]:
    if isinstance(claim, dict):  # closed at its claim: its one event
        yield claim
        return
    run, point = claim
    try:
        async with aclosing(run_events(run, _writer(point), opening=_resumed(run, point))) as events:
            async for event in events:
                yield event
    finally:
        generation_run_release(run_id=run.run_id)


async def _claim(run_id: int) -> tuple[Run, ResumePoint] | dict[str, Any] | _EndedAsTold | None:
    """Claim the run: its Run and resume point; or, when it holds nothing to resume, the one event that
    ends it, closed here (``cancelled`` if a cancel was asked for it meanwhile, else ``interrupted``);
    or, when its log already holds its end, ``_ENDED_AS_TOLD`` (closed as told); None when it is not
    orphaned."""
    told = await _end_told(run_id)
    if told is not None:
        closed = await db_call(_told_close)(run_id=run_id, told=told)
        return _ENDED_AS_TOLD if closed else None
    claim = await db_call(_run_claim)(run_id)
    if not isinstance(claim, NotResumable):
        return claim
    logger.info("run %s cannot be resumed: %s", run_id, claim)
    cancelled = await _cancel_asked(run_id)
    await db_call(_unresumable_close)(run_id=run_id, cancelled=cancelled)
    if cancelled:
        return {"type": "cancelled"}
    return {"type": "error", "code": "interrupted", "message": INTERRUPTED_MESSAGE, "retryable": True}


async def _end_told(run_id: int) -> dict[str, Any] | None:
    """The ``error`` or ``cancelled`` that the run's log already ends with, if it does."""
    log = run_event_log()
    try:
        if not await log.ended(run_id):
            return None
        last = await log.read(run_id, await log.last_seq(run_id) - 1)
    except Exception:
        # Redis down: the run's end cannot be read; it is resumed, as a killed process's run is.
        logger.warning("run %s: its event log could not be read", run_id, exc_info=True)
        return None
    return last[-1] if last and last[-1]["type"] in ("error", "cancelled") else None


def _told_close(*, run_id: int, told: dict[str, Any]) -> bool:
    """Claim the run and close it as its log says it ended; False when it is not orphaned (any more)."""
    if generation_run_claim(run_id=run_id, lease_owner=RUN_LEASE_OWNER) is None:
        return False
    try:
        logger.info("run %s ended (%s) without being recorded: closed as it ended", run_id, told["type"])
        if told["type"] == "cancelled":
            return generation_run_cancel_claimed(run_id=run_id, lease_owner=RUN_LEASE_OWNER)
        return generation_run_fail_claimed(
            run_id=run_id,
            lease_owner=RUN_LEASE_OWNER,
            error_code=str(told.get("code", "")),
            error_message=str(told.get("message", "")),
            retryable=bool(told.get("retryable")),
        )
    finally:
        generation_run_release(run_id=run_id)


async def _cancel_asked(run_id: int) -> bool:
    """Whether a cancel was asked for the run (in its event log, as the runner's watcher reads it)."""
    try:
        return run_id in await run_event_log().cancels_requested([run_id])
    except Exception:
        # Redis down: no cancel can be read; the run is closed as interrupted, as before any was asked.
        logger.warning("run %s: its cancel requests could not be read", run_id, exc_info=True)
        return False


def _unresumable_close(*, run_id: int, cancelled: bool) -> None:
    try:
        if cancelled:
            generation_run_cancel_claimed(run_id=run_id, lease_owner=RUN_LEASE_OWNER)
        else:
            generation_run_interrupt(run_id=run_id, lease_owner=RUN_LEASE_OWNER)
    finally:
        # Also when the close failed (its row locked elsewhere past STORY_RUN_LOCK_TIMEOUT_SECONDS): the
        # run is claimed again once its lease lapses, which a run this process still counted as its own
        # never was.
        generation_run_release(run_id=run_id)


def _run_claim(run_id: int) -> tuple[Run, ResumePoint] | NotResumable | None:
    """Claim the run; read its checkpoint back, or say why it holds nothing to resume (still claimed)."""
    row = generation_run_claim(run_id=run_id, lease_owner=RUN_LEASE_OWNER)
    if row is None:
        return None
    try:
        point = resume_point(checkpoint=row.checkpoint, mode=row.mode)
    except NotResumable as why:
        return why
    run = Run(
        run_id=row.pk,
        request=point.request,
        user_id=row.user_id,
        model=row.model,
        max_tokens=row.max_tokens,
        # The run's clock goes on from where the dead process left it.
        started=time.monotonic() - point.elapsed_ms / 1000,
        pace=generation_pace_get(model=row.model, max_tokens=row.max_tokens),
        rules=generation_settings_get().formatting_rules,
        lease_owner=RUN_LEASE_OWNER,
    )
    point.restore(run)
    run.record.details["resumed"] = {"scenes_kept": len(point.scenes), "elapsed_ms": point.elapsed_ms}
    logger.info("run %s resumed with %s finished scene(s)", run_id, len(point.scenes))
    return run, point


def _writer(point: ResumePoint) -> Writer:
    if point.mode == GenerationRun.Mode.PARALLEL:
        return functools.partial(parallel_write, resume=point)
    return functools.partial(single_write, resume=point)


def _resumed(run: Run, point: ResumePoint) -> dict[str, Any]:
    """The ``resumed`` event: enough for a client that saw nothing before to draw the run so far."""
    return {
        "type": "resumed",
        "run_id": run.run_id,
        "mode": point.mode,
        "model": run.model,
        "model_name": model_label(run.model),
        "max_tokens": run.max_tokens,
        "personas": point.request.personas,
        "outline": point.outline,
        "scenes": [{"index": index, "scene": point.scenes[index]} for index in sorted(point.scenes)],
    }


async def runs_resume_drain(*, run_ids: list[int]) -> dict[str, int]:
    """Resume these runs side by side, each to its end; count how they ended ("finished", "failed", ...)."""
    outcomes = await asyncio.gather(*(_resume_logged(run_id) for run_id in run_ids))
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


async def _resume_logged(run_id: int) -> str:
    """Claim the run and drive the rest of it through the runner, into the run's event log.

    The log goes on after the run's last seq (with Redis, the stream the dead process wrote), so a
    client attached to the run sees ``resumed`` and the rest with no gap and no repeat. Claimed first:
    a run another process claimed is left to it, its log untouched.
    """
    run_log_context_bind(run_id=run_id)  # a task of its own (gather, create_task): its lines carry the id
    try:
        claim = await _claim(run_id)
        if claim is None:
            return "skipped"  # not orphaned after all: another process claimed it first
        if not isinstance(claim, _EndedAsTold):
            await run_logged_resume(run_id=run_id, events=_claimed_events(claim))
            await run_settled(run_id=run_id)
        # How it ended, as the database says (its log may be in a Redis that is down).
        ended = await db_call(generation_run_measures)(run_id=run_id)
    except Exception:
        logger.exception("resuming run %s failed unexpectedly", run_id)
        return "failed"
    status = ended.status if ended is not None else ""
    return {"succeeded": "finished", "failed": "failed", "cancelled": "cancelled"}.get(status, "failed")


# The watcher and the resumes it started, kept so that they are not garbage-collected while they run.
_watcher: list[asyncio.Task[None]] = []
_resuming: set[asyncio.Task[str]] = set()


def orphans_watch_start() -> bool:
    """Start this process's orphan watcher on the running loop, once; False when it is off or running."""
    if not settings.STORY_RUN_RECOVERY or (_watcher and not _watcher[0].done()):
        return False
    _watcher[:] = [asyncio.get_running_loop().create_task(_orphans_watch(), name="orphans-watch")]
    return True


async def orphans_watch_stop() -> None:
    """Stop this process's orphan watcher (the resumes it started run on to their end)."""
    for task in _watcher:
        task.cancel()
        await asyncio.wait([task], timeout=1.0)
    _watcher.clear()


async def _orphans_watch() -> None:
    """Every lease period: one indexed query for orphaned runs, and a resume for each one found."""
    while True:
        try:
            run_ids = await db_call(generation_runs_orphaned)()
        except DatabaseError:
            logger.warning("the orphaned-run scan failed; trying again next period", exc_info=True)
            run_ids = []
        for run_id in run_ids:
            task = asyncio.create_task(_resume_logged(run_id), name=f"resume-{run_id}")
            _resuming.add(task)
            task.add_done_callback(_resuming.discard)
        # Sooner when a stopping process hands its runs over (stories.runs.orphans, with Redis).
        await orphans_wait(settings.STORY_RUN_LEASE_SECONDS)

"""A running run's lease and checkpoints: what lets another process finish it if this one dies.

The process running a run renews its lease (``lease_kept``) every third of ``STORY_RUN_LEASE_SECONDS``,
and stores the run's finished work as it completes (``checkpoint_save``): parallel mode's outline and
each finished scene, single mode's complete scenes, with the usage paid so far. A checkpoint is written
before the event that announces the scene goes out, so a scene a client has seen is never asked of the
model again. ``resume_point`` reads a checkpoint back (stories.generation.resume).

Each checkpoint is one UPDATE of the run's row that rewrites its ``checkpoint`` JSON whole: a run has
few scenes (at most ``STORY_PARALLEL_MAX_SCENES``, a few kB each), so the n-th write carries n scenes
and a whole run writes a few hundred kB at most, in one round trip per scene, with no second table.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DatabaseError

from stories.errors import RunTakenOver
from stories.generation.backends.base import Usage
from stories.generation.requests import GenerationRequest
from stories.generation.run import Run
from stories.models import GenerationRun
from stories.selectors import generation_run_taken_over
from stories.services import generation_run_checkpoint_async, generation_run_lease_renew_async
from storyproject.db import db_call
from storyproject.logs import RepeatedFailure

logger = logging.getLogger(__name__)
_RENEWALS = RepeatedFailure(logger, "renewing the leases of this process's runs")


@asynccontextmanager
async def lease_kept(run: Run) -> AsyncIterator[None]:
    """Renew the run's lease in the background for as long as the block runs (none for a run held by none)."""
    if not run.lease_owner:
        yield
        return
    renewal = asyncio.create_task(_lease_renew(run), name=f"lease-{run.run_id}")
    try:
        yield
    finally:
        renewal.cancel()
        await asyncio.wait([renewal], timeout=1.0)


async def _lease_renew(run: Run) -> None:
    while True:
        await asyncio.sleep(settings.STORY_RUN_LEASE_SECONDS / 3)
        try:
            held = await generation_run_lease_renew_async(run_id=run.run_id, lease_owner=run.lease_owner)
        except DatabaseError:
            # The database is down: try again next period; the run's own writes will fail meanwhile.
            # Logged once for all the runs of the process, then once a minute (not a traceback per run
            # at every renewal).
            _RENEWALS.failed(f"run {run.run_id}")
            continue
        _RENEWALS.succeeded()
        if not held:
            # Ended meanwhile (saved or closed while this renewal waited for a database thread, as 200
            # runs at once made happen in bench.flow), or taken over by another process (this one
            # stalled past its lease): then the next checkpoint or the save finds out and stops.
            if await db_call(generation_run_taken_over)(run_id=run.run_id, lease_owner=run.lease_owner):
                logger.warning("run %s: its lease is lost to another process", run.run_id)
            return


def checkpoint_request(request: GenerationRequest) -> dict[str, Any]:
    """The part of a checkpoint written at admission: the request, all a resume needs to start again."""
    return {"request": dataclasses.asdict(request)}


async def checkpoint_save(run: Run, work: dict[str, Any], *, in_flight: Usage | None = None) -> None:
    """Store ``work`` (the outline and scenes finished so far) with the usage paid so far.

    ``in_flight`` is the usage of a call still streaming (single mode's), estimated: the scenes it
    completed are in ``work``, so what it cost so far is counted with them. Raises RunTakenOver
    "interrupted" when another process has taken the run over: this copy must stop.
    """
    if not run.lease_owner:
        return
    usage = Usage(**run.usage.as_dict())
    if in_flight is not None:
        usage.add(in_flight)
    checkpoint = {
        **checkpoint_request(run.request),
        **work,
        "usage": usage.as_dict(),
        "usage_estimated": run.usage_estimated or in_flight is not None,
        "continuations": run.record.continuations,
        "elapsed_ms": run.elapsed_ms(),
        "calls": run.record.details.get("calls", []),
    }
    held = await generation_run_checkpoint_async(
        run_id=run.run_id, lease_owner=run.lease_owner, checkpoint=checkpoint
    )
    if not held:
        raise RunTakenOver("another server process took this run over")


class NotResumable(Exception):
    """A run's checkpoint holds nothing to resume from (or not what a resume needs)."""


@dataclass(frozen=True)
class ResumePoint:
    """The finished work of an orphaned run, read back from its checkpoint."""

    request: GenerationRequest
    mode: str
    # Parallel mode: the outline (as the model wrote it) and the finished scenes by index.
    outline: dict[str, Any] | None = None
    # Single mode: the header (title, logline, characters) and the complete scenes, in order.
    header: dict[str, Any] = field(default_factory=dict)
    scenes: dict[int, dict[str, Any]] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    usage_estimated: bool = False
    continuations: int = 0
    elapsed_ms: int = 0
    calls: list[Any] = field(default_factory=list)

    def restore(self, run: Run) -> None:
        """Carry the usage, continuations and call log paid for before the resume into ``run``."""
        run.usage.add(self.usage)
        run.usage_estimated = self.usage_estimated
        run.record.continuations = self.continuations
        run.record.details["calls"] = list(self.calls)


def resume_point(*, checkpoint: Any, mode: str) -> ResumePoint:
    """The checkpoint of a run, checked; raises NotResumable saying why it cannot be resumed."""
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("request"), dict):
        raise NotResumable("its request was not recorded (a scene rewrite, or a run from before resume)")
    try:
        request = GenerationRequest(**checkpoint["request"])
        point = ResumePoint(
            request=request,
            mode=mode,
            outline=checkpoint.get("outline"),
            header=dict(checkpoint.get("header") or {}),
            scenes={int(index): scene for index, scene in _scenes(checkpoint.get("scenes"))},
            usage=Usage(**checkpoint.get("usage", {})),
            usage_estimated=bool(checkpoint.get("usage_estimated")),
            continuations=int(checkpoint.get("continuations", 0)),
            elapsed_ms=int(checkpoint.get("elapsed_ms", 0)),
            calls=list(checkpoint.get("calls") or []),
        )
    except (TypeError, ValueError) as error:
        raise NotResumable(f"its checkpoint cannot be read ({error})") from None
    if mode == GenerationRun.Mode.PARALLEL and not isinstance(point.outline, dict):
        raise NotResumable("it stopped before its outline was finished")
    if mode == GenerationRun.Mode.SINGLE and not point.scenes:
        raise NotResumable("it stopped before its first scene was complete")
    return point


def _scenes(scenes: Any) -> list[tuple[Any, Any]]:
    # Parallel mode keeps {"index": scene} (scenes finish in any order); single mode a list, in order.
    if isinstance(scenes, dict):
        return list(scenes.items())
    return list(enumerate(scenes)) if isinstance(scenes, list) else []

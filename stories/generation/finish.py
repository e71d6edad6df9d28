"""The end of a run that wrote its screenplay: the contract check, then the save (or, unsaved, the record).

Shared by a run started here (stories.generation.pipeline) and a run resumed from its checkpoint
(stories.generation.resume): both end the same way, in the one-transaction save.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator
from typing import Any, TypeVar

from django.urls import NoReverseMatch, reverse

from stories.errors import GenerationError
from stories.generation.run import Run
from stories.generation.validation import cast_entries, characters_merged, screenplay_validate
from stories.models import GenerationRun
from stories.services import RunRecord, ScreenplayDraft, generation_run_finish, screenplay_version_create
from storyproject.db import db_call, db_started

logger = logging.getLogger(__name__)
_T = TypeVar("_T")


async def seen_through(work: asyncio.Future[_T]) -> _T:
    """The result of work in a worker thread, which no cancel can stop, waited for through every cancel.

    A cancel often comes twice (``cancel``, then the socket's disconnect); each is absorbed here, so
    what the thread did (a run admitted, a version saved) is known and recorded as it is.
    """
    while True:
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            if work.cancelled():
                raise


async def run_finish(run: Run, content: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
    """Check the screenplay and save it (``saved``, ``done``), or record it unsaved (``done``)."""
    finish = _save if run.request.save else _finish_unsaved
    async for event in finish(run, content):
        yield event


async def _finish_unsaved(run: Run, content: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
    """A run that saves nothing (``request.save`` False): checked like any, kept with its screenplay."""
    screenplay_validate(content=content, persona_names=_personas_allowed(run.request, content))
    record = run.record_final()
    await db_call(generation_run_finish)(
        run_id=run.run_id,
        status=GenerationRun.Status.SUCCEEDED,
        record=record,
        raw_text=json.dumps(content, ensure_ascii=False),
        lease_owner=run.lease_owner or None,
    )
    yield run.done_event()


def _personas_allowed(request: Any, content: dict[str, Any]) -> list[str]:
    """The personas the screenplay may name: those chosen, and for a scene rewrite those its version's
    characters name (the rewrite keeps them as the writer saved them: stories.generation.parallel's
    ``_assemble``), one deactivated or deleted since included; only those chosen are cast."""
    if request.rewrite is None:
        return list(request.personas)
    named = [c.get("persona") for c in content.get("characters", []) if isinstance(c, dict)]
    return list(dict.fromkeys([*request.personas, *(n for n in named if isinstance(n, str))]))


async def _save(run: Run, content: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
    request = run.request
    screenplay_validate(content=content, persona_names=_personas_allowed(request, content))
    content = characters_merged(content)
    cast = cast_entries(content["characters"], request.personas)
    draft = ScreenplayDraft(
        title=request.title,
        plot=request.plot,
        content=content,
        model=run.model,
        max_tokens=run.max_tokens,
        cast=cast,
        story_id=request.story_id,
        rewrite=request.rewrite,
    )
    record = run.record_final()
    save = db_started(_version_save, run=run, draft=draft, record=record)
    try:
        version = await asyncio.shield(save)
    except asyncio.CancelledError:
        # The save is one transaction already under way: let it finish rather than tear it, and
        # report what was saved. The cancel arrived too late to stop anything.
        version = await seen_through(save)
        task = asyncio.current_task()
        while task is not None and task.cancelling():
            task.uncancel()
    yield {
        "type": "saved",
        "run_id": run.run_id,
        "story_id": version.story_id,
        "version": version.number,
        "url": _story_url(version.story_id),
        "cast_dropped": record.details.get("cast_dropped", []),
    }
    yield run.done_event()


def _version_save(*, run: Run, draft: ScreenplayDraft, record: RunRecord) -> Any:
    try:
        return screenplay_version_create(
            user_id=run.user_id,
            draft=draft,
            run_id=run.run_id,
            record=record,
            lease_owner=run.lease_owner or None,
        )
    except GenerationError:
        raise
    except Exception as error:
        logger.exception("saving run %s failed", run.run_id)
        raise GenerationError("save_failed", "the screenplay could not be saved; please try again") from error


def _story_url(story_id: int) -> str:
    try:
        return reverse("stories:story-detail", args=[story_id])
    except NoReverseMatch:
        return f"/stories/{story_id}/"

"""Parallel mode: write a short outline, then every scene at once, then assemble them in outline order.

One of the pipeline's two writing strategies (stories.generation.run.Writer), chosen when a request says
``"mode": "parallel"``; admission, the run record, validation and the one atomic save stay the
pipeline's. Here:

1. One streamed outline call (``outline_delta`` events, then one ``outline`` event once it parses).
2. One call per scene, at most ``STORY_PARALLEL_CONCURRENCY`` at a time (``scene_delta`` and ``scene``
   events carrying the scene's index, in whatever order the scenes finish; parallel_scenes).
3. A failed scene is retried on its own, a bounded number of times (``scene_retry`` tells the client
   to clear that scene). A 429 halves the concurrency instead of failing the run; successful calls
   raise it again step by step (AdaptiveLimiter).
   A scene that still fails fails the generation, naming the scene; the other calls are cancelled.
   Closing this generator (cancel, disconnect) cancels every outstanding call at once.

Every call, retries included, is recorded in ``GenerationRun.details["calls"]`` with its usage.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

from django.conf import settings

from stories.errors import GenerationError
from stories.generation.backends.base import Brief, ModelCall
from stories.generation.backends.registry import backend_for_model
from stories.generation.checkpoint import ResumePoint, checkpoint_save
from stories.generation.limiter import AdaptiveLimiter
from stories.generation.outline import (
    Outline,
    outline_from_screenplay,
    outline_parse,
    parallel_step_schema,
)
from stories.generation.parallel_continue import part_continue_prompt, part_parse, part_stitch
from stories.generation.parallel_prompt import parallel_prompt_outline
from stories.generation.parallel_scenes import FanOut, scenes_write
from stories.generation.prompt import PersonaContextLike
from stories.generation.run import CallResult, Run, call_log, call_text, ms_since, reply_read
from stories.models import GenerationRun


@dataclass(frozen=True)
class SceneEdit:
    """Rewrite one scene of a saved version: its content (the context), which scene, and how."""

    content: dict[str, Any]
    version: int
    index: int
    instructions: str = ""


async def parallel_write(
    run: Run,
    *,
    contexts: Sequence[PersonaContextLike],
    brief: Brief,
    content: dict[str, Any],
    edit: SceneEdit | None = None,
    resume: ResumePoint | None = None,
) -> AsyncGenerator[dict[str, Any], None]:
    """Yield the events of an outline and its scenes; fill ``content`` with the assembled screenplay.

    With ``resume`` (a run taken over from a dead process) the checkpointed outline and scenes are
    kept and only the missing scenes are written; the ``resumed`` event has announced them already.
    """
    # The model's whole part of the run, outline to last scene: the calls overlap, so their own times
    # do not add up to it (single mode adds its one call's, run.record.llm_ms).
    started = time.monotonic()
    try:
        async with aclosing(_parallel_events(run, contexts, brief, content, edit, resume)) as events:
            async for event in events:
                yield event
    finally:
        run.record.llm_ms = (run.record.llm_ms or 0) + ms_since(started)


async def _parallel_events(
    run: Run,
    contexts: Sequence[PersonaContextLike],
    brief: Brief,
    content: dict[str, Any],
    edit: SceneEdit | None,
    resume: ResumePoint | None,
) -> AsyncGenerator[dict[str, Any], None]:
    details = run.record.details
    details.update({"mode": GenerationRun.Mode.PARALLEL.value, "calls": details.get("calls", [])})
    if edit is not None:
        outline = outline_from_screenplay(content=edit.content)
        details.update(regenerated_scene=edit.index, base_version=edit.version)
    elif resume is not None:
        outline = outline_parse(document=resume.outline, persona_names=run.request.personas)
    else:
        holder: list[Outline] = []
        async with aclosing(_outline_write(run, contexts, brief, holder)) as events:
            async for event in events:
                yield event
        outline = holder[0]
        await _checkpoint(run, outline, {})
    if resume is None:
        yield {"type": "outline", "outline": outline.as_dict(), "scenes": _placeholders(outline)}
    scenes: dict[int, dict[str, Any]] = dict(resume.scenes) if resume else {}
    indices = [edit.index] if edit else [i for i in range(len(outline.scenes)) if i not in scenes]
    if indices:
        async with aclosing(_scenes_events(run, contexts, brief, outline, edit, indices, scenes)) as events:
            async for event in events:
                yield event
    content.update(_assemble(outline, scenes, run.request.title, edit))


async def _scenes_events(
    run: Run,
    contexts: Sequence[PersonaContextLike],
    brief: Brief,
    outline: Outline,
    edit: SceneEdit | None,
    indices: list[int],
    scenes: dict[int, dict[str, Any]],
) -> AsyncGenerator[dict[str, Any], None]:
    """The scene calls' events; each finished scene is checkpointed before its ``scene`` event goes out."""
    fan = FanOut(
        scene_done=None if edit else _scene_checkpointer(run, outline, scenes),
        run=run,
        contexts=contexts,
        brief=brief,
        outline=outline,
        instructions=edit.instructions if edit else "",
        first_index=indices[0],
        limiter=AdaptiveLimiter(settings.STORY_PARALLEL_CONCURRENCY),
        unfinished=len(indices),
        output_before=run.usage.output_tokens,
    )
    try:
        async with aclosing(scenes_write(fan, indices, scenes)) as events:
            async for event in events:
                yield event
    finally:
        # Recorded whatever the outcome: a failed or cancelled run's concurrency matters as much.
        run.record.details["concurrency"] = {
            "configured": settings.STORY_PARALLEL_CONCURRENCY,
            "final": fan.limiter.limit,
            "max_active": fan.limiter.max_active,
        }


def _scene_checkpointer(
    run: Run, outline: Outline, kept: dict[int, dict[str, Any]]
) -> Callable[[int, dict[str, Any]], Awaitable[None]]:
    """Checkpoint each finished scene with every scene finished so far, one write at a time (the last
    write always holds them all, whatever order the scene tasks get the lock in)."""
    finished, lock = dict(kept), asyncio.Lock()

    async def scene_done(index: int, scene: dict[str, Any]) -> None:
        finished[index] = scene
        async with lock:
            await _checkpoint(run, outline, finished)

    return scene_done


async def _checkpoint(run: Run, outline: Outline, scenes: dict[int, dict[str, Any]]) -> None:
    work = {"outline": outline.as_dict(), "scenes": {str(index): scene for index, scene in scenes.items()}}
    await checkpoint_save(run, work)


def _placeholders(outline: Outline) -> list[dict[str, Any]]:
    return [{"index": i, "heading": scene.heading} for i, scene in enumerate(outline.scenes)]


# --- 1. The outline -------------------------------------------------------------------------


async def _outline_write(
    run: Run, contexts: Sequence[PersonaContextLike], brief: Brief, holder: list[Outline]
) -> AsyncGenerator[dict[str, Any], None]:
    request = run.request
    prompt = run.prompt_timed(
        lambda: parallel_prompt_outline(
            contexts=contexts,
            plot=request.plot,
            title=request.title,
            rules=run.rules,
            scenes_hint=None,
            model=run.model,
        )
    )
    sofar: dict[str, Any] | None = None
    call_prompt = prompt
    while True:
        call = ModelCall(
            model=run.model,
            max_tokens=_outline_budget(run, continuation=sofar is not None),
            system=call_prompt.system,
            messages=call_prompt.messages,
            output_schema=parallel_step_schema(),
            brief=replace(brief, task="outline", continue_after=len(sofar["scenes"]) if sofar else 0),
        )
        result = CallResult()
        log = call_log(run, task="outline", index=None, attempt=0)
        async with aclosing(call_text(run, backend_for_model(run.model), call, result, log)) as texts:
            async for text in texts:
                yield {"type": "outline_delta", "text": text}
        assert result.finished is not None
        with reply_read(log):
            if result.finished.stop_reason != "max_tokens":
                holder.append(_outline_from_text(run, result.text, sofar))
                return
            run.record.continuations += 1
            sofar = part_stitch(sofar, result.text, part="outline")
        call_prompt = part_continue_prompt(prompt=prompt, sofar=sofar, part="outline")


def _outline_budget(run: Run, *, continuation: bool) -> int:
    """The outline call's max_tokens; a continuation only within the run's limits, like single mode's."""
    used = run.usage.output_tokens
    if continuation and (run.record.continuations > settings.STORY_MAX_CONTINUATIONS or run.text_left() <= 0):
        raise GenerationError(
            "invalid_output",
            f"the outline did not fit in {used} output tokens and {run.record.continuations - 1} "
            "continuations; raise max_tokens or shorten the plot",
        )
    return min(run.max_tokens, run.text_left()) if continuation else run.first_call_budget()


def _outline_from_text(run: Run, text: str, sofar: dict[str, Any] | None) -> Outline:
    document = part_parse(text, part="outline", sofar=sofar, what="the model's outline")
    return outline_parse(document=document, persona_names=run.request.personas)


# --- 3. Assembly ------------------------------------------------------------------------------


def _assemble(
    outline: Outline, scenes: dict[int, dict[str, Any]], title: str, edit: SceneEdit | None
) -> dict[str, Any]:
    """The screenplay in outline order, whatever order the scenes finished in."""
    if edit is not None:
        content = copy.deepcopy(edit.content)
        content["scenes"][edit.index] = scenes[edit.index]
        return content
    document: dict[str, Any] = {"title": (title or outline.title)[:200]}
    if outline.logline:
        document["logline"] = outline.logline
    document["characters"] = [dict(character) for character in outline.characters]
    document["scenes"] = [scenes[index] for index in range(len(outline.scenes))]
    return document

"""Parallel mode's scene calls: every scene of the outline at once, each retried on its own.

At most ``STORY_PARALLEL_CONCURRENCY`` calls run at a time (AdaptiveLimiter: a 429 halves it instead
of failing the run). The first scene starts alone and the rest wait for its first words: by then its
prompt prefix (instructions, personas, outline) is in Anthropic's prompt cache, when it is long enough
to be cached at all (stories.generation.cache_rules), so every other call reads it instead of writing
it again. A scene that still fails after its retries fails the generation, naming the scene; closing
the fan-out cancels every outstanding call at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any

from django.conf import settings
from django.db import DatabaseError

from stories.errors import GenerationError, ModelStoppedShort, database_failure
from stories.generation.backends.base import Brief, CallFinished, ModelCall
from stories.generation.backends.registry import backend_for_model
from stories.generation.limiter import AdaptiveLimiter
from stories.generation.outline import Outline, parallel_step_schema, scene_check
from stories.generation.parallel_continue import part_continue_prompt, part_parse, part_stitch
from stories.generation.parallel_prompt import parallel_prompt_scene
from stories.generation.prompt import PersonaContextLike, Prompt
from stories.generation.retry import backoff_seconds, retry_after_too_long
from stories.generation.run import CallResult, Run, call_log, call_text, reply_read
from storyproject.bidi import bidi_isolated
from storyproject.tokens import token_estimate

logger = logging.getLogger(__name__)

# A scene's retry waits at most this long, whatever retry-after says: the other scenes are waiting.
_BACKOFF_CAP_SECONDS = 10.0
# How long closing the fan-out waits for its cancelled calls to hang up.
_CANCEL_WAIT_SECONDS = 1.0


@dataclass
class FanOut:
    """Everything the scene calls of one run share."""

    run: Run
    contexts: Sequence[PersonaContextLike]
    brief: Brief
    outline: Outline
    instructions: str
    first_index: int
    limiter: AdaptiveLimiter
    queue: asyncio.Queue[tuple[str, int, Any]] = field(default_factory=asyncio.Queue)
    primed: asyncio.Event = field(default_factory=asyncio.Event)
    live: dict[int, str] = field(default_factory=dict)
    # The run's output cap, shared by the scene calls: what calls in flight may still write, how many
    # scenes have no result yet, and how many of those have a call in flight.
    reserved: int = 0
    unfinished: int = 0
    in_flight: int = 0
    # The run's output before the first scene call (the outline's, a resumed run's kept scenes').
    output_before: int = 0
    # Called with each finished scene before its ``scene`` event is queued (the run's checkpoint), in
    # the scene's own task: the events of the other scenes flow on meanwhile.
    scene_done: Callable[[int, dict[str, Any]], Awaitable[None]] | None = None

    def emit(self, index: int, event: dict[str, Any]) -> None:
        self.queue.put_nowait(("event", index, event))


class OutputCapReached(GenerationError):
    """The run's output cap leaves too little for a scene: retrying cannot help."""


async def scenes_write(
    fan: FanOut, indices: list[int], scenes: dict[int, dict[str, Any]]
) -> AsyncGenerator[dict[str, Any], None]:
    """Run every scene's task; yield their events as they come; fail at the first scene that fails."""
    tasks = [asyncio.create_task(_scene_task(fan, index), name=f"scene-{index}") for index in indices]
    remaining = set(indices)
    try:
        while remaining:
            kind, index, payload = await fan.queue.get()
            if kind == "failed":
                raise payload
            if kind == "scene":
                remaining.discard(index)
                scenes[index] = payload
                fan.run.record.details.setdefault("first_scene_ms", fan.run.elapsed_ms())
                yield {"type": "scene", "index": index, "scene": payload}
            else:
                yield payload
            progress = _progress(fan, remaining, written=len(indices) - len(remaining))
            if progress is not None:
                yield progress
    finally:
        await _cancel_all(tasks)


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        # Each cancelled task closes its HTTP stream as it unwinds; this is quick.
        await asyncio.wait(pending, timeout=_CANCEL_WAIT_SECONDS)


async def _scene_task(fan: FanOut, index: int) -> None:
    """One scene, retries included; its outcome goes to the queue (a task's exception would be lost)."""
    try:
        scene = await _scene_write(fan, index)
        if fan.scene_done is not None:
            await fan.scene_done(index, scene)
    except GenerationError as error:
        fan.queue.put_nowait(("failed", index, error))
    except DatabaseError as error:
        # The scene's checkpoint could not be written (the database gone mid-run): said to be the
        # database's doing, as the pipeline says it, not "scene N failed unexpectedly" (not retryable).
        logger.warning("run %s: scene %s could not be checkpointed: %s", fan.run.run_id, index, error)
        fan.queue.put_nowait(("failed", index, database_failure(fan.run.run_id, error)))
    except Exception:
        logger.exception("run %s: scene %s failed unexpectedly", fan.run.run_id, index)
        unexpected = GenerationError("llm_unavailable", f"scene {index + 1} failed unexpectedly")
        fan.queue.put_nowait(("failed", index, unexpected))
    else:
        fan.queue.put_nowait(("scene", index, scene))
    finally:
        if index == fan.first_index:
            fan.primed.set()


async def _scene_write(fan: FanOut, index: int) -> dict[str, Any]:
    failures = rate_limits = 0
    while True:
        try:
            return await _scene_attempt(fan, index, attempt=failures + rate_limits)
        except GenerationError as error:
            if isinstance(error, OutputCapReached) or not _worth_retrying(error):
                # A spend limit, a bad key, an invalid request, x-should-retry: false: never again.
                raise _scene_failed(fan.outline, index, error) from error
            if retry_after_too_long(error.retry_after, cap_seconds=_BACKOFF_CAP_SECONDS):
                # A retry sooner than the server's retry-after is refused again (retry.py).
                raise _scene_failed(fan.outline, index, error) from error
            if error.code == "llm_rate_limited" and rate_limits < settings.STORY_PARALLEL_RATE_LIMIT_RETRIES:
                rate_limits += 1
                fan.limiter.reduce()
            elif failures < settings.STORY_PARALLEL_SCENE_RETRIES:
                failures += 1
            else:
                raise _scene_failed(fan.outline, index, error) from error
            attempt = failures + rate_limits
            fan.live.pop(index, None)
            logger.info("run %s: scene %s attempt %s failed: %s", fan.run.run_id, index, attempt, error)
            fan.emit(index, {"type": "scene_retry", "index": index, "attempt": attempt, "code": error.code})
            await asyncio.sleep(
                backoff_seconds(attempt - 1, error.retry_after, cap_seconds=_BACKOFF_CAP_SECONDS)
            )


def _worth_retrying(error: GenerationError) -> bool:
    # A scene that came out invalid is worth another try: it is one short, independent call; not one the
    # model ended early for a reason another try meets again.
    return error.retryable or (error.code == "invalid_output" and not isinstance(error, ModelStoppedShort))


def _scene_failed(outline: Outline, index: int, error: GenerationError) -> GenerationError:
    heading = outline.scenes[index].heading
    # Once: a message that says it already (a reply stopped short) was "...; nothing was saved; nothing was saved".
    said = error.message.removesuffix("; nothing was saved")
    return error.reworded(
        f"scene {index + 1} ({bidi_isolated(heading[:80])}) failed: {said}; nothing was saved"
    )


async def _scene_attempt(fan: FanOut, index: int, *, attempt: int) -> dict[str, Any]:
    if index != fan.first_index:
        # Wait for the first scene's first words: its prompt prefix is cached by then (if long enough).
        await fan.primed.wait()
    async with fan.limiter.slot() as epoch:
        try:
            allowance = _output_allowance(fan)
            # What the call may write: its text's max_tokens and its thinking reserve.
            fan.reserved += allowance + fan.run.thinking_reserve
            fan.in_flight += 1
            try:
                scene = await _scene_stream(fan, index, attempt, allowance)
            finally:
                # After the call's usage was added to the run (by run.call_text).
                fan.reserved -= allowance + fan.run.thinking_reserve
                fan.in_flight -= 1
        finally:
            if index == fan.first_index:
                fan.primed.set()
        fan.unfinished -= 1
        fan.limiter.succeeded(epoch)
        return scene


def _output_allowance(fan: FanOut) -> int:
    """This call's max_tokens: at most the run's, and at most a fair share of what the cap leaves.

    ``STORY_MAX_TOTAL_OUTPUT_TOKENS`` bounds the whole run, outline, scenes and retries together, as it
    bounds a single-pass run with its continuations: what finished calls wrote and what calls in flight
    may still write are taken off, and the rest is shared by the scenes still waiting for a call. A
    call's share holds its thinking reserve too (``Run.thinking_reserve``): its text gets the rest.
    """
    waiting = max(fan.unfinished - fan.in_flight, 1)
    share = (fan.run.output_left() - fan.reserved) // waiting
    allowance = min(fan.run.max_tokens, share - fan.run.thinking_reserve)
    return _allowance_checked(allowance, "; ask for fewer scenes or a shorter screenplay")


def _allowance_checked(allowance: int, advice: str) -> int:
    if allowance < settings.STORY_MIN_MAX_TOKENS:
        cap = settings.STORY_MAX_TOTAL_OUTPUT_TOKENS
        raise OutputCapReached(
            "invalid_output",
            f"only {max(allowance, 0)} output tokens are left for it under the run's cap of {cap} "
            f"(STORY_MAX_TOTAL_OUTPUT_TOKENS){advice}",
        )
    return allowance


async def _scene_stream(fan: FanOut, index: int, attempt: int, max_tokens: int) -> dict[str, Any]:
    """One scene: its call, and continuations while the output limit cuts it off (parallel_continue)."""
    run = fan.run
    prompt = run.prompt_timed(
        lambda: parallel_prompt_scene(
            contexts=fan.contexts,
            plot=run.request.plot,
            rules=run.rules,
            outline=fan.outline,
            index=index,
            instructions=fan.instructions,
            model=run.model,
        )
    )
    call_prompt, budget, sofar = prompt, max_tokens, None
    continuations = 0
    while True:
        kept = len(sofar["elements"]) if sofar else 0
        text, finished, log = await _scene_call(fan, index, attempt, call_prompt, budget, kept)
        with reply_read(log):
            if finished.stop_reason != "max_tokens":
                fan.live.pop(index, None)
                return _scene_from_text(fan, index, text, sofar)
            if continuations >= settings.STORY_MAX_CONTINUATIONS:
                raise GenerationError(
                    "invalid_output",
                    f"scene {index + 1} did not fit in max_tokens and {continuations} continuations",
                )
            sofar = part_stitch(sofar, text, part="scene")
        continuations += 1
        run.record.continuations += 1
        # Its own reservation (text and thinking reserve) is spent by now, the other calls' are not:
        # this continuation's text and reserve fit in what they leave.
        budget = _allowance_checked(min(max_tokens, run.output_left() - (fan.reserved - max_tokens)), "")
        call_prompt = part_continue_prompt(prompt=prompt, sofar=sofar, part="scene")


async def _scene_call(
    fan: FanOut, index: int, attempt: int, prompt: Prompt, max_tokens: int, kept: int
) -> tuple[str, CallFinished, dict[str, Any]]:
    run = fan.run
    call = ModelCall(
        model=run.model,
        max_tokens=max_tokens,
        system=prompt.system,
        messages=prompt.messages,
        output_schema=parallel_step_schema(),
        brief=replace(
            fan.brief,
            task="scene",
            scene_index=index,
            outline=fan.outline.as_dict(),
            instructions=fan.instructions,
            continue_after=kept,
        ),
        # Retries are ours (per scene, and a 429 lowers the concurrency), not the back-end's.
        max_retries=0,
    )
    result = CallResult()
    log = call_log(run, task="scene", index=index, attempt=attempt)
    async with aclosing(call_text(run, backend_for_model(run.model), call, result, log)) as texts:
        async for text in texts:
            if index == fan.first_index:
                fan.primed.set()
            fan.live[index] = fan.live.get(index, "") + text
            fan.emit(index, {"type": "scene_delta", "index": index, "text": text})
    assert result.finished is not None
    return result.text, result.finished, log


def _scene_from_text(fan: FanOut, index: int, text: str, sofar: dict[str, Any] | None) -> dict[str, Any]:
    document = part_parse(text, part="scene", sofar=sofar, what=f"scene {index + 1}")
    return scene_check(document=document, outline=fan.outline, index=index)


def _progress(fan: FanOut, remaining: set[int], *, written: int) -> dict[str, Any] | None:
    """``written``: the scenes this fan-out has written; the others done were kept (a rewrite keeps
    every scene but one, a resumed run those of its checkpoint) and say nothing of this run's pace."""
    run = fan.run
    live_tokens = sum(token_estimate(text) for text in fan.live.values())
    done = len(fan.outline.scenes) - len(remaining)
    # Scenes written so far say how long one is; those still to write run side by side.
    output_tokens = run.usage.output_tokens - fan.output_before + live_tokens
    per_scene = (output_tokens / written) if written else run.pace.expected_output_tokens / 8
    waves = -(-len(remaining) // max(fan.limiter.limit, 1))
    return run.progress(
        live_tokens=live_tokens,
        remaining_tokens=per_scene * waves - live_tokens / max(len(fan.live), 1),
        streams=fan.limiter.limit,
        scenes_done=done,
        scenes_total=len(fan.outline.scenes),
    )

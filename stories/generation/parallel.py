"""Parallel mode: write a short outline, then every scene at once, then assemble them in outline order.

The pipeline (stories.generation.pipeline) runs this in place of its single streamed call when a request
says ``"mode": "parallel"``; admission, the run record, validation and the one atomic save stay the
pipeline's. Here:

1. One streamed outline call (``outline_delta`` events, then one ``outline`` event once it parses).
2. One call per scene, at most ``STORY_PARALLEL_CONCURRENCY`` at a time (``scene_delta`` and ``scene``
   events carrying the scene's index, in whatever order the scenes finish). The first scene starts
   alone and the rest wait for its first words: by then its prompt prefix (instructions, personas,
   outline) is in Anthropic's prompt cache, when it is long enough to be cached at all
   (stories.generation.cache_rules), so every other call reads it instead of writing it again.
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
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings

from stories.generation.backends.base import (
    Brief,
    CallFinished,
    GenerationBackend,
    ModelCall,
    Usage,
    UsageReport,
    backend_for_model,
)
from stories.generation.errors import GenerationError
from stories.generation.outline import (
    Outline,
    outline_from_screenplay,
    outline_parse,
    parallel_step_schema,
    scene_check,
    step_part,
)
from stories.generation.parallel_continue import part_continue_prompt, part_merge, part_stitch
from stories.generation.parallel_prompt import parallel_prompt_outline, parallel_prompt_scene
from stories.generation.prompt import PersonaContextLike, Prompt
from stories.generation.stream import screenplay_text_parse
from stories.generation.tokens import token_estimate

if TYPE_CHECKING:
    from stories.generation.pipeline import _Run

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL_SECONDS = 0.25
_BACKOFF_BASE_SECONDS = 0.5
_BACKOFF_CAP_SECONDS = 10.0
# How long closing the fan-out waits for its cancelled calls to hang up.
_CANCEL_WAIT_SECONDS = 1.0


@dataclass(frozen=True)
class SceneEdit:
    """Rewrite one scene of a saved version: its content (the context), which scene, and how."""

    content: dict[str, Any]
    version: int
    index: int
    instructions: str = ""


class AdaptiveLimiter:
    """A semaphore whose limit moves while it is in use (additive increase, multiplicative decrease).

    A 429 halves the limit (never below one). Each time as many calls as the current limit have
    succeeded since, counting only calls that started after the last 429, the limit grows by one, back
    up to the configured concurrency: a brief rate limit does not slow the rest of a long run.
    The slot is given back synchronously, so even a task that is being cancelled returns it.
    """

    def __init__(self, limit: int) -> None:
        self.ceiling = self.limit = max(limit, 1)
        self.active = 0
        self.max_active = 0
        self._epoch = 0  # one more after every 429
        self._successes = 0
        self._waiters: list[asyncio.Future[None]] = []

    def reduce(self) -> None:
        self.limit = max(self.limit // 2, 1)
        self._epoch += 1
        self._successes = 0

    def succeeded(self, epoch: int) -> None:
        """A call that held a slot taken in ``epoch`` (what ``slot()`` yielded) finished well."""
        if epoch != self._epoch or self.limit >= self.ceiling:
            return  # it started before the last 429: it says nothing about the lowered limit
        self._successes += 1
        if self._successes >= self.limit:
            self.limit += 1
            self._successes = 0
            self._wake()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[int]:
        while self.active >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        # No await between the check above and this line: the slot cannot be taken twice.
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            yield self._epoch
        finally:
            self.active -= 1
            self._wake()

    def _wake(self) -> None:
        # Every waiter re-checks the (possibly changed) limit; there are at most a few dozen.
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()


@dataclass
class _FanOut:
    """Everything the scene calls of one run share."""

    run: _Run
    backend: GenerationBackend
    contexts: Sequence[PersonaContextLike]
    brief: Brief
    rules: str
    outline: Outline
    instructions: str
    first_index: int
    limiter: AdaptiveLimiter
    queue: asyncio.Queue[tuple[str, int, Any]] = field(default_factory=asyncio.Queue)
    primed: asyncio.Event = field(default_factory=asyncio.Event)
    live: dict[int, str] = field(default_factory=dict)
    last_progress_at: float = 0.0
    # The run's output cap, shared by the scene calls: what calls in flight may still write, how many
    # scenes have no result yet, and how many of those have a call in flight.
    reserved: int = 0
    unfinished: int = 0
    in_flight: int = 0

    def emit(self, index: int, event: dict[str, Any]) -> None:
        self.queue.put_nowait(("event", index, event))


async def parallel_write(
    run: _Run,
    *,
    contexts: Sequence[PersonaContextLike],
    brief: Brief,
    rules: str,
    content: dict[str, Any],
    edit: SceneEdit | None = None,
) -> AsyncGenerator[dict[str, Any], None]:
    """Yield the events of an outline and its scenes; fill ``content`` with the assembled screenplay."""
    backend = backend_for_model(run.model)
    details = run.record.details
    details.update({"mode": "parallel", "calls": []})
    if edit is None:
        holder: list[Outline] = []
        async with aclosing(_outline_write(run, backend, contexts, brief, rules, holder)) as events:
            async for event in events:
                yield event
        outline = holder[0]
    else:
        outline = outline_from_screenplay(content=edit.content)
        details["regenerated_scene"] = edit.index
        details["base_version"] = edit.version
    yield {"type": "outline", "outline": outline.as_dict(), "scenes": _placeholders(outline)}
    indices = list(range(len(outline.scenes))) if edit is None else [edit.index]
    fan = _FanOut(
        run=run,
        backend=backend,
        contexts=contexts,
        brief=brief,
        rules=rules,
        outline=outline,
        instructions=edit.instructions if edit else "",
        first_index=indices[0],
        limiter=AdaptiveLimiter(settings.STORY_PARALLEL_CONCURRENCY),
        unfinished=len(indices),
    )
    scenes: dict[int, dict[str, Any]] = {}
    try:
        async with aclosing(_fan_out(fan, indices, scenes)) as events:
            async for event in events:
                yield event
    finally:
        # Recorded whatever the outcome: a failed or cancelled run's concurrency matters as much.
        details["concurrency"] = {
            "configured": settings.STORY_PARALLEL_CONCURRENCY,
            "final": fan.limiter.limit,
            "max_active": fan.limiter.max_active,
        }
    content.update(_assemble(outline, scenes, run.request.title, edit))


def _placeholders(outline: Outline) -> list[dict[str, Any]]:
    return [{"index": i, "heading": scene.heading} for i, scene in enumerate(outline.scenes)]


# --- 1. The outline -------------------------------------------------------------------------


async def _outline_write(
    run: _Run,
    backend: GenerationBackend,
    contexts: Sequence[PersonaContextLike],
    brief: Brief,
    rules: str,
    holder: list[Outline],
) -> AsyncGenerator[dict[str, Any], None]:
    prompt = parallel_prompt_outline(
        contexts=contexts,
        plot=run.request.plot,
        title=run.request.title,
        rules=rules,
        scenes_hint=None,
        model=run.model,
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
            brief=brief,
            task="outline",
            continue_after=len(sofar["scenes"]) if sofar else 0,
        )
        result: list[tuple[str, CallFinished]] = []
        async with aclosing(_outline_call(run, backend, call, result)) as events:
            async for event in events:
                yield event
        text, finished = result[0]
        if finished.stop_reason != "max_tokens":
            holder.append(_outline_from_text(run, text, sofar))
            return
        run.record.continuations += 1
        sofar = part_stitch(sofar, text, part="outline")
        call_prompt = part_continue_prompt(prompt=prompt, sofar=sofar, part="outline")


def _outline_budget(run: _Run, *, continuation: bool) -> int:
    """The outline call's max_tokens; a continuation only within the run's limits, like single mode's."""
    used, cap = run.usage.output_tokens, settings.STORY_MAX_TOTAL_OUTPUT_TOKENS
    if continuation and (run.record.continuations > settings.STORY_MAX_CONTINUATIONS or used >= cap):
        raise GenerationError(
            "invalid_output",
            f"the outline did not fit in {used} output tokens and {run.record.continuations - 1} "
            "continuations; raise max_tokens or shorten the plot",
        )
    return max(min(run.max_tokens, cap - used), 1)


async def _outline_call(
    run: _Run, backend: GenerationBackend, call: ModelCall, result: list[tuple[str, CallFinished]]
) -> AsyncGenerator[dict[str, Any], None]:
    """One outline call: stream its text as outline_delta events; put its text and finish in ``result``."""
    log = _call_log(run, task="outline", index=None, attempt=0)
    started = time.monotonic()
    texts: list[str] = []
    finished: CallFinished | None = None
    report: UsageReport | None = None
    try:
        async with aclosing(backend.stream(call)) as upstream:  # type: ignore[type-var]
            async for item in upstream:
                if isinstance(item, UsageReport):
                    report = item
                    continue
                if isinstance(item, CallFinished):
                    finished = item
                    continue
                if run.first_token_at is None:
                    run.first_token_at = time.monotonic()
                    run.record.ttft_ms = _ms_since(started)
                    log["ttft_ms"] = run.record.ttft_ms
                texts.append(item.text)
                run.streamed_chars += len(item.text)
                yield {"type": "outline_delta", "text": item.text}
    except GenerationError as error:
        log["status"] = error.code
        raise
    finally:
        _call_close(run, log, started, (finished or report), "".join(texts))
    assert finished is not None
    result.append(("".join(texts), finished))


def _outline_from_text(run: _Run, text: str, sofar: dict[str, Any] | None) -> Outline:
    try:
        document = step_part(document=screenplay_text_parse(text), part="outline")
    except ValueError as error:
        raise GenerationError("invalid_output", f"the model's outline is not valid JSON: {error}") from None
    if sofar is not None:
        document = part_merge(sofar, document, part="outline")
    return outline_parse(document=document, persona_names=run.request.personas)


# --- 2. The scenes ----------------------------------------------------------------------------


async def _fan_out(
    fan: _FanOut, indices: list[int], scenes: dict[int, dict[str, Any]]
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
            progress = _progress(fan, remaining)
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


async def _scene_task(fan: _FanOut, index: int) -> None:
    """One scene, retries included; its outcome goes to the queue (a task's exception would be lost)."""
    try:
        scene = await _scene_write(fan, index)
    except GenerationError as error:
        fan.queue.put_nowait(("failed", index, error))
    except Exception:
        logger.exception("run %s: scene %s failed unexpectedly", fan.run.run_id, index)
        unexpected = GenerationError("llm_unavailable", f"scene {index + 1} failed unexpectedly")
        fan.queue.put_nowait(("failed", index, unexpected))
    else:
        fan.queue.put_nowait(("scene", index, scene))
    finally:
        if index == fan.first_index:
            fan.primed.set()


async def _scene_write(fan: _FanOut, index: int) -> dict[str, Any]:
    failures = rate_limits = 0
    while True:
        try:
            return await _scene_attempt(fan, index, attempt=failures + rate_limits)
        except GenerationError as error:
            if isinstance(error, OutputCapReached):
                raise _scene_failed(fan.outline, index, error) from error
            if not error.retryable and error.code != "invalid_output":
                # A spend limit, a bad key, an invalid request, x-should-retry: false: never again.
                raise _scene_failed(fan.outline, index, error) from error
            if error.code == "llm_rate_limited" and rate_limits < settings.STORY_PARALLEL_RATE_LIMIT_RETRIES:
                rate_limits += 1
                fan.limiter.reduce()
            elif _worth_retrying(error) and failures < settings.STORY_PARALLEL_SCENE_RETRIES:
                failures += 1
            else:
                raise _scene_failed(fan.outline, index, error) from error
            attempt = failures + rate_limits
            fan.live.pop(index, None)
            logger.info("run %s: scene %s attempt %s failed: %s", fan.run.run_id, index, attempt, error)
            fan.emit(index, {"type": "scene_retry", "index": index, "attempt": attempt, "code": error.code})
            await asyncio.sleep(_backoff_seconds(attempt - 1, error.retry_after))


def _worth_retrying(error: GenerationError) -> bool:
    # A scene that came out invalid is worth another try: it is one short, independent call.
    return error.retryable or error.code == "invalid_output"


def _scene_failed(outline: Outline, index: int, error: GenerationError) -> GenerationError:
    heading = outline.scenes[index].heading
    return GenerationError(
        error.code,
        f"scene {index + 1} ({heading[:80]}) failed: {error.message}; nothing was saved",
        retryable=error.retryable,
        retry_after=error.retry_after,
        operator_detail=error.operator_detail,
    )


def _backoff_seconds(attempt: int, retry_after: float | None) -> float:
    cap = min(float(settings.STORY_LLM_RETRY_AFTER_CAP_SECONDS), _BACKOFF_CAP_SECONDS)
    if retry_after is not None and retry_after >= 0:
        return min(retry_after, cap)
    return min(_BACKOFF_BASE_SECONDS * 2**attempt, cap) * random.uniform(0.75, 1.25)


async def _scene_attempt(fan: _FanOut, index: int, *, attempt: int) -> dict[str, Any]:
    if index != fan.first_index:
        # Wait for the first scene's first words: its prompt prefix is cached by then (if long enough).
        await fan.primed.wait()
    async with fan.limiter.slot() as epoch:
        try:
            allowance = _output_allowance(fan, index)
            fan.reserved += allowance
            fan.in_flight += 1
            try:
                scene = await _scene_stream(fan, index, attempt, allowance)
            finally:
                # After the call's usage was added to the run (in _scene_stream).
                fan.reserved -= allowance
                fan.in_flight -= 1
        finally:
            if index == fan.first_index:
                fan.primed.set()
        fan.unfinished -= 1
        fan.limiter.succeeded(epoch)
        return scene


class OutputCapReached(GenerationError):
    """The run's output cap leaves too little for a scene: retrying cannot help."""


def _output_allowance(fan: _FanOut, index: int) -> int:
    """This call's max_tokens: at most the run's, and at most a fair share of what the cap leaves.

    ``STORY_MAX_TOTAL_OUTPUT_TOKENS`` bounds the whole run, outline, scenes and retries together, as it
    bounds a single-pass run with its continuations: what finished calls wrote and what calls in flight
    may still write are taken off, and the rest is shared by the scenes still waiting for a call.
    """
    cap = settings.STORY_MAX_TOTAL_OUTPUT_TOKENS
    left = cap - fan.run.usage.output_tokens - fan.reserved
    waiting = max(fan.unfinished - fan.in_flight, 1)
    allowance = min(fan.run.max_tokens, left // waiting)
    if allowance < settings.STORY_MIN_MAX_TOKENS:
        raise OutputCapReached(
            "invalid_output",
            f"only {max(allowance, 0)} output tokens are left for it under the run's cap of {cap} "
            "(STORY_MAX_TOTAL_OUTPUT_TOKENS); ask for fewer scenes or a shorter screenplay",
        )
    return allowance


async def _scene_stream(fan: _FanOut, index: int, attempt: int, max_tokens: int) -> dict[str, Any]:
    """One scene: its call, and continuations while the output limit cuts it off (parallel_continue)."""
    run = fan.run
    prompt = parallel_prompt_scene(
        contexts=fan.contexts,
        plot=run.request.plot,
        rules=fan.rules,
        outline=fan.outline,
        index=index,
        instructions=fan.instructions,
        model=run.model,
    )
    call_prompt, budget, sofar = prompt, max_tokens, None
    continuations = 0
    while True:
        kept = len(sofar["elements"]) if sofar else 0
        text, finished = await _scene_call(fan, index, attempt, call_prompt, budget, kept)
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
        budget = _scene_continuation_budget(fan, max_tokens)
        call_prompt = part_continue_prompt(prompt=prompt, sofar=sofar, part="scene")


def _scene_continuation_budget(fan: _FanOut, reserved: int) -> int:
    """What the run's cap leaves a scene's continuation: its own reservation is spent, the others' are not."""
    cap = settings.STORY_MAX_TOTAL_OUTPUT_TOKENS
    left = cap - fan.run.usage.output_tokens - (fan.reserved - reserved)
    allowance = min(reserved, left)
    if allowance < settings.STORY_MIN_MAX_TOKENS:
        raise OutputCapReached(
            "invalid_output", f"only {max(allowance, 0)} output tokens are left under the run's cap of {cap}"
        )
    return allowance


async def _scene_call(
    fan: _FanOut, index: int, attempt: int, prompt: Prompt, max_tokens: int, kept: int
) -> tuple[str, CallFinished]:
    run = fan.run
    call = ModelCall(
        model=run.model,
        max_tokens=max_tokens,
        system=prompt.system,
        messages=prompt.messages,
        output_schema=parallel_step_schema(),
        brief=fan.brief,
        task="scene",
        scene_index=index,
        outline=fan.outline.as_dict(),
        instructions=fan.instructions,
        continue_after=kept,
        # Retries are ours (per scene, and a 429 lowers the concurrency), not the back-end's.
        max_retries=0,
    )
    log = _call_log(run, task="scene", index=index, attempt=attempt)
    started = time.monotonic()
    texts: list[str] = []
    finished: CallFinished | None = None
    report: UsageReport | None = None
    try:
        async with aclosing(fan.backend.stream(call)) as upstream:  # type: ignore[type-var]
            async for item in upstream:
                if isinstance(item, UsageReport):
                    report = item
                    continue
                if isinstance(item, CallFinished):
                    finished = item
                    continue
                if not texts:
                    log["ttft_ms"] = _ms_since(started)
                    if index == fan.first_index:
                        fan.primed.set()
                texts.append(item.text)
                fan.live[index] = fan.live.get(index, "") + item.text
                run.streamed_chars += len(item.text)
                fan.emit(index, {"type": "scene_delta", "index": index, "text": item.text})
    except GenerationError as error:
        log["status"] = error.code
        raise
    finally:
        _call_close(run, log, started, (finished or report), "".join(texts))
    assert finished is not None
    return "".join(texts), finished


def _scene_from_text(fan: _FanOut, index: int, text: str, sofar: dict[str, Any] | None) -> dict[str, Any]:
    try:
        document = step_part(document=screenplay_text_parse(text), part="scene")
    except ValueError as error:
        raise GenerationError("invalid_output", f"scene {index + 1} is not valid JSON: {error}") from None
    if sofar is not None:
        document = part_merge(sofar, document, part="scene")
    return scene_check(document=document, outline=fan.outline, index=index)


# --- Records and progress ---------------------------------------------------------------------


def _call_log(run: _Run, *, task: str, index: int | None, attempt: int) -> dict[str, Any]:
    log: dict[str, Any] = {"task": task, "index": index, "attempt": attempt, "status": "streaming"}
    run.record.details["calls"].append(log)
    return log


def _call_close(
    run: _Run, log: dict[str, Any], started: float, end: CallFinished | UsageReport | None, text: str
) -> None:
    """Record one call's outcome and usage; runs on success, failure and cancellation alike.

    ``end`` is the call's CallFinished, or for a call cut off before it, its last UsageReport if any.
    """
    log["ms"] = _ms_since(started)
    if text:
        run.texts.append(text)
    if not isinstance(end, CallFinished):
        if log["status"] == "streaming":
            log["status"] = "cancelled"
        # Billed all the same: what the API reported so far, the output estimated unless final.
        cut, estimated = run.add_cut_call(end, text)
        log.update(cut.as_dict(), usage_estimated=estimated)
        return
    usage: Usage = end.usage
    run.usage.add(usage)
    run.record.stop_reason = end.stop_reason
    log.update(usage.as_dict())
    log["stop_reason"] = end.stop_reason
    if log["status"] == "streaming":
        log["status"] = "ok"


def _progress(fan: _FanOut, remaining: set[int]) -> dict[str, Any] | None:
    now = time.monotonic()
    if now - fan.last_progress_at < PROGRESS_INTERVAL_SECONDS:
        return None
    fan.last_progress_at = now
    run = fan.run
    live_tokens = sum(token_estimate(text) for text in fan.live.values())
    output_tokens = run.usage.output_tokens + live_tokens
    done = len(fan.outline.scenes) - len(remaining)
    # Scenes written so far say how long one is; those still to write run side by side.
    per_scene = (output_tokens / max(done, 1)) if done else run.pace.expected_output_tokens / 8
    waves = -(-len(remaining) // max(fan.limiter.limit, 1))
    remaining_tokens = max(per_scene * waves - live_tokens / max(len(fan.live), 1), 0)
    return {
        "type": "progress",
        "output_tokens": output_tokens,
        "elapsed_ms": run.elapsed_ms(),
        "eta_seconds": round(remaining_tokens / max(run.pace.tokens_per_second, 1), 1),
        "scenes_done": done,
        "scenes_total": len(fan.outline.scenes),
    }


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


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)

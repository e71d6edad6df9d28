"""One generation, start to finish, as the protocol's events.

``generation_run`` is what every interface runs (the WebSocket consumer, the REST view, the command).
It yields the events of the WebSocket protocol (docs/protocol.md) as dicts and leaves a GenerationRun whatever
happens. Closing or cancelling it closes the upstream model request at once; a cancel that arrives
while the save is running lets the save finish (it is one transaction) and reports it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import DatabaseError, connections
from django.urls import NoReverseMatch, reverse

from personas.selectors import PersonaContexts, persona_contexts
from stories.generation.backends.base import (
    Brief,
    CallFinished,
    CastMember,
    ModelCall,
    Usage,
    UsageReport,
    backend_for_model,
    cut_call_usage,
)
from stories.generation.cache_rules import cache_hit_rate
from stories.generation.errors import GenerationError
from stories.generation.parallel import SceneEdit, parallel_write
from stories.generation.prompt import (
    Prompt,
    continuation_schema,
    model_screenplay_schema,
    prompt_build,
    prompt_continue,
)
from stories.generation.requests import GenerationRequest, allowed_models
from stories.generation.stream import ScreenplayStreamParser, characters_merge, screenplay_text_parse
from stories.generation.tokens import token_estimate
from stories.generation.validation import screenplay_validate
from stories.models import GenerationRun
from stories.selectors import (
    EffectiveGenerationSettings,
    GenerationPace,
    generation_pace_get,
    generation_settings_get,
    story_owned,
)
from stories.services import (
    RunRecord,
    ScreenplayDraft,
    generation_run_admit,
    generation_run_finish,
    generation_run_release,
    screenplay_version_create,
)

logger = logging.getLogger(__name__)
_T = TypeVar("_T")


# The database calls of concurrent generations run side by side in the loop's thread pool (each thread
# takes its own pooled connection) rather than queueing on Channels' one thread-sensitive thread: with 50
# generations starting together that queue alone added seconds (bench/results/flow.md). Every call is
# self-contained (its own transaction, no thread-bound state), so the thread it runs on does not matter.
def _db(function: Callable[..., _T]) -> Callable[..., Awaitable[_T]]:
    def call(*args: Any, **kwargs: Any) -> _T:
        try:
            return function(*args, **kwargs)
        finally:
            # Hand the connection back now: a pool thread may never run Django code again (its loop
            # closes), and a connection it kept would be lost to PostgreSQL's pool until it ran dry.
            connections.close_all()

    return database_sync_to_async(call, thread_sensitive=False)


# At most this many progress events a second.
PROGRESS_INTERVAL_SECONDS = 0.25


def model_display_name(model: str) -> str:
    return "offline model" if model == settings.OFFLINE_MODEL else model


@dataclass
class _Run:
    """The state of one run while it streams."""

    run_id: int
    request: GenerationRequest
    user_id: int
    model: str
    max_tokens: int
    started: float
    pace: GenerationPace
    rules: str  # the editors' formatting rules, read with the model defaults
    record: RunRecord = field(default_factory=RunRecord)
    usage: Usage = field(default_factory=Usage)
    texts: list[str] = field(default_factory=list)
    first_token_at: float | None = None
    last_progress_at: float = 0.0
    streamed_chars: int = 0
    # Parallel mode's rewrite of one scene of a saved version (stories.generation.parallel).
    edit: SceneEdit | None = None
    # Some call was cut off before its final usage: its output tokens are an estimate.
    usage_estimated: bool = False

    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)

    def add_cut_call(self, report: UsageReport | None, text: str) -> tuple[Usage, bool]:
        """Count a call that ended without CallFinished; return its usage and whether it is estimated."""
        usage, estimated = cut_call_usage(report, text)
        self.usage.add(usage)
        self.usage_estimated = self.usage_estimated or estimated
        return usage, estimated


async def generation_run(
    *, request: GenerationRequest, user: Any, edit: SceneEdit | None = None
) -> AsyncGenerator[dict[str, Any], None]:
    """Run one generation for ``user``; yield the protocol's events (see the module docstring).

    With ``edit`` (parallel mode only) the run rewrites one scene of a saved version instead.
    """
    started = time.monotonic()
    try:
        run = await _run_admit(request, user.pk, started)
    except GenerationError as error:
        yield error.as_event()
        return
    run.edit = edit
    try:
        async with aclosing(_run_events(run)) as events:
            async for event in events:
                yield event
    finally:
        generation_run_release(run_id=run.run_id)


async def _run_events(run: _Run) -> AsyncGenerator[dict[str, Any], None]:
    """The run's events after admission; every way out closes the run (cancellation included)."""
    try:
        async with aclosing(_generate(run)) as events:
            async for event in events:
                yield event
    except GenerationError as error:
        await _run_close(run, GenerationRun.Status.FAILED, error)
        yield error.as_event()
    except (asyncio.CancelledError, GeneratorExit):
        await _run_close(run, GenerationRun.Status.CANCELLED, None)
        raise
    except Exception:
        logger.exception("generation run %s failed unexpectedly", run.run_id)
        failure = GenerationError("llm_unavailable", f"the generation failed unexpectedly (run {run.run_id})")
        await _run_close(run, GenerationRun.Status.FAILED, failure)
        yield failure.as_event()


async def _run_admit(request: GenerationRequest, user_id: int, started: float) -> _Run:
    """Admit and record the run (``_run_open``); a cancel that arrives meanwhile finds it closed.

    The admission runs in a worker thread, which a cancel cannot stop: left alone, it would commit a
    ``streaming`` run after the cancel, one that nothing runs or closes and that counts against the
    writer's limits (issue 13). So the wait is shielded, and a cancelled wait sees the admission
    through, closes its run as cancelled, and only then passes the cancel on.
    """
    admission = asyncio.ensure_future(_db(_run_open)(request, user_id, started))
    try:
        return await asyncio.shield(admission)
    except asyncio.CancelledError:
        await _admitted_run_cancel(admission)
        raise


async def _admitted_run_cancel(admission: asyncio.Future[_Run]) -> None:
    """Close as cancelled the run that a cancelled admission recorded after all, if it did."""
    try:
        run = await _seen_through(admission)
    except Exception:
        return  # refused or failed: no run was recorded
    try:
        await _run_close(run, GenerationRun.Status.CANCELLED, None)
    finally:
        generation_run_release(run_id=run.run_id)


async def _seen_through(work: asyncio.Future[_T]) -> _T:
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


def _model_and_max_tokens(
    request: GenerationRequest, defaults: EffectiveGenerationSettings
) -> tuple[str, int]:
    model = request.model or defaults.default_model
    if model not in allowed_models():
        # An editor's default that is no longer allowed falls back to the deployment's model.
        model = settings.STORY_MODEL
    max_tokens = request.max_tokens or defaults.default_max_tokens
    max_tokens = min(max(max_tokens, settings.STORY_MIN_MAX_TOKENS), settings.STORY_MAX_MAX_TOKENS)
    return model, max_tokens


def _run_open(request: GenerationRequest, user_id: int, started: float) -> _Run:
    """Check the story, admit the run and record it, in one trip to the thread pool (the cast's
    contexts are the other).

    The per-user limits (concurrent and hourly generations, stories.limits) are checked with the run's
    creation, under a per-user lock, so neither another socket nor another process can race them;
    a refusal comes before anything costs money.
    """
    if request.story_id is not None and not story_owned(story_id=request.story_id, user_id=user_id):
        # Before admission: a story that is not the writer's costs no run and no hourly slot.
        raise GenerationError("forbidden", "that story does not exist or is not yours")
    defaults = generation_settings_get()
    model, max_tokens = _model_and_max_tokens(request, defaults)
    run = generation_run_admit(
        user_id=user_id,
        model=model,
        max_tokens=max_tokens,
        persona_names=request.personas,
        story_id=None,
        mode=request.mode,
    )
    pace = generation_pace_get(model=model, max_tokens=max_tokens)
    return _Run(
        run_id=run.pk,
        request=request,
        user_id=user_id,
        model=model,
        max_tokens=max_tokens,
        started=started,
        pace=pace,
        rules=defaults.formatting_rules,
    )


async def _generate(run: _Run) -> AsyncGenerator[dict[str, Any], None]:
    request = run.request
    yield {
        "type": "accepted",
        "run_id": run.run_id,
        "model": run.model,
        "model_name": model_display_name(run.model),
        "max_tokens": run.max_tokens,
        "personas": request.personas,
        "estimated_seconds": run.pace.estimated_seconds(),
    }
    contexts = await _db(_prompt_inputs)(run)
    rules = run.rules
    prompt_started = time.monotonic()
    prompt = prompt_build(
        contexts=contexts.contexts, plot=request.plot, title=request.title, rules=rules, model=run.model
    )
    brief = Brief(
        plot=request.plot,
        title=request.title,
        cast=tuple(CastMember(c.name, c.display_name, c.context) for c in contexts.contexts),
    )
    run.record.prompt_ms = _ms_since(prompt_started)
    content: dict[str, Any] = {}
    if request.mode == "parallel":
        writer = parallel_write(
            run, contexts=contexts.contexts, brief=brief, rules=rules, content=content, edit=run.edit
        )
    else:
        writer = _write(run, prompt, brief, content)
    async with aclosing(writer) as events:
        async for event in events:
            yield event
    finish = _save if request.save else _finish_unsaved
    async for event in finish(run, content):
        yield event


def _prompt_inputs(run: _Run) -> PersonaContexts:
    """The cast's contexts (the story was checked at admission; the save checks it again)."""
    started = time.monotonic()
    contexts = persona_contexts(names=run.request.personas)
    run.record.context_ms = _ms_since(started)
    if contexts.missing:
        raise GenerationError("unknown_personas", f"unknown personas: {', '.join(contexts.missing)}")
    if contexts.inactive:
        raise GenerationError(
            "unknown_personas", f"personas no longer available: {', '.join(contexts.inactive)}"
        )
    return contexts


async def _write(
    run: _Run, prompt: Prompt, brief: Brief, content: dict[str, Any]
) -> AsyncGenerator[dict[str, Any], None]:
    """Stream model calls until the screenplay is complete, continuing after max_tokens; fill ``content``."""
    backend = backend_for_model(run.model)
    header: dict[str, Any] = {}
    scenes: list[dict[str, Any]] = []
    # The first call too stays within the total output cap.
    call_prompt, schema = prompt, model_screenplay_schema()
    budget = min(run.max_tokens, settings.STORY_MAX_TOTAL_OUTPUT_TOKENS)
    while True:
        parser = ScreenplayStreamParser()
        call = ModelCall(
            model=run.model,
            max_tokens=budget,
            system=call_prompt.system,
            messages=call_prompt.messages,
            output_schema=schema,
            brief=brief,
            continue_after=len(scenes),
        )
        finished = None
        async with aclosing(_call(run, backend.stream(call), parser, len(scenes))) as events:
            async for event in events:
                if isinstance(event, CallFinished):
                    finished = event
                else:
                    yield event
        assert finished is not None
        if finished.stop_reason != "max_tokens":
            _complete(content, header, scenes, parser)
            return
        header, scenes = _stitch(header, scenes, parser)
        budget = _continuation_budget(run, parser=parser)
        run.record.continuations += 1
        partial = json.dumps({**header, "scenes": scenes}, ensure_ascii=False)[:-2]
        last_heading = scenes[-1].get("heading", "") if scenes else ""
        call_prompt = prompt_continue(
            prompt=prompt, partial_text=partial, scenes_done=len(scenes), last_heading=str(last_heading)
        )
        schema = continuation_schema()


async def _call(
    run: _Run, stream: AsyncGenerator[Any, None], parser: ScreenplayStreamParser, scenes_before: int
) -> AsyncGenerator[Any, None]:
    """One model call: forward text, scenes and progress; end with the call's CallFinished."""
    call_started = time.monotonic()
    run.texts.append("")
    report: UsageReport | None = None
    finished = False
    try:
        async with aclosing(stream) as upstream:  # type: ignore[type-var]
            async for item in upstream:
                if isinstance(item, UsageReport):
                    report = item
                    continue
                if isinstance(item, CallFinished):
                    finished = True
                    run.usage.add(item.usage)
                    run.record.stop_reason = item.stop_reason
                    yield item
                    continue
                if run.first_token_at is None:
                    run.first_token_at = time.monotonic()
                    run.record.ttft_ms = _ms_since(call_started)
                run.texts[-1] += item.text
                run.streamed_chars += len(item.text)
                yield {"type": "delta", "text": item.text}
                found = parser.feed(item.text)
                first = scenes_before + len(parser.scenes) - len(found)
                for offset, scene in enumerate(found):
                    yield {"type": "scene", "index": first + offset, "scene": scene}
                progress = _progress(run)
                if progress is not None:
                    yield progress
    finally:
        run.record.llm_ms = (run.record.llm_ms or 0) + _ms_since(call_started)
        if not finished:
            # Cancelled, dropped or failed mid-stream: the call was billed all the same.
            run.add_cut_call(report, run.texts[-1])


def _progress(run: _Run) -> dict[str, Any] | None:
    now = time.monotonic()
    if now - run.last_progress_at < PROGRESS_INTERVAL_SECONDS:
        return None
    run.last_progress_at = now
    output_tokens = run.usage.output_tokens + token_estimate(run.texts[-1])
    rate = run.pace.tokens_per_second
    writing = now - (run.first_token_at or now)
    if writing > 1.0 and output_tokens > 20:
        # Once the model has written for a while, its own rate in this run is the better guide.
        rate = output_tokens / writing
    remaining = max(run.pace.expected_output_tokens - output_tokens, 0)
    return {
        "type": "progress",
        "output_tokens": output_tokens,
        "elapsed_ms": run.elapsed_ms(),
        "eta_seconds": round(remaining / rate, 1),
    }


def _stitch(
    header: dict[str, Any], scenes: list[dict[str, Any]], parser: ScreenplayStreamParser
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Keep what a call cut off at max_tokens completed: its header fields and its whole scenes.

    The first call's title and logline stand; characters from every part are merged, in whichever
    order the model wrote the keys (a cut before the cast leaves it to the continuation, which repeats it).
    """
    if not parser.scenes_started:
        raise GenerationError(
            "invalid_output",
            "the output limit cut the screenplay off before its first scene; raise max_tokens",
        )
    return _header_merge(header, parser.header()), [*scenes, *parser.scenes]


def _header_merge(header: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """The header so far with a later part's: its own fields win, characters are merged by name."""
    merged = {key: value for key, value in part.items() if key not in ("scenes", "characters")}
    merged.update({key: value for key, value in header.items() if key != "characters"})
    return _with_characters({**merged, "characters": header.get("characters", [])}, part.get("characters"))


def _continuation_budget(run: _Run, *, parser: ScreenplayStreamParser) -> int:
    used = run.usage.output_tokens
    cap = settings.STORY_MAX_TOTAL_OUTPUT_TOKENS
    if run.record.continuations >= settings.STORY_MAX_CONTINUATIONS or used >= cap:
        raise GenerationError(
            "invalid_output",
            f"the screenplay did not fit in {used} output tokens and "
            f"{run.record.continuations} continuations; nothing was saved",
        )
    if run.record.continuations and not parser.scenes:
        raise GenerationError(
            "invalid_output", "a continuation could not fit a single scene in max_tokens; raise max_tokens"
        )
    return max(min(run.max_tokens, cap - used), 1)


def _complete(
    content: dict[str, Any],
    header: dict[str, Any],
    scenes: list[dict[str, Any]],
    parser: ScreenplayStreamParser,
) -> None:
    try:
        document = screenplay_text_parse(parser.text)
    except ValueError as error:
        raise GenerationError("invalid_output", f"the model's reply is not valid JSON: {error}") from None
    if header or scenes:
        # The end of a continued screenplay: the earlier parts' header, every part's scenes.
        new_scenes = document.get("scenes")
        if not isinstance(new_scenes, list):
            raise GenerationError("invalid_output", "the continuation holds no scenes")
        document = {**_header_merge(header, document), "scenes": [*scenes, *new_scenes]}
    content.update(document)


def _with_characters(header: dict[str, Any], extra: Any) -> dict[str, Any]:
    return {**header, "characters": characters_merge(header.get("characters", []), extra)}


async def _finish_unsaved(run: _Run, content: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
    """A run that saves nothing (``request.save`` False): checked like any, kept with its screenplay."""
    screenplay_validate(content=content, persona_names=run.request.personas)
    record = _record(run)
    record.total_ms = run.elapsed_ms()
    await database_sync_to_async(generation_run_finish)(
        run_id=run.run_id,
        status=GenerationRun.Status.SUCCEEDED,
        record=record,
        raw_text=json.dumps(content, ensure_ascii=False),
    )
    run.record = record
    yield {"type": "done", "run_id": run.run_id, "timings": _timings(record), "usage": run.usage.as_dict()}


async def _save(run: _Run, content: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
    request = run.request
    cast = screenplay_validate(content=content, persona_names=request.personas)
    draft = ScreenplayDraft(
        title=request.title,
        plot=request.plot,
        content=content,
        model=run.model,
        max_tokens=run.max_tokens,
        cast=cast,
        story_id=request.story_id,
    )
    record = _record(run)
    record.total_ms = run.elapsed_ms()
    save = asyncio.ensure_future(
        _db(_version_save)(user_id=run.user_id, draft=draft, run_id=run.run_id, record=record)
    )
    try:
        version = await asyncio.shield(save)
    except asyncio.CancelledError:
        # The save is one transaction already under way: let it finish rather than tear it, and
        # report what was saved. The cancel arrived too late to stop anything.
        version = await _seen_through(save)
        task = asyncio.current_task()
        while task is not None and task.cancelling():
            task.uncancel()
    run.record = record
    yield {
        "type": "saved",
        "run_id": run.run_id,
        "story_id": version.story_id,
        "version": version.number,
        "url": _story_url(version.story_id),
    }
    yield {"type": "done", "run_id": run.run_id, "timings": _timings(record), "usage": run.usage.as_dict()}


def _version_save(*, user_id: int, draft: ScreenplayDraft, run_id: int, record: RunRecord) -> Any:
    try:
        return screenplay_version_create(user_id=user_id, draft=draft, run_id=run_id, record=record)
    except GenerationError:
        raise
    except Exception as error:
        logger.exception("saving run %s failed", run_id)
        raise GenerationError("save_failed", "the screenplay could not be saved; please try again") from error


def _record(run: _Run) -> RunRecord:
    record = run.record
    record.usage = run.usage.as_dict()
    record.usage_estimated = run.usage_estimated
    usage = run.usage
    hit_rate = cache_hit_rate(
        cache_read=usage.cache_read_tokens,
        cache_write=usage.cache_write_tokens,
        input_tokens=usage.input_tokens,
    )
    record.details = {
        **record.details,
        "model_name": model_display_name(run.model),
        "streamed_chars": run.streamed_chars,
        "cache_hit_rate": None if hit_rate is None else round(hit_rate, 3),
    }
    return record


def _timings(record: RunRecord) -> dict[str, int | None]:
    names = ("context_ms", "prompt_ms", "ttft_ms", "llm_ms", "save_ms", "total_ms")
    return {name: getattr(record, name) for name in names}


async def _run_close(run: _Run, status: str, error: GenerationError | None) -> None:
    record = _record(run)
    record.total_ms = run.elapsed_ms()
    record_text = "\n\n".join(text for text in run.texts if text)
    write = _db(generation_run_finish)(
        run_id=run.run_id,
        status=status,
        record=record,
        error_code=error.code if error else "",
        error_message=error.message if error else "",
        raw_text=record_text,
    )
    # Seen through: a run that is being cancelled (maybe twice) must still be recorded as such.
    try:
        await _seen_through(asyncio.ensure_future(write))
    except DatabaseError:
        # The database is down (it may be why the save failed): the text paid for goes to the log.
        logger.exception(
            "generation run %s could not be recorded as %s; its model text follows:\n%s",
            run.run_id,
            status,
            record_text,
        )
    if error is not None:
        _failure_log(run.run_id, error)


# The codes an operator has to act on (a spend limit, a key, a model): logged as errors, once a run.
_OPERATOR_CODES = frozenset({"llm_quota", "llm_config"})


def _failure_log(run_id: object, error: GenerationError) -> None:
    level = logging.ERROR if error.code in _OPERATOR_CODES else logging.INFO
    detail = f" ({error.operator_detail})" if error.operator_detail else ""
    logger.log(level, "generation run %s failed: %s %s%s", run_id, error.code, error.message, detail)


def _story_url(story_id: int) -> str:
    try:
        return reverse("stories:story-detail", args=[story_id])
    except NoReverseMatch:
        return f"/stories/{story_id}/"


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)

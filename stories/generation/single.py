"""Single mode: one streamed screenplay, continued while the output limit cuts it off.

A call cut at max_tokens keeps its header and its whole scenes; the next call is given the reply so
far as a finished assistant turn and asked for the scenes after those (prompt.prompt_continue), until
the screenplay ends, within ``STORY_MAX_CONTINUATIONS`` and the run's output cap.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import replace
from typing import Any

from django.conf import settings

from stories.errors import GenerationError
from stories.generation.backends.base import Brief, ModelCall, cut_call_usage
from stories.generation.backends.registry import backend_for_model
from stories.generation.checkpoint import ResumePoint, checkpoint_save
from stories.generation.prompt import (
    PersonaContextLike,
    Prompt,
    continuation_schema,
    model_screenplay_schema,
    prompt_build,
    prompt_continue,
)
from stories.generation.run import CallResult, Run, call_text
from stories.generation.stream import ScreenplayStreamParser, characters_merge, screenplay_text_parse
from stories.generation.validation import storable_check
from storyproject.tokens import token_estimate


async def single_write(
    run: Run,
    *,
    contexts: Sequence[PersonaContextLike],
    brief: Brief,
    content: dict[str, Any],
    resume: ResumePoint | None = None,
) -> AsyncGenerator[dict[str, Any], None]:
    """Stream model calls until the screenplay is complete, continuing after max_tokens; fill ``content``.

    With ``resume`` (a run taken over from a dead process) the first call is a continuation after the
    checkpoint's last complete scene, exactly as after a call cut off at max_tokens.
    """
    request = run.request
    prompt = run.prompt_timed(
        lambda: prompt_build(
            contexts=contexts, plot=request.plot, title=request.title, rules=run.rules, model=run.model
        )
    )
    header: dict[str, Any] = dict(resume.header) if resume else {}
    scenes: list[dict[str, Any]] = [resume.scenes[i] for i in sorted(resume.scenes)] if resume else []
    # The first call too stays within the total output cap.
    call_prompt, schema = prompt, model_screenplay_schema()
    budget = run.first_call_budget()
    if scenes:
        budget = _continuation_budget(run, parser=None)
        run.record.continuations += 1
        call_prompt, schema = _continuation(prompt, header, scenes), continuation_schema()
    while True:
        parser = ScreenplayStreamParser()
        call = ModelCall(
            model=run.model,
            max_tokens=budget,
            system=call_prompt.system,
            messages=call_prompt.messages,
            output_schema=schema,
            brief=replace(brief, continue_after=len(scenes)),
        )
        result = CallResult()
        async with aclosing(_call_events(run, call, result, parser, (header, scenes))) as events:
            async for event in events:
                yield event
        assert result.finished is not None
        if result.finished.stop_reason != "max_tokens":
            content.update(_complete(header, scenes, parser))
            return
        header, scenes = _stitch(header, scenes, parser)
        budget = _continuation_budget(run, parser=parser)
        run.record.continuations += 1
        call_prompt, schema = _continuation(prompt, header, scenes), continuation_schema()


async def _call_events(
    run: Run,
    call: ModelCall,
    result: CallResult,
    parser: ScreenplayStreamParser,
    before: tuple[dict[str, Any], list[dict[str, Any]]],
) -> AsyncGenerator[dict[str, Any], None]:
    """One model call's events: its text, the scenes as they complete, and progress.

    ``before`` is the header and scenes that earlier calls completed. Scenes are checkpointed before
    their ``scene`` events go out (stories.generation.checkpoint).
    """
    header, scenes_before = before
    try:
        async with aclosing(call_text(run, backend_for_model(run.model), call, result)) as texts:
            async for text in texts:
                found = parser.feed(text)
                if parser.scene_error is not None:
                    # Skipping it would number every later scene one too low, and a continuation
                    # would leave it out of the screenplay: the reply is not a screenplay.
                    place, problem = parser.scene_error
                    raise GenerationError(
                        "invalid_output",
                        f"the model's reply is not valid JSON in scene {len(scenes_before) + place + 1}: "
                        f"{problem}",
                    )
                if not found:
                    yield {"type": "delta", "text": text}
                else:
                    first = len(scenes_before) + len(parser.scenes) - len(found)
                    # What a checkpoint could not store (a NUL: "\u0000" in the JSON) is no screenplay.
                    storable_check(document=parser.header(), what="screenplay")
                    for offset, scene in enumerate(found):
                        storable_check(document=scene, what=f"scene {first + offset + 1}")
                    # A delta may hold the ends of several scenes (the text of one network read): each
                    # scene goes out right after the text that closes it, before any that follows, and
                    # all of them once checkpointed.
                    cut = 0
                    for offset, (scene, end) in enumerate(zip(found, parser.found_ends, strict=True)):
                        yield {"type": "delta", "text": text[cut:end]}
                        if not offset:
                            work = {
                                "header": _header_merge(header, parser.header()),
                                "scenes": [*scenes_before, *parser.scenes],
                            }
                            await _checkpoint(run, work, result, parser.text)
                        yield {"type": "scene", "index": first + offset, "scene": scene}
                        cut = end
                    if cut < len(text):
                        yield {"type": "delta", "text": text[cut:]}
                # The estimate reads the call's whole text: only when a progress event is due.
                progress = _progress(run, parser.text) if run.progress_due() else None
                if progress is not None:
                    yield progress
    finally:
        run.record.llm_ms = (run.record.llm_ms or 0) + result.ms


async def _checkpoint(run: Run, work: dict[str, Any], result: CallResult, live: str) -> None:
    # The call is still streaming: what it has cost so far is estimated from the text it sent.
    in_flight, _ = cut_call_usage(result.report, live)
    in_flight.add(result.retried_usage)  # the call's attempts tried again before this one
    await checkpoint_save(run, work, in_flight=in_flight)


def _progress(run: Run, live: str) -> dict[str, Any] | None:
    live_tokens = token_estimate(live)
    remaining = run.pace.expected_output_tokens - run.usage.output_tokens - live_tokens
    return run.progress(live_tokens=live_tokens, remaining_tokens=remaining)


def _continuation(prompt: Prompt, header: dict[str, Any], scenes: list[dict[str, Any]]) -> Prompt:
    partial = json.dumps({**header, "scenes": scenes}, ensure_ascii=False)[:-2]
    last_heading = scenes[-1].get("heading", "") if scenes else ""
    return prompt_continue(
        prompt=prompt, partial_text=partial, scenes_done=len(scenes), last_heading=str(last_heading)
    )


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
    characters = characters_merge(header.get("characters", []), part.get("characters"))
    return {**merged, "characters": characters}


def _continuation_budget(run: Run, *, parser: ScreenplayStreamParser | None) -> int:
    """The next continuation's max_tokens (``parser`` None: a resume's, after a checkpoint)."""
    used = run.usage.output_tokens
    if run.record.continuations >= settings.STORY_MAX_CONTINUATIONS or run.text_left() <= 0:
        raise GenerationError(
            "invalid_output",
            f"the screenplay did not fit in {used} output tokens and "
            f"{run.record.continuations} continuations; nothing was saved",
        )
    if run.record.continuations and parser is not None and not parser.scenes:
        raise GenerationError(
            "invalid_output", "a continuation could not fit a single scene in max_tokens; raise max_tokens"
        )
    return min(run.max_tokens, run.text_left())


def _complete(
    header: dict[str, Any], scenes: list[dict[str, Any]], parser: ScreenplayStreamParser
) -> dict[str, Any]:
    try:
        document = screenplay_text_parse(parser.text)
    except ValueError as error:
        raise GenerationError("invalid_output", f"the model's reply is not valid JSON: {error}") from None
    if not (header or scenes):
        return document
    # The end of a continued screenplay: the earlier parts' header, every part's scenes.
    new_scenes = document.get("scenes")
    if not isinstance(new_scenes, list):
        raise GenerationError("invalid_output", "the continuation holds no scenes")
    return {**_header_merge(header, document), "scenes": [*scenes, *new_scenes]}

"""Thinking is set on every call; a thinking block in the stream never reaches the screenplay."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from stories.generation.models_registry import usable_models
from stories.models import GenerationRun, ScreenplayVersion
from tests.fake_anthropic import FakeAnthropic, Reply, screenplay_text, token_count
from tests.stories.generation.conftest import continuing_writer, screenplay, ws_generate

pytestmark = pytest.mark.django_db(transaction=True)

THOUGHT = "SECRET PLAN: open on the rain, then the lie. " * 8


def _reply() -> Reply:
    return Reply(text=screenplay_text(screenplay(scenes=2)), thinking_text=THOUGHT)


def _streamed(events: list[dict[str, Any]]) -> str:
    return "".join(event["text"] for event in events if event["type"] == "delta")


async def test_writing_calls_turn_thinking_off_by_default(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # Sonnet 5.5 would think unasked (and rejects "disabled"): "between_tools" keeps it from thinking.
    fake_anthropic.script(_reply())
    events = await ws_generate(writer, max_tokens=2048)
    assert events[-1]["type"] == "done"
    body = fake_anthropic.requests[0].body
    assert (body["model"], body["thinking"], body["max_tokens"]) == (
        "claude-sonnet-5-5",
        {"type": "between_tools"},
        2048,
    )


async def test_with_a_thinking_budget_the_thoughts_are_paid_for_but_never_shown_or_saved(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    settings.STORY_THINKING_BUDGET_TOKENS = 2048
    fake_anthropic.script(_reply())
    events = await ws_generate(writer, max_tokens=2048)
    assert events[-1]["type"] == "done"
    body = fake_anthropic.requests[0].body
    # The budget is added to max_tokens: thinking tokens count toward it.
    assert (body["thinking"], body["max_tokens"]) == ({"type": "adaptive"}, 2048 + 2048)
    text = screenplay_text(screenplay(scenes=2))
    assert _streamed(events) == text and "SECRET PLAN" not in str(events)
    version = await ScreenplayVersion.objects.aget()
    assert "SECRET PLAN" not in str(version.content)
    run = await GenerationRun.objects.aget()
    # The thinking's tokens are billed as output, counted like the text's.
    assert run.output_tokens == token_count(text) + token_count(THOUGHT)
    assert "SECRET PLAN" not in run.raw_text


async def test_a_model_that_always_thinks_gets_room_for_it_and_its_thoughts_stay_hidden(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    settings.STORY_MODELS = ["claude-opus-5-5"]
    fake_anthropic.script(_reply())
    events = await ws_generate(writer, model="claude-opus-5-5", max_tokens=2048)
    assert events[-1]["type"] == "done"
    body = fake_anthropic.requests[0].body
    # "disabled" is a 400 on Opus 5.5: nothing is sent, and 1,024 tokens are kept for its thinking.
    assert "thinking" not in body and body["max_tokens"] == 2048 + 1024
    assert "SECRET PLAN" not in _streamed(events)


async def test_a_manual_thinking_model_gets_a_budget(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    settings.STORY_MODELS = ["claude-haiku-4-5"]
    settings.STORY_THINKING_BUDGET_TOKENS = 1500
    fake_anthropic.script(_reply())
    events = await ws_generate(writer, model="claude-haiku-4-5", max_tokens=2048)
    assert events[-1]["type"] == "done"
    body = fake_anthropic.requests[0].body
    assert (body["thinking"], body["max_tokens"]) == ({"type": "enabled", "budget_tokens": 1500}, 3548)
    assert "SECRET PLAN" not in _streamed(events)


# --- Thinking counts toward max_tokens (the fake cuts the text after the thinking, as the API does) ---


async def test_a_redacted_thinking_block_is_neither_shown_nor_saved_and_the_screenplay_still_is(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    # The API sends part of a thought it safety-redacted as a redacted_thinking block (its encrypted
    # data in content_block_start, no delta), between the thinking and the text: the text block's index
    # moves up by one, and the screenplay is only the text.
    settings.STORY_THINKING_BUDGET_TOKENS = 2048
    fake_anthropic.script(replace(_reply(), redacted_thinking="EmwKAhgBEgy3va3pzix/REDACTED/Lafs"))
    events = await ws_generate(writer, max_tokens=2048)
    assert events[-1]["type"] == "done", events[-1]
    text = screenplay_text(screenplay(scenes=2))
    assert _streamed(events) == text and "REDACTED" not in str(events)
    version = await ScreenplayVersion.objects.aget()
    assert version.content == screenplay(scenes=2)
    run = await GenerationRun.objects.aget()
    assert "REDACTED" not in run.raw_text and "SECRET PLAN" not in run.raw_text


LONG_THOUGHT = "The detective weighs every lie the client told, scene by scene, before a word is written. "


async def test_thinking_past_its_reserve_cuts_the_screenplay_which_is_continued_and_saved(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    # Adaptive thinking has no budget: the model may think past the tokens reserved for it, and what
    # it thinks comes out of max_tokens before the text, which is cut after its first scenes.
    settings.STORY_THINKING_BUDGET_TOKENS = 1024
    expected = screenplay(scenes=4)
    fake_anthropic.default = continuing_writer(expected, thought=LONG_THOUGHT * 74)
    events = await ws_generate(writer, max_tokens=1000)
    assert events[-1]["type"] == "done", events[-1]
    assert fake_anthropic.requests[0].body["max_tokens"] == 1000 + 1024
    version = await ScreenplayVersion.objects.aget()
    assert version.content == expected
    run = await GenerationRun.objects.aget()
    assert run.continuations >= 1 and "weighs every lie" not in run.raw_text
    assert "weighs every lie" not in _streamed(events)


async def test_thinking_that_uses_up_max_tokens_fails_cleanly_and_saves_nothing(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    # The thinking alone passes max_tokens: the API sends no text block, stop_reason max_tokens.
    settings.STORY_THINKING_BUDGET_TOKENS = 1024
    fake_anthropic.default = continuing_writer(screenplay(scenes=4), thought=LONG_THOUGHT * 200)
    events = await ws_generate(writer, max_tokens=1000)
    error = events[-1]
    assert (error["type"], error["code"], error["retryable"]) == ("error", "invalid_output", False)
    assert "raise max_tokens" in error["message"] and len(fake_anthropic.requests) == 1
    assert not await ScreenplayVersion.objects.aexists()
    run = await GenerationRun.objects.aget()
    assert run.status == "failed" and run.stop_reason == "max_tokens"
    # Billed: the thinking, up to max_tokens.
    assert run.output_tokens == 1000 + 1024


@pytest.mark.parametrize("budget", [0, 2048])
@pytest.mark.parametrize("model", usable_models())
async def test_every_call_the_app_makes_is_one_the_api_accepts_for_every_usable_model(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any, model: str, budget: int
) -> None:
    # The fake answers what the API rejects (an unknown model, a thinking type the model refuses, a
    # budget not under max_tokens, an assistant prefill on the 5.x models) with its 404 or 400, before
    # any scripted reply: a run that is done, with a continuation, sent only what the API accepts.
    settings.STORY_MODELS = [model]
    settings.STORY_THINKING_BUDGET_TOKENS = budget
    writes = continuing_writer(screenplay(scenes=4), thought="")

    def reply(body: dict[str, Any]) -> Reply:
        # Thinking that takes what the app reserved for it, leaving the text the 300 asked for.
        answer = writes(body)
        reserve = body["max_tokens"] - 300
        words = max(int(reserve / 1.3) - 1, 0)
        return replace(answer, thinking_text="rain " * words) if len(body["messages"]) == 1 else answer

    fake_anthropic.default = reply
    events = await ws_generate(writer, model=model, max_tokens=300)
    assert events[-1]["type"] == "done", events[-1]
    assert len(fake_anthropic.requests) > 1
    assert all(request.body["messages"][-1]["role"] == "user" for request in fake_anthropic.requests)


async def test_max_tokens_with_the_thinking_budget_never_passes_the_models_max_output(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    # Was: 64,000 asked for plus the 2,048 budget sent max_tokens 66,048 to Haiku 4.5, whose max output
    # is 64K: the API's 400 ("max_tokens: 66048 > 64000 ...") ended every such run as invalid_request.
    settings.STORY_MODELS = ["claude-haiku-4-5"]
    settings.STORY_MAX_MAX_TOKENS = settings.STORY_MAX_TOTAL_OUTPUT_TOKENS = 64_000
    settings.STORY_THINKING_BUDGET_TOKENS = 2048
    # A writer's own 64,000 is refused (test_max_tokens_model_limit); a setting's is cut, as accepted says.
    settings.STORY_MAX_TOKENS = 64_000
    fake_anthropic.script(_reply())
    events = await ws_generate(writer, model="claude-haiku-4-5")
    assert events[-1]["type"] == "done", events[-1]
    assert events[0]["max_tokens"] == 64_000 - 2048
    body = fake_anthropic.requests[0].body
    assert body["max_tokens"] == 64_000
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert await ScreenplayVersion.objects.acount() == 1


async def test_a_single_pass_call_and_its_thinking_stay_under_the_runs_cap(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    # max_tokens 4,096 under a cap of 5,000 went out as 4,096 + 2,048: the thinking could take the run
    # 1,144 tokens past its cap.
    settings.STORY_MAX_TOTAL_OUTPUT_TOKENS = 5000
    settings.STORY_THINKING_BUDGET_TOKENS = 2048
    fake_anthropic.script(_reply())
    events = await ws_generate(writer, max_tokens=4096)
    assert events[-1]["type"] == "done"
    assert fake_anthropic.requests[0].body["max_tokens"] == 5000

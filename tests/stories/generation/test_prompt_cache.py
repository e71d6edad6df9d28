"""The prompt cache against the fake server's realistic rules (per-model minimum, format in the key).

A prefix is read when it is long enough to be cached at all: the second generation with the same cast
reads it, and so does every scene call after the first in parallel mode, which shares the outline
call's output format. A prefix too short for the model is not marked, so no docstring promises a hit.
"""

from __future__ import annotations

from typing import Any

import pytest

from stories.models import GenerationRun
from tests.fake_anthropic import FakeAnthropic
from tests.fake_screenwriter import FakeScreenwriter, scene_number
from tests.stories.generation.conftest import screenplay, ws_generate

pytestmark = pytest.mark.django_db(transaction=True)

# About 1,100 tokens each: two of them put the stable prefix well over Sonnet's 1,024-token minimum.
_BACKSTORY = " ".join(f"Year {n}: a case in the fog, a debt unpaid, a name kept quiet." for n in range(130))


@pytest.fixture
def long_cast(persona_factory: Any) -> list[Any]:
    return [
        persona_factory("noir-detective", "Sam Spade", personality="World-weary.", backstory=_BACKSTORY),
        persona_factory("femme-fatale", "Brigid", personality="Charming liar.", backstory=_BACKSTORY),
    ]


def _prefix_read_share(usage: dict[str, Any]) -> float:
    read, write, fresh = usage["cache_read_tokens"], usage["cache_write_tokens"], usage["input_tokens"]
    return read / (read + write + fresh)


async def test_the_second_generation_with_the_same_cast_reads_its_prefix_from_the_cache(
    writer: Any, long_cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.prompt_cache = True
    fake_anthropic.default = FakeScreenwriter(screenplay(scenes=2))
    first = await ws_generate(writer, plot="A statue, a lie, a fog.")
    second = await ws_generate(writer, plot="A different night, the same two people.")
    assert first[-1]["type"] == second[-1]["type"] == "done"
    # The instructions and personas are marked, written once, then read.
    body = fake_anthropic.requests[0].body
    assert body["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert first[-1]["usage"]["cache_write_tokens"] > 1024
    assert _prefix_read_share(second[-1]["usage"]) >= 0.8
    runs = [run async for run in GenerationRun.objects.order_by("pk")]
    assert runs[0].details["cache_hit_rate"] == 0
    assert runs[1].details["cache_hit_rate"] >= 0.8


async def test_a_prefix_under_the_models_minimum_is_not_marked_and_nothing_is_cached(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    # Two short personas stay under Sonnet 4.6's 1,024-token minimum (not the 5.x models' 512).
    settings.STORY_MODELS = [*settings.STORY_MODELS, "claude-sonnet-4-6"]
    fake_anthropic.prompt_cache = True
    fake_anthropic.default = FakeScreenwriter(screenplay(scenes=2))
    for _ in range(2):
        assert (await ws_generate(writer, model="claude-sonnet-4-6"))[-1]["type"] == "done"
    for request in fake_anthropic.requests:
        assert all("cache_control" not in block for block in request.body["system"])
    run = await GenerationRun.objects.order_by("pk").alast()
    assert run is not None
    assert (run.cache_read_tokens, run.cache_write_tokens) == (0, 0)
    assert run.details["cache_hit_rate"] == 0


async def test_every_scene_call_after_the_first_reads_its_prefix_from_the_cache(
    writer: Any, long_cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    fake = fake_anthropic
    fake.prompt_cache = True
    fake.default = FakeScreenwriter(screenplay(scenes=5), ttft=0.05, tokens_per_second=4000)
    events = await ws_generate(writer, timeout=20, mode="parallel")
    assert events[-1]["type"] == "done"
    bodies = [r.body for r in fake.requests]
    # One output format for every call: a different one would miss the cache.
    assert all(body["output_config"] == bodies[0]["output_config"] for body in bodies)
    run = await GenerationRun.objects.aget(pk=events[0]["run_id"])
    calls = run.details["calls"]
    outline = calls[0]
    scenes = sorted((c for c in calls if c["task"] == "scene"), key=lambda c: c["index"])
    first, rest = scenes[0], scenes[1:]
    # The outline call writes the personas prefix; the first scene reads it and writes the outline.
    assert outline["cache_write_tokens"] > 0
    assert first["cache_read_tokens"] == outline["cache_write_tokens"] and first["cache_write_tokens"] > 0
    assert len(rest) == 4
    for call in rest:
        assert _prefix_read_share(call) >= 0.8, call
        assert call["cache_write_tokens"] == 0
    assert sorted(scene_number(b) or 0 for b in bodies[1:]) == [1, 2, 3, 4, 5]

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from stories.models import GenerationRun, ScreenplayVersion, StoryCast
from tests.fake_anthropic import FakeAnthropic, Reply, screenplay_text, token_count
from tests.stories.generation.conftest import screenplay, ws_generate

pytestmark = pytest.mark.django_db(transaction=True)


def _saved_state(story_id: int) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    version = ScreenplayVersion.objects.get(story_id=story_id)
    cast = list(StoryCast.objects.filter(story_id=story_id).values_list("persona__name", "character_name"))
    return version.content, cast


async def test_the_offline_model_streams_scenes_then_saves_the_story(
    writer: Any, cast: Any, offline: None
) -> None:
    events = await ws_generate(writer, title="Fog")
    types = [event["type"] for event in events]
    assert types[0] == "accepted" and types[-2:] == ["saved", "done"]
    assert events[0]["model_name"] == "offline model"
    scenes = [event["scene"] for event in events if event["type"] == "scene"]
    assert [event["index"] for event in events if event["type"] == "scene"] == list(range(len(scenes)))
    streamed = "".join(event["text"] for event in events if event["type"] == "delta")
    content, members = await sync_to_async(_saved_state)(events[-2]["story_id"])
    assert content == json.loads(streamed)
    assert content["scenes"] == scenes
    assert content["title"] == "Fog"
    assert members == [("noir-detective", "SAM SPADE"), ("femme-fatale", "BRIGID")]


async def test_the_happy_path_streams_scenes_in_order_and_saves_what_was_streamed(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    expected = screenplay(scenes=4)
    fake_anthropic.script(
        Reply(
            text=screenplay_text(expected),
            tokens_per_second=2000,
            chunk_chars=8,
            cache_read_tokens=900,
            cache_write_tokens=0,
        )
    )
    events = await ws_generate(writer)
    types = [event["type"] for event in events]
    assert types[0] == "accepted"
    assert "delta" in types and "progress" in types
    assert types[-2:] == ["saved", "done"]
    scene_events = [event for event in events if event["type"] == "scene"]
    assert [event["index"] for event in scene_events] == [0, 1, 2, 3]
    assert [event["scene"] for event in scene_events] == expected["scenes"]
    content, members = await sync_to_async(_saved_state)(events[-2]["story_id"])
    assert content == expected
    assert members == [("noir-detective", "SAM SPADE"), ("femme-fatale", "BRIGID")]
    run = await GenerationRun.objects.aget(pk=events[0]["run_id"])
    assert run.status == "succeeded" and run.story_id == events[-2]["story_id"]
    for timing in ("context_ms", "prompt_ms", "ttft_ms", "llm_ms", "save_ms", "total_ms"):
        assert getattr(run, timing) is not None, timing
    assert run.output_tokens == token_count(screenplay_text(expected))
    assert run.input_tokens > 0 and run.cache_read_tokens == 900
    assert events[-1]["usage"]["cache_read_tokens"] == 900

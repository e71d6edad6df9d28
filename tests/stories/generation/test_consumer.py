from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from stories import consumers
from stories.generation import handover
from stories.models import GenerationRun, ScreenplayVersion, StoryCast
from tests.fake_anthropic import FakeAnthropic, Reply, screenplay_text, token_count
from tests.stories.generation.conftest import generate_message, screenplay, ws_connect, ws_events, ws_generate

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


async def test_a_stopping_process_closes_its_idle_sockets_and_starts_no_run_on_an_open_one(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, monkeypatch: Any
) -> None:
    # Was: a socket already open to a process in its graceful stop could start a generation there,
    # which then ran until the deadline and was handed over (a single-mode scene written twice).
    monkeypatch.setattr(handover, "_stopping", False)  # restored after the test
    fake_anthropic.script(
        Reply(text=screenplay_text(screenplay(scenes=2)), tokens_per_second=400, chunk_chars=8)
    )
    idle, busy = await ws_connect(writer), await ws_connect(writer)
    try:
        await busy.send_json_to(generate_message())
        assert json.loads(await busy.receive_from(timeout=10))["type"] == "accepted"
        handover.process_stop_begin()
        await consumers.sockets_idle_close()
        assert await idle.receive_output(timeout=5) == {
            "type": "websocket.close",
            "code": 4503,
            "reason": "server_stopping",
        }
        # The run being followed goes on to its end on this socket...
        events = await ws_events(busy)
        assert events[-1]["type"] == "done"
        # ...and a new one asked on it is not started: the socket closes, and the client reconnects.
        await busy.send_json_to(generate_message())
        assert await busy.receive_output(timeout=5) == {
            "type": "websocket.close",
            "code": 4503,
            "reason": "server_stopping",
        }
    finally:
        await idle.disconnect()
        await busy.disconnect()
    assert await GenerationRun.objects.acount() == 1


async def test_a_generate_with_null_optional_fields_runs_with_their_defaults(
    writer: Any, cast: Any, offline: None
) -> None:
    # `"title": null` was refused ("title must be a string") while the other optional fields took null.
    events = await ws_generate(writer, title=None, story_id=None, model=None, max_tokens=None, mode=None)
    assert events[0]["type"] == "accepted" and events[-1]["type"] == "done", events[-1]


async def test_one_persona_named_thirteen_times_is_one_persona(writer: Any, cast: Any, offline: None) -> None:
    # Refused "at most 12 personas may take part", though duplicates are dropped (as on the API).
    events = await ws_generate(writer, personas=["noir-detective"] * 13)
    assert events[0]["type"] == "accepted" and events[0]["personas"] == ["noir-detective"]
    assert events[-1]["type"] == "done", events[-1]

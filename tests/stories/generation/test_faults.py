"""Every upstream fault becomes one clean error; nothing is saved but the failed run; the socket stays usable."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stories.models import GenerationRun, ScreenplayVersion, Story
from tests.fake_anthropic import FakeAnthropic, Reply, screenplay_reply_for, screenplay_text
from tests.stories.generation.conftest import generate_message, screenplay, ws_connect, ws_events

pytestmark = pytest.mark.django_db(transaction=True)

FAST = {"retry-after-ms": "5"}


def _good_reply(**extra: Any) -> Reply:
    return Reply(text=screenplay_text(screenplay(scenes=2)), **extra)


async def _generate(writer: Any, **fields: Any) -> list[dict[str, Any]]:
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to(generate_message(**fields))
        return await ws_events(communicator)
    finally:
        await communicator.disconnect()


async def _nothing_saved_but_a_failed_run(code: str) -> GenerationRun:
    assert await Story.objects.acount() == 0
    assert await ScreenplayVersion.objects.acount() == 0
    run = await GenerationRun.objects.aget()
    assert (run.status, run.error_code) == ("failed", code)
    assert run.total_ms is not None and run.finished_at is not None
    return run


@pytest.mark.parametrize("status,error_type", [(429, "rate_limit_error"), (529, "overloaded_error")])
async def test_a_429_or_529_before_the_stream_is_retried_and_then_succeeds(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, status: int, error_type: str
) -> None:
    fake_anthropic.script(
        Reply(status=status, error_type=error_type, headers=FAST),
        Reply(status=status, error_type=error_type, headers=FAST),
        _good_reply(),
    )
    events = await _generate(writer)
    assert [e["type"] for e in events][-2:] == ["saved", "done"]
    assert len(fake_anthropic.requests) == 3
    assert await ScreenplayVersion.objects.acount() == 1


async def test_retry_after_is_honoured_only_up_to_the_cap(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    # The SDK would sleep an hour here; ours waits at most the cap (0 s in this test).
    settings.STORY_LLM_RETRY_AFTER_CAP_SECONDS = 0
    fake_anthropic.script(
        Reply(status=429, error_type="rate_limit_error", headers={"retry-after": "3600"}), _good_reply()
    )
    events = await _generate(writer)
    assert events[-1]["type"] == "done"
    assert [r.headers.get("x-stainless-retry-count") for r in fake_anthropic.requests] == ["0", "0"]


@pytest.mark.parametrize(
    "status,error_type,code",
    [
        (529, "overloaded_error", "llm_overloaded"),
        (429, "rate_limit_error", "llm_rate_limited"),
        (500, "api_error", "llm_unavailable"),
        (503, "api_error", "llm_unavailable"),
    ],
)
async def test_a_persistent_upstream_error_gives_its_code_after_two_retries(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, status: int, error_type: str, code: str
) -> None:
    fake_anthropic.script(*[Reply(status=status, error_type=error_type, headers=FAST) for _ in range(3)])
    events = await _generate(writer)
    assert (events[-1]["type"], events[-1]["code"], events[-1]["retryable"]) == ("error", code, True)
    assert len(fake_anthropic.requests) == 3
    await _nothing_saved_but_a_failed_run(code)


async def test_a_bad_request_is_not_retried(writer: Any, cast: Any, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script(
        Reply(status=400, error_type="invalid_request_error", error_message="prompt is too long")
    )
    events = await _generate(writer)
    assert events[-1]["code"] == "invalid_request" and "prompt is too long" in events[-1]["message"]
    assert len(fake_anthropic.requests) == 1


async def test_a_wrong_api_key_is_reported_without_showing_it(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    settings.ANTHROPIC_API_KEY = "sk-ant-wrong-key"
    events = await _generate(writer)
    assert events[-1]["code"] == "llm_unavailable"
    assert "sk-ant" not in json.dumps(events)


async def test_a_stall_mid_stream_gives_llm_timeout_and_keeps_the_text_received(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(_good_reply(stall_after=3, chunk_chars=10))
    events = await _generate(writer)
    assert events[-1]["code"] == "llm_timeout"
    run = await _nothing_saved_but_a_failed_run("llm_timeout")
    streamed = "".join(e["text"] for e in events if e["type"] == "delta")
    assert run.raw_text == streamed and len(streamed) == 30
    # Text had reached the client: no retry.
    assert len(fake_anthropic.requests) == 1


async def test_a_refusal_gives_llm_refused(writer: Any, cast: Any, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script(Reply(text="", stop_reason="refusal", refusal_explanation="Not this one."))
    events = await _generate(writer)
    assert events[-1]["code"] == "llm_refused" and "Not this one." in events[-1]["message"]
    await _nothing_saved_but_a_failed_run("llm_refused")


async def test_an_error_event_mid_stream_ends_with_a_clean_error(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(_good_reply(error_event_after=2, error_event_type="overloaded_error"))
    events = await _generate(writer)
    assert [e["type"] for e in events].count("delta") == 2
    assert events[-1]["code"] == "llm_overloaded"
    await _nothing_saved_but_a_failed_run("llm_overloaded")


async def test_a_dropped_connection_ends_with_a_clean_error_and_the_socket_stays_usable(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(_good_reply(drop_after=2), _good_reply())
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to(generate_message())
        failed = await ws_events(communicator)
        assert failed[-1]["type"] == "error" and failed[-1]["code"] == "llm_unavailable"
        assert await ScreenplayVersion.objects.acount() == 0
        await communicator.send_json_to(generate_message())
        retried = await ws_events(communicator)
    finally:
        await communicator.disconnect()
    assert [e["type"] for e in retried][-2:] == ["saved", "done"]
    statuses = sorted([run.status async for run in GenerationRun.objects.all()])
    assert statuses == ["failed", "succeeded"]


async def test_invalid_json_from_the_model_gives_invalid_output_and_saves_nothing(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(
        Reply(text='{"title": "Broken", "scenes": [{"heading": "INT. A - DAY", "elements": [}')
    )
    events = await _generate(writer)
    assert events[-1]["code"] == "invalid_output"
    run = await _nothing_saved_but_a_failed_run("invalid_output")
    assert run.raw_text.startswith('{"title": "Broken"')


async def test_a_speaker_outside_the_cast_gives_invalid_output(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(Reply(text=screenplay_text(screenplay(speakers=("SAM SPADE", "THE FAT MAN")))))
    events = await _generate(writer)
    assert events[-1]["code"] == "invalid_output" and "THE FAT MAN" in events[-1]["message"]
    await _nothing_saved_but_a_failed_run("invalid_output")


async def test_a_screenplay_outside_the_contract_gives_invalid_output(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    bad = screenplay()
    bad["scenes"][0]["elements"][0] = {"type": "song", "text": "La la"}
    fake_anthropic.script(Reply(text=screenplay_text(bad)))
    events = await _generate(writer)
    assert events[-1]["code"] == "invalid_output"
    await _nothing_saved_but_a_failed_run("invalid_output")


async def test_fenced_json_is_accepted(writer: Any, cast: Any, fake_anthropic: FakeAnthropic) -> None:
    expected = screenplay(scenes=2)
    fake_anthropic.script(Reply(text="Here is your screenplay:\n" + screenplay_text(expected, fenced=True)))
    events = await _generate(writer)
    assert [e["scene"] for e in events if e["type"] == "scene"] == expected["scenes"]
    version = await ScreenplayVersion.objects.aget()
    assert version.content == expected


async def test_the_fake_servers_default_reply_follows_the_apps_prompt_through_a_continuation(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # The reply the standalone fake server gives (README: "Trying the Anthropic back-end without a key").
    fake_anthropic.default = screenplay_reply_for
    # 300: each continuation repeats the header (about 75 tokens) before its scenes.
    events = await _generate(writer, max_tokens=300, plot="One. Two. Three. Four.")
    assert events[-1]["type"] == "done"
    version = await ScreenplayVersion.objects.aget()
    assert [s["summary"] for s in version.content["scenes"]] == ["One.", "Two.", "Three.", "Four."]
    assert {c["persona"] for c in version.content["characters"]} == {"noir-detective", "femme-fatale"}
    assert len(fake_anthropic.requests) > 1

"""Parallel mode against the fake Anthropic server: outline, fan-out, caching, faults, cancel, 429."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from stories.generation.limiter import AdaptiveLimiter
from stories.models import GenerationRun, ScreenplayVersion, Story
from tests.fake_anthropic import FakeAnthropic, Reply
from tests.fake_screenwriter import (
    FakeScreenwriter,
    scene_number,
    screenplay_as_assembled,
    screenplay_outline,
)
from tests.stories.generation.conftest import (
    generate_message,
    screenplay,
    unaddressed,
    ws_connect,
    ws_events,
    ws_generate,
)

pytestmark = pytest.mark.django_db(transaction=True)


async def _generate(writer: Any, **fields: Any) -> list[dict[str, Any]]:
    return await ws_generate(writer, timeout=20, **{"mode": "parallel", **fields})


def _scene_requests(fake: FakeAnthropic) -> list[Any]:
    return [r for r in fake.requests if scene_number(r.body) is not None]


async def _saved_content(story_id: int) -> dict[str, Any]:
    version = await ScreenplayVersion.objects.aget(story_id=story_id)
    return version.content


async def test_outline_then_every_scene_assembled_in_outline_order_whatever_order_they_finish(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    expected = screenplay(scenes=4)
    # The first scene is the slowest and the last the fastest: they finish in reverse order.
    fake_anthropic.default = FakeScreenwriter(
        expected,
        tokens_per_second=4000,
        chunk_chars=8,
        scene_tokens_per_second={0: 150, 1: 300, 2: 800, 3: 4000},
    )
    events = await _generate(writer)
    types = [event["type"] for event in events]
    assert types[0] == "accepted" and types[-2:] == ["saved", "done"]
    # The outline streams and is announced before any scene is written.
    assert "outline_delta" in types
    outline_at = types.index("outline")
    assert outline_at < types.index("scene_delta")
    assert [s["heading"] for s in events[outline_at]["scenes"]] == [s["heading"] for s in expected["scenes"]]
    assert events[outline_at]["outline"] == screenplay_outline(expected)
    # Scenes arrive as they finish, each with its index.
    finished = [event["index"] for event in events if event["type"] == "scene"]
    assert sorted(finished) == [0, 1, 2, 3] and finished[-1] == 0
    for index in range(4):
        streamed = "".join(e["text"] for e in events if e["type"] == "scene_delta" and e["index"] == index)
        # Every call sends the same schema (one cached prefix): the scene comes wrapped in a step reply.
        assert json.loads(streamed) == {"outline": None, "scene": expected["scenes"][index]}
    # The saved screenplay is in outline order, and is what the scene events showed.
    content = await _saved_content(events[-2]["story_id"])
    assert content == screenplay_as_assembled(expected)
    scene_events = {e["index"]: e["scene"] for e in events if e["type"] == "scene"}
    assert content["scenes"] == [scene_events[i] for i in range(4)]
    # One outline call, then one call per scene.
    assert scene_number(fake_anthropic.requests[0].body) is None
    assert sorted(scene_number(r.body) or 0 for r in fake_anthropic.requests[1:]) == [1, 2, 3, 4]
    run = await GenerationRun.objects.aget(pk=events[0]["run_id"])
    assert run.status == "succeeded" and run.mode == "parallel"
    calls = run.details["calls"]
    assert (calls[0]["task"], calls[0]["status"]) == ("outline", "ok")
    assert sorted(c["index"] for c in calls if c["task"] == "scene") == [0, 1, 2, 3]
    assert run.output_tokens == sum(c["output_tokens"] for c in calls)
    assert run.total_ms is not None and run.details["first_scene_ms"] <= run.total_ms
    # The model's part of the run, outline to last scene (it was never recorded in parallel mode).
    assert run.llm_ms is not None and 0 < run.llm_ms <= run.total_ms
    assert events[-1]["timings"]["llm_ms"] == run.llm_ms


async def test_no_more_scene_calls_run_at_once_than_the_concurrency_setting(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    settings.STORY_PARALLEL_CONCURRENCY = 2
    expected = screenplay(scenes=6)
    fake_anthropic.default = FakeScreenwriter(expected, ttft=0.15, tokens_per_second=3000, chunk_chars=16)
    events = await _generate(writer)
    assert events[-1]["type"] == "done"
    scenes = _scene_requests(fake_anthropic)
    assert len(scenes) == 6
    # Bounded, and really concurrent: the fake server saw two scene calls at once, never three.
    assert max(r.active_at_arrival for r in scenes) == 2
    assert fake_anthropic.max_active == 2
    run = await GenerationRun.objects.aget(pk=events[0]["run_id"])
    assert run.details["concurrency"] == {"configured": 2, "final": 2, "max_active": 2}


async def test_with_short_personas_only_the_outline_prefix_is_marked_and_later_scenes_read_it(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    # Sonnet 4.6 caches prefixes from 1,024 tokens (the 5.x models from 512, where even the
    # instructions and personas alone would pass).
    settings.STORY_MODELS = [*settings.STORY_MODELS, "claude-sonnet-4-6"]
    fake = fake_anthropic
    fake.prompt_cache = True
    fake.default = FakeScreenwriter(screenplay(scenes=5), ttft=0.05, tokens_per_second=4000)
    events = await _generate(writer, model="claude-sonnet-4-6")
    assert events[-1]["type"] == "done"
    bodies = [r.body for r in fake.requests]
    assert len(bodies) == 6
    # Instructions and personas: the same first two blocks in every call, too short to be worth a mark.
    for body in bodies:
        assert body["system"][:2] == bodies[0]["system"][:2]
        assert all("cache_control" not in block for block in body["system"][:2])
    # Scene calls add the plot and outline, identical across the fan-out and marked: with it the
    # prefix passes Sonnet's minimum.
    for body in bodies[1:]:
        assert body["system"][2] == bodies[1]["system"][2]
        assert body["system"][2]["cache_control"] == {"type": "ephemeral"}
        assert "<outline>" in body["system"][2]["text"]
    run = await GenerationRun.objects.aget(pk=events[0]["run_id"])
    calls = [c for c in run.details["calls"] if c["task"] == "scene"]
    first = next(c for c in calls if c["index"] == 0)
    rest = [c for c in calls if c["index"] != 0]
    # The first scene writes the prefix; every other scene reads it.
    assert first["cache_read_tokens"] == 0 and first["cache_write_tokens"] > 0
    assert all(c["cache_read_tokens"] == first["cache_write_tokens"] for c in rest)
    assert all(c["cache_write_tokens"] == 0 for c in rest)
    assert run.cache_read_tokens == sum(c.get("cache_read_tokens", 0) for c in run.details["calls"])
    assert run.cache_write_tokens == sum(c.get("cache_write_tokens", 0) for c in run.details["calls"])
    assert events[-1]["usage"]["cache_read_tokens"] == run.cache_read_tokens


async def test_a_scene_that_fails_is_retried_on_its_own_and_the_screenplay_is_saved(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    expected = screenplay(scenes=3)
    screenwriter = FakeScreenwriter(expected, tokens_per_second=4000, chunk_chars=8)
    # Scene 2 drops its connection after some text has streamed, then succeeds.
    screenwriter.fail_scene(1, Reply(text=json.dumps(expected["scenes"][1]), chunk_chars=8, drop_after=2))
    fake_anthropic.default = screenwriter
    events = await _generate(writer)
    assert events[-1]["type"] == "done"
    retries = [e for e in events if e["type"] == "scene_retry"]
    assert [unaddressed(e) for e in retries] == [
        {"type": "scene_retry", "index": 1, "attempt": 1, "code": "llm_unavailable"}
    ]
    # Only scene 2 was asked for twice.
    numbers = sorted(scene_number(r.body) or 0 for r in _scene_requests(fake_anthropic))
    assert numbers == [1, 2, 2, 3]
    assert await _saved_content(events[-2]["story_id"]) == screenplay_as_assembled(expected)
    run = await GenerationRun.objects.aget(pk=events[0]["run_id"])
    statuses = [(c["index"], c["attempt"], c["status"]) for c in run.details["calls"] if c["task"] == "scene"]
    assert (1, 0, "llm_unavailable") in statuses and (1, 1, "ok") in statuses


async def test_a_scene_reply_that_is_no_scene_is_retried_and_logged_as_invalid_not_ok(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    expected = screenplay(scenes=2)
    screenwriter = FakeScreenwriter(expected, tokens_per_second=4000, chunk_chars=8)
    # Scene 2's first reply streams to its end, but is no scene: the call went well, its reply did not.
    screenwriter.fail_scene(1, Reply(text='{"heading": "INT. NOWHERE - DAY"}', chunk_chars=8))
    fake_anthropic.default = screenwriter
    events = await _generate(writer)
    assert events[-1]["type"] == "done"
    assert [e["code"] for e in events if e["type"] == "scene_retry"] == ["invalid_output"]
    run = await GenerationRun.objects.aget(pk=events[0]["run_id"])
    statuses = [(c["index"], c["attempt"], c["status"]) for c in run.details["calls"] if c["task"] == "scene"]
    assert sorted(statuses) == [(0, 0, "ok"), (1, 0, "invalid_output"), (1, 1, "ok")]


async def test_a_scene_that_keeps_failing_fails_the_generation_cancels_the_others_and_saves_nothing(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    settings.STORY_PARALLEL_SCENE_RETRIES = 1
    expected = screenplay(scenes=4)
    screenwriter = FakeScreenwriter(
        expected, tokens_per_second=4000, scene_tokens_per_second={0: 20, 1: 20, 3: 20}, chunk_chars=8
    )
    screenwriter.always_fail[2] = Reply(status=500, error_type="api_error", error_message="boom")
    fake_anthropic.default = screenwriter
    events = await _generate(writer)
    error = events[-1]
    assert error["type"] == "error" and error["code"] == "llm_unavailable"
    assert "scene 3 (INT. OFFICE 3 - NIGHT)" in error["message"]
    assert "saved" not in [e["type"] for e in events]
    assert await Story.objects.acount() == 0
    run = await GenerationRun.objects.aget(pk=events[0]["run_id"])
    assert run.status == "failed" and run.error_code == "llm_unavailable"
    # Scene 3 was tried twice; the slow scenes still streaming were hung up on.
    assert [scene_number(r.body) for r in _scene_requests(fake_anthropic)].count(3) == 2
    others = [r for r in _scene_requests(fake_anthropic) if scene_number(r.body) != 3]
    assert others and all(fake_anthropic.wait_for_disconnect(r, timeout=1.0) for r in others)


async def test_cancel_mid_fan_out_hangs_up_every_scene_call_within_a_second(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.default = FakeScreenwriter(
        screenplay(scenes=4), tokens_per_second=4000, scene_tokens_per_second=dict.fromkeys(range(4), 10.0)
    )
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to(generate_message(mode="parallel"))
        seen: set[int] = set()
        while len(seen) < 4:
            event = json.loads(await communicator.receive_from(timeout=10))
            if event["type"] == "scene_delta":
                seen.add(event["index"])
            assert event["type"] not in ("error", "done")
        await communicator.send_json_to({"type": "cancel"})
        events = await ws_events(communicator)
    finally:
        await communicator.disconnect()
    assert events[-1]["type"] == "cancelled"
    scenes = _scene_requests(fake_anthropic)
    assert len(scenes) == 4
    assert all(fake_anthropic.wait_for_disconnect(r, timeout=1.0) for r in scenes)
    assert await Story.objects.acount() == 0
    run = await GenerationRun.objects.alatest("created_at")
    assert run.status == "cancelled"
    assert {c["status"] for c in run.details["calls"] if c["task"] == "scene"} == {"cancelled"}


async def test_a_rate_limited_scene_call_lowers_the_concurrency_instead_of_failing(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    settings.STORY_PARALLEL_CONCURRENCY = 4
    expected = screenplay(scenes=6)
    # The first scene is slow: the 429 on scene 2 comes while it still holds its slot.
    screenwriter = FakeScreenwriter(
        expected, ttft=0.1, tokens_per_second=2000, chunk_chars=16, scene_tokens_per_second={0: 200}
    )
    rate_limited = Reply(
        status=429, error_type="rate_limit_error", error_message="slow down", headers={"retry-after": "0"}
    )
    screenwriter.fail_scene(1, rate_limited)
    fake_anthropic.default = screenwriter
    events = await _generate(writer)
    assert events[-1]["type"] == "done"
    assert await _saved_content(events[-2]["story_id"]) == screenplay_as_assembled(expected)
    retry = {"type": "scene_retry", "index": 1, "attempt": 1, "code": "llm_rate_limited"}
    assert retry in [unaddressed(e) for e in events]
    requests = _scene_requests(fake_anthropic)
    limited_at = next(i for i, r in enumerate(requests) if scene_number(r.body) == 2)
    # Calls that started after the 429 (scene 2's retry and the scenes still waiting) ran two at a time.
    later = [r for r in requests[limited_at + 1 :] if scene_number(r.body) in (2, 5, 6)]
    assert len(later) == 3
    assert max(r.active_at_arrival for r in later) <= 2
    run = await GenerationRun.objects.aget(pk=events[0]["run_id"])
    assert run.details["concurrency"]["configured"] == 4
    # Halved to 2 by the 429; two of the three calls started after it succeeded: back up to 3.
    assert run.details["concurrency"]["final"] == 3


async def test_the_limiter_climbs_back_after_a_429_one_step_per_window_of_successes() -> None:
    limiter = AdaptiveLimiter(6)
    async with limiter.slot() as before_the_429:
        limiter.reduce()
    assert limiter.limit == 3
    limiter.succeeded(before_the_429)  # a call that started before the 429 proves nothing
    assert limiter.limit == 3
    for expected in (4, 5, 6):
        for _ in range(limiter.limit):
            async with limiter.slot() as epoch:
                pass
            limiter.succeeded(epoch)
        assert limiter.limit == expected
    for _ in range(20):
        async with limiter.slot() as epoch:
            pass
        limiter.succeeded(epoch)
    assert limiter.limit == 6  # never above the configured concurrency


async def test_a_raised_limit_lets_a_waiting_call_start_at_once() -> None:
    limiter = AdaptiveLimiter(2)
    limiter.reduce()
    started = asyncio.Event()

    async def waiting_call() -> None:
        async with limiter.slot():
            started.set()

    async with limiter.slot() as epoch:
        waiter = asyncio.ensure_future(waiting_call())
        await asyncio.sleep(0.05)
        assert not started.is_set()  # limit 1, taken
        limiter.succeeded(epoch)  # one success at limit 1: the limit is 2 again
        await asyncio.wait_for(started.wait(), timeout=1)
    await waiter


async def test_the_offline_model_writes_in_parallel_mode_too(writer: Any, cast: Any, offline: None) -> None:
    events = await _generate(writer, plot="A statue goes missing. A lie is told. The fog lifts.")
    types = [event["type"] for event in events]
    assert types[-2:] == ["saved", "done"] and "outline" in types
    outline = next(e for e in events if e["type"] == "outline")
    content = await _saved_content(events[-2]["story_id"])
    assert [s["heading"] for s in content["scenes"]] == [s["heading"] for s in outline["scenes"]]
    assert len(content["scenes"]) == 3
    run = await GenerationRun.objects.aget(pk=events[0]["run_id"])
    assert run.mode == "parallel" and run.status == "succeeded"


async def test_the_offline_model_continues_a_cut_off_outline_in_parallel_mode(
    writer: Any, cast: Any, offline: None
) -> None:
    plot = " ".join(f"Clue number {n} turns up in the fog." for n in range(12))
    events = await _generate(writer, plot=plot, max_tokens=256)
    assert events[-1]["type"] == "done", events[-1]
    content = await _saved_content(events[-2]["story_id"])
    run = await GenerationRun.objects.aget(pk=events[0]["run_id"])
    assert run.details["calls"][0]["stop_reason"] == "max_tokens" and run.continuations >= 1
    # Each plot beat's scene once, in order, however many calls the outline took.
    beats = [f"Clue number {n} turns up in the fog." for n in range(12)]
    assert [s["summary"] for s in content["scenes"]] == beats


async def test_the_default_mode_comes_from_the_setting(
    writer: Any, cast: Any, offline: None, settings: Any
) -> None:
    settings.STORY_DEFAULT_MODE = "parallel"
    events = await ws_generate(writer)
    assert "outline" in [e["type"] for e in events] and events[-1]["type"] == "done"
    assert (await GenerationRun.objects.aget(pk=events[0]["run_id"])).mode == "parallel"


def test_an_unknown_mode_is_refused() -> None:
    from stories.errors import GenerationError
    from stories.generation.requests import generation_request_parse

    with pytest.raises(GenerationError) as raised:
        generation_request_parse({"plot": "p", "personas": ["a"], "mode": "turbo"})
    assert raised.value.code == "invalid_request" and "mode" in raised.value.message
    assert generation_request_parse({"plot": "p", "personas": ["a"], "mode": "parallel"}).mode == "parallel"


async def test_cancelling_the_fan_out_leaves_no_task_behind(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.default = FakeScreenwriter(
        screenplay(scenes=3), scene_tokens_per_second={0: 5, 1: 5, 2: 5}
    )
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to(generate_message(mode="parallel"))
        while json.loads(await communicator.receive_from(timeout=10))["type"] != "scene_delta":
            pass
        await communicator.send_json_to({"type": "cancel"})
        assert (await ws_events(communicator))[-1]["type"] == "cancelled"
    finally:
        await communicator.disconnect()
    await asyncio.sleep(0.1)
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("scene-")]


def test_the_command_writes_parallel_scenes_to_stdout_in_screenplay_order(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    import io

    from django.core.management import call_command

    expected = screenplay(scenes=3)
    fake_anthropic.default = FakeScreenwriter(
        expected, tokens_per_second=4000, chunk_chars=8, scene_tokens_per_second={0: 200, 1: 400}
    )
    out, err = io.StringIO(), io.StringIO()
    plot = ["--plot", "A statue, a lie, a fog.", "--persona", "noir-detective", "--persona", "femme-fatale"]
    call_command("generate_screenplay", *plot, "--mode", "parallel", stdout=out, stderr=err)
    headings = [line for line in out.getvalue().splitlines() if line.startswith("INT.")]
    assert headings == [scene["heading"] for scene in expected["scenes"]]
    run = GenerationRun.objects.get()
    assert run.mode == "parallel" and run.status == "succeeded"
    # The scenes did finish out of order: the first took longest.
    took = {c["index"]: c["ms"] for c in run.details["calls"] if c["task"] == "scene"}
    assert took[0] > took[1] > took[2]


async def test_the_output_cap_bounds_the_whole_run_outline_and_scenes_together(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    settings.STORY_MAX_TOTAL_OUTPUT_TOKENS = 3000
    expected = screenplay(scenes=4)
    fake_anthropic.default = FakeScreenwriter(expected, tokens_per_second=4000, chunk_chars=16)
    events = await _generate(writer, max_tokens=4096)
    assert events[-1]["type"] == "done"
    assert await _saved_content(events[-2]["story_id"]) == screenplay_as_assembled(expected)
    run = await GenerationRun.objects.aget(pk=events[0]["run_id"])
    outline_tokens = run.details["calls"][0]["output_tokens"]
    scene_limits = [r.body["max_tokens"] for r in _scene_requests(fake_anthropic)]
    # The first scene starts alone: it may write a quarter of what the outline left. The others share
    # what is left once it is under way (what it has not used comes back when it ends); none may
    # write the run's whole max_tokens, and the run stays under the cap.
    assert len(scene_limits) == 4
    assert scene_limits[0] == (3000 - outline_tokens) // 4
    assert max(scene_limits) < 4096
    assert run.output_tokens <= 3000


async def test_the_output_cap_holds_each_calls_thinking_reserve_too(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    # Thinking tokens are output tokens, and each call goes out with its thinking reserve added to its
    # max_tokens: the cap was shared as if calls wrote text only, so four scenes in flight could write
    # four reserves past it.
    settings.STORY_MAX_TOTAL_OUTPUT_TOKENS = 12_000
    settings.STORY_THINKING_BUDGET_TOKENS = 1500
    expected = screenplay(scenes=4)
    fake_anthropic.default = FakeScreenwriter(expected, tokens_per_second=4000, chunk_chars=16)
    events = await _generate(writer, max_tokens=4096)
    assert events[-1]["type"] == "done"
    run = await GenerationRun.objects.aget(pk=events[0]["run_id"])
    outline_request = fake_anthropic.requests[0]
    # The outline's call, text and reserve, is within the cap.
    assert outline_request.body["max_tokens"] == 4096 + 1500
    outline_tokens = run.details["calls"][0]["output_tokens"]
    scene_limits = [r.body["max_tokens"] for r in _scene_requests(fake_anthropic)]
    # The first scene starts alone with a quarter of what the outline left, its reserve included.
    assert scene_limits[0] == (12_000 - outline_tokens) // 4
    assert run.output_tokens <= 12_000


async def test_a_thinking_reserve_that_takes_the_whole_cap_fails_before_any_call(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    settings.STORY_MAX_TOTAL_OUTPUT_TOKENS = 2000
    settings.STORY_THINKING_BUDGET_TOKENS = 2000
    fake_anthropic.default = FakeScreenwriter(screenplay(scenes=2), tokens_per_second=4000, chunk_chars=16)
    for mode in ("parallel", "single"):
        events = await ws_generate(writer, mode=mode, max_tokens=4096)
        error = events[-1]
        assert error["type"] == "error" and error["code"] == "llm_config"
        assert "STORY_THINKING_BUDGET_TOKENS" in error["message"]
    assert fake_anthropic.requests == []


async def test_a_cap_too_small_for_the_scenes_fails_naming_it_and_saves_nothing(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    settings.STORY_MAX_TOTAL_OUTPUT_TOKENS = 800
    settings.STORY_MIN_MAX_TOKENS = 256
    fake_anthropic.default = FakeScreenwriter(screenplay(scenes=6), tokens_per_second=4000, chunk_chars=16)
    events = await _generate(writer, max_tokens=4096)
    error = events[-1]
    assert error["type"] == "error" and error["code"] == "invalid_output"
    assert "STORY_MAX_TOTAL_OUTPUT_TOKENS" in error["message"] and "nothing was saved" in error["message"]
    assert not [e for e in events if e["type"] == "scene_retry"]  # retrying could not help
    assert _scene_requests(fake_anthropic) == []
    assert await Story.objects.acount() == 0


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (
            Reply(status=429, error_type="rate_limit_error", error_code="enforced_spend_limit_reached"),
            "llm_quota",
        ),
        (Reply(status=429, error_type="rate_limit_error", should_retry=False), "llm_rate_limited"),
        # A scene the model ended early for a reason another try meets again (paid, and retried twice).
        (
            Reply(
                text='{"outline": null, "scene": {"heading": "INT',
                stop_reason="model_context_window_exceeded",
            ),
            "invalid_output",
        ),
    ],
    ids=["spend-limit", "x-should-retry-false", "context-window-full"],
)
async def test_a_scene_error_that_must_not_be_retried_fails_at_once(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, reply: Reply, code: str
) -> None:
    # The rate-limit loop used to retry any llm_rate_limited scene up to four times.
    expected = screenplay(scenes=3)
    screenwriter = FakeScreenwriter(expected, tokens_per_second=4000, chunk_chars=8)
    screenwriter.always_fail[1] = reply
    fake_anthropic.default = screenwriter
    events = await _generate(writer)
    error = events[-1]
    assert (error["type"], error["code"], error["retryable"]) == ("error", code, False)
    assert error["message"].count("nothing was saved") == 1, error["message"]
    # Another scene's call made during the 429's retry-after gets a 429 too, as from the API (the
    # limit is the account's), and may be retried: scene 2 itself is not.
    assert not [e for e in events if e["type"] == "scene_retry" and e["index"] == 1]
    assert [scene_number(r.body) for r in _scene_requests(fake_anthropic)].count(2) == 1
    assert await Story.objects.acount() == 0


async def test_a_scene_429_asking_for_a_longer_wait_than_the_back_off_allows_fails_at_once(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # Was: retried four times after 10 s each, before the minute the API asked for, each retry refused
    # again ("Earlier retries will fail", api/rate-limits), and the writer told after 40 s what it knew.
    expected = screenplay(scenes=3)
    screenwriter = FakeScreenwriter(expected, tokens_per_second=4000, chunk_chars=8)
    screenwriter.always_fail[1] = Reply(
        status=429, error_type="rate_limit_error", headers={"retry-after": "60"}
    )
    fake_anthropic.default = screenwriter
    events = await _generate(writer)
    error = events[-1]
    assert (error["type"], error["code"], error["retryable"]) == ("error", "llm_rate_limited", True)
    assert 59 <= error["retry_after"] <= 60
    assert not [e for e in events if e["type"] == "scene_retry"]
    assert [scene_number(r.body) for r in _scene_requests(fake_anthropic)].count(2) == 1
    assert await Story.objects.acount() == 0


async def test_an_outline_and_a_scene_cut_at_max_tokens_are_continued_and_the_screenplay_saved(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    expected = screenplay(scenes=6)
    # Scene 3 is far longer than max_tokens; the outline of six scenes is longer too.
    expected["scenes"][2]["elements"] += [
        {
            "type": "action",
            "text": f"The rain keeps falling on the office window, hour {n}, and nobody moves.",
        }
        for n in range(12)
    ]
    screenwriter = FakeScreenwriter(expected, tokens_per_second=4000, cut_at_max_tokens=True)
    fake_anthropic.default = screenwriter
    events = await _generate(writer, max_tokens=256)
    assert events[-1]["type"] == "done", events[-1]
    assert await _saved_content(events[-2]["story_id"]) == screenplay_as_assembled(expected)
    run = await GenerationRun.objects.aget(pk=events[0]["run_id"])
    stops = [(c["task"], c["index"], c["stop_reason"]) for c in run.details["calls"]]
    assert stops[0] == ("outline", None, "max_tokens") and ("scene", 2, "max_tokens") in stops
    assert run.continuations >= 2
    # The outline's continuation was handed the cast with the entries kept, and asked for the rest.
    outline_more = next(r.body for r in fake_anthropic.requests if len(r.body["messages"]) == 3)
    kept = json.loads(outline_more["messages"][1]["content"])["outline"]
    assert [c["name"] for c in kept["characters"]] == ["SAM SPADE", "BRIGID"]
    assert f"after {len(kept['scenes'])} complete scene entries" in outline_more["messages"][2]["content"]
    assert outline_more["output_config"] == fake_anthropic.requests[0].body["output_config"]

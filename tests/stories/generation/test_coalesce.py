"""Fewer text events (stories.generation.coalesce): merged deltas, the first at once, the order kept.

The unit tests drive ``text_coalesced`` with a scripted upstream on the real event loop; the socket
tests run whole generations against the fake Anthropic server with the real SDK.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import pytest

from stories.generation.coalesce import text_coalesced
from stories.generation.stream import ScreenplayStreamParser
from stories.models import GenerationRun
from tests.fake_anthropic import FakeAnthropic, Reply, screenplay_text
from tests.stories.generation.conftest import screenplay, ws_generate


def _delta(text: str) -> dict[str, Any]:
    return {"type": "delta", "text": text}


async def _scripted(script: list[Any], log: list[str]) -> AsyncGenerator[dict[str, Any], None]:
    """Yield each event of ``script``; a number is a pause of that many seconds. Logs how it ended."""
    try:
        for item in script:
            if isinstance(item, float):
                await asyncio.sleep(item)
            else:
                yield item
        log.append("finished")
    except asyncio.CancelledError:
        log.append("cancelled")
        raise
    except GeneratorExit:
        log.append("closed")
        raise


async def _timed(events: AsyncGenerator[dict[str, Any], None]) -> list[tuple[float, dict[str, Any]]]:
    started = time.monotonic()
    async with aclosing(events) as stream:
        return [(time.monotonic() - started, event) async for event in stream]


async def test_the_first_delta_goes_at_once_and_a_stalled_model_does_not_hold_text_back() -> None:
    log: list[str] = []
    script = [_delta("a"), _delta("b"), _delta("c"), 0.5, _delta("d")]
    out = await _timed(text_coalesced(_scripted(script, log), interval_ms=40))
    assert [event["text"] for _, event in out] == ["a", "bc", "d"]
    first, merged, after_pause = (at for at, _ in out)
    assert first < 0.03
    # "bc" went out when its interval ended, while the model was still silent (not when "d" came).
    assert merged < 0.3
    assert after_pause >= 0.5
    assert log == ["finished"]


async def test_all_the_text_that_came_during_an_interval_goes_out_together_when_it_ends() -> None:
    script = [_delta("a"), 0.02, _delta("b"), 0.02, _delta("c"), 0.02, _delta("d"), 0.6, _delta("e")]
    out = await _timed(text_coalesced(_scripted(script, []), interval_ms=200))
    assert [event["text"] for _, event in out] == ["a", "bcd", "e"]
    # "bcd" at the end of the interval that "a" opened, none of it held for a further interval.
    assert 0.15 < out[1][0] < 0.4


async def test_any_other_event_sends_the_waiting_text_first_so_the_order_is_kept() -> None:
    scene = {"type": "scene", "index": 0, "scene": {"heading": "INT. ROOM"}}
    script = [_delta("a"), _delta("b"), _delta("c"), scene, _delta("d"), {"type": "done"}]
    out = await _timed(text_coalesced(_scripted(script, []), interval_ms=1000))
    assert [event for _, event in out] == [
        _delta("a"),
        _delta("bc"),
        scene,
        _delta("d"),
        {"type": "done"},
    ]


async def test_scene_deltas_are_merged_per_scene_each_in_its_order() -> None:
    script = [
        {"type": "scene_delta", "index": 0, "text": "a"},
        {"type": "scene_delta", "index": 1, "text": "x"},
        {"type": "scene_delta", "index": 0, "text": "b"},
        {"type": "scene_delta", "index": 1, "text": "y"},
        {"type": "outline_delta", "text": "o"},
    ]
    out = await _timed(text_coalesced(_scripted(script, []), interval_ms=1000))
    assert [event for _, event in out] == [
        {"type": "scene_delta", "index": 0, "text": "a"},
        {"type": "scene_delta", "index": 1, "text": "xy"},
        {"type": "scene_delta", "index": 0, "text": "b"},
        {"type": "outline_delta", "text": "o"},
    ]


async def test_closing_while_the_model_is_silent_cancels_the_upstream_where_it_waits() -> None:
    log: list[str] = []
    events = text_coalesced(_scripted([_delta("a"), _delta("b"), 5.0, _delta("c")], log), interval_ms=40)
    assert await events.__anext__() == _delta("a")
    assert await events.__anext__() == _delta("b")  # sent by the timer while the upstream sleeps
    started = time.monotonic()
    await events.aclose()
    assert log == ["cancelled"]
    assert time.monotonic() - started < 1


async def test_a_cancel_of_the_reader_reaches_the_upstream_as_a_cancel() -> None:
    log: list[str] = []

    async def read() -> list[dict[str, Any]]:
        got = []
        events = text_coalesced(_scripted([_delta("a"), _delta("b"), 5.0], log), interval_ms=1000)
        async with aclosing(events) as stream:
            async for event in stream:
                got.append(event)
        return got

    task = asyncio.ensure_future(read())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["cancelled"]


async def test_an_interval_of_zero_passes_every_event_through() -> None:
    script = [_delta("a"), _delta("b"), _delta("c")]
    out = await _timed(text_coalesced(_scripted(script, []), interval_ms=0))
    assert [event["text"] for _, event in out] == ["a", "b", "c"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("interval_ms", "paced_ms"), [(0, 0), (40, 0), (0, 100)])
async def test_a_fast_stream_reaches_the_socket_in_fewer_frames_with_all_its_text_and_scenes(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any, interval_ms: int, paced_ms: int
) -> None:
    settings.STORY_STREAM_COALESCE_MS = interval_ms
    # Paced reads from the first stream on: the chunks of a read go up the pipeline as one delta.
    settings.STORY_STREAM_PACED_READ_MS, settings.STORY_STREAM_PACED_READ_STREAMS = paced_ms, 1
    settings.STORY_STREAM_PACED_READ_BUSY_PERCENT = 0  # whatever the test process's load
    content = screenplay(scenes=4)
    text = screenplay_text(content)
    fake_anthropic.script(Reply(text=text, tokens_per_second=2000, chunk_chars=4))
    events = await ws_generate(writer)
    deltas = [e for e in events if e["type"] == "delta"]
    chunks = -(-len(text) // 4)
    assert "".join(d["text"] for d in deltas) == text
    if interval_ms or paced_ms:
        # About 2,000 chunks a second: a frame per 40 ms, or a read per 100 ms, carries many of them.
        assert len(deltas) < chunks / 3, (len(deltas), chunks)
    else:
        # Unmerged: a frame per network read of the model's stream (chunks read together are one).
        assert len(deltas) <= chunks
    # Each scene event comes after the text that closes it, and before any text that follows it.
    scenes = [e["scene"] for e in events if e["type"] == "scene"]
    assert scenes == content["scenes"]
    sent = ""
    for event in events:
        if event["type"] == "delta":
            sent += event["text"]
        elif event["type"] == "scene":
            parser = ScreenplayStreamParser()
            parser.feed(sent)
            assert parser.scenes == content["scenes"][: event["index"] + 1]
    assert events[-1]["type"] == "done"
    run = await GenerationRun.objects.alatest("id")
    assert run.status == GenerationRun.Status.SUCCEEDED

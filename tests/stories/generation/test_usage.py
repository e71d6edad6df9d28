"""A run's recorded usage is what was billed, also when its stream was cut off (issue 13, item 6).

The real SDK against the fake Anthropic server: ``message_start`` reports the input (and cache) tokens,
``message_delta`` the call's output tokens at its end. A call cut before ``message_delta`` keeps the
former and estimates its output from the text received, and the run is marked as estimated.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from typing import Any

import pytest
from django.core.management import call_command

from stories.models import GenerationRun
from storyproject.tokens import token_estimate
from tests.fake_anthropic import FakeAnthropic, Reply, screenplay_text
from tests.fake_screenwriter import FakeScreenwriter
from tests.stories.generation.conftest import generate_message, screenplay, ws_connect, ws_events, ws_generate

pytestmark = pytest.mark.django_db(transaction=True)


async def _deltas_then(communicator: Any, message: dict[str, Any] | None, deltas: int = 3) -> None:
    """Wait for ``deltas`` text deltas of the running generation, then send ``message`` (or hang up)."""
    seen = 0
    while seen < deltas:
        event = json.loads(await communicator.receive_from(timeout=10))
        assert event["type"] not in ("error", "done"), event
        seen += event["type"] in ("delta", "scene_delta")
    if message is None:
        await communicator.disconnect()
    else:
        await communicator.send_json_to(message)


async def _closed_run(timeout: float = 5.0) -> GenerationRun:
    """The one run, once it is closed (a disconnect closes it in the background)."""
    deadline = time.monotonic() + timeout
    while (run := await GenerationRun.objects.aget()).status == "streaming" and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return run


async def test_a_run_cancelled_mid_stream_records_its_input_tokens_and_an_output_estimate(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(
        Reply(
            text=screenplay_text(screenplay(scenes=6)),
            input_tokens=1234,
            cache_read_tokens=900,
            tokens_per_second=40,
            chunk_chars=8,
        )
    )
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to(generate_message())
        await _deltas_then(communicator, {"type": "cancel"})
        assert (await ws_events(communicator))[-1]["type"] == "cancelled"
    finally:
        await communicator.disconnect()
    run = await GenerationRun.objects.aget()
    assert run.status == "cancelled"
    # From message_start, exact; the output only estimated, from the text the model sent.
    assert (run.input_tokens, run.cache_read_tokens) == (1234, 900)
    assert run.output_tokens == token_estimate(run.raw_text) > 0
    assert run.usage_estimated is True


async def test_a_run_cut_by_a_dropped_connection_records_an_output_estimate(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(Reply(text=screenplay_text(screenplay()), input_tokens=800, drop_after=5))
    events = await ws_generate(writer)
    assert events[-1]["code"] == "llm_unavailable"
    run = await GenerationRun.objects.aget()
    assert run.status == "failed" and run.input_tokens == 800
    assert run.output_tokens == token_estimate(run.raw_text) > 0 and run.usage_estimated


async def test_a_finished_run_records_the_reported_usage_not_an_estimate(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(Reply(text=screenplay_text(screenplay()), input_tokens=700, output_tokens=321))
    assert (await ws_generate(writer))[-1]["type"] == "done"
    run = await GenerationRun.objects.aget()
    assert (run.input_tokens, run.output_tokens, run.usage_estimated) == (700, 321, False)


async def test_an_attempt_retried_after_its_stream_began_is_counted_with_the_call(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # An overloaded_error event after message_start and before any text: the back-end tries again. The
    # failed attempt had reported its input (message_start), which was billed like a cut call's; the
    # run counted only the attempt that finished.
    text = screenplay_text(screenplay())
    fake_anthropic.script(
        Reply(text=text, input_tokens=900, cache_read_tokens=300, error_event_after=0),
        Reply(text=text, input_tokens=900, cache_read_tokens=300, output_tokens=321),
    )
    events = await ws_generate(writer)
    assert events[-1]["type"] == "done" and len(fake_anthropic.requests) == 2
    run = await GenerationRun.objects.aget()
    assert (run.input_tokens, run.cache_read_tokens) == (1800, 600)
    # The failed attempt's output is known only as message_start's count (1): an estimate.
    assert (run.output_tokens, run.usage_estimated) == (322, True)
    assert run.details["retries"] == ["llm_overloaded"]


async def test_an_attempt_refused_before_its_stream_began_adds_nothing(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(
        Reply(status=529, headers={"retry-after-ms": "5"}),
        Reply(text=screenplay_text(screenplay()), input_tokens=700, output_tokens=321),
    )
    assert (await ws_generate(writer))[-1]["type"] == "done"
    run = await GenerationRun.objects.aget()
    assert (run.input_tokens, run.output_tokens, run.usage_estimated) == (700, 321, False)


async def test_a_parallel_run_closed_mid_fan_out_counts_every_cut_call(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.default = FakeScreenwriter(
        screenplay(scenes=3), tokens_per_second=4000, scene_tokens_per_second=dict.fromkeys(range(3), 20.0)
    )
    communicator = await ws_connect(writer)
    await communicator.send_json_to(generate_message(mode="parallel"))
    # A cancel closes the fan-out (a disconnect no longer does: the run would go on, issue 16).
    await _deltas_then(communicator, {"type": "cancel"}, deltas=6)
    await communicator.disconnect()
    run = await _closed_run()
    assert run.status == "cancelled" and run.usage_estimated
    scenes = [call for call in run.details["calls"] if call["task"] == "scene"]
    assert scenes and all(call["status"] == "cancelled" and call["usage_estimated"] for call in scenes)
    assert all(call["input_tokens"] > 0 for call in scenes)
    outline = next(call for call in run.details["calls"] if call["task"] == "outline")
    # The run's usage is every call's: the finished outline's as reported, the cut scenes' estimated.
    assert run.output_tokens == outline["output_tokens"] + sum(call["output_tokens"] for call in scenes)
    assert sum(call["output_tokens"] for call in scenes) > 0


def test_the_report_the_runs_page_and_the_api_say_which_runs_are_estimated(client: Any, writer: Any) -> None:
    for estimated in (True, False):
        GenerationRun.objects.create(
            user=writer,
            status="cancelled",
            model="claude-sonnet-5-5",
            max_tokens=1024,
            input_tokens=1000,
            output_tokens=400,
            usage_estimated=estimated,
        )
    out = io.StringIO()
    call_command("generation_report", "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert report["estimated_runs"] == 1 and report["tokens"]["output_tokens"] == 800
    out = io.StringIO()
    call_command("generation_report", stdout=out)
    assert "1 run(s) were cut off before the final usage" in out.getvalue()
    client.force_login(writer)
    html = client.get("/runs/").content.decode()
    assert html.count("~400") == 1 and "1000 / 400" in html
    listed = client.get("/api/runs/").json()["results"]
    assert sorted(run["usage_estimated"] for run in listed) == [False, True]

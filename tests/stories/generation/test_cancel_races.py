"""A cancel or a disconnect at any moment of a run leaves it closed, and the writer free to generate again.

Issue 13: the run row was committed by a worker thread after the task had been cancelled during
admission, so nothing closed it; two such runs made the writer ``busy`` for half an hour.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from stories.models import GenerationRun, ScreenplayVersion, Story
from stories.services import generation_run_admit, generation_run_release
from tests.stories.generation.conftest import (
    SaveHold,
    generate_message,
    screenplay,
    ws_connect,
    ws_events,
)

pytestmark = pytest.mark.django_db(transaction=True)

OFFSETS_SECONDS = (0.0, 0.001, 0.005, 0.02, 0.05)


def _own_story_with_version(user: Any) -> int:
    story = Story.objects.create(owner=user, title="Mine", plot="A plot.", latest_version_number=1)
    ScreenplayVersion.objects.create(story=story, number=1, content=screenplay(scenes=2), model="offline")
    return story.pk


async def _runs_left_open(timeout: float = 5.0) -> list[GenerationRun]:
    """Runs not in a terminal state (or without finished_at), once any closing still under way is done."""
    deadline = time.monotonic() + timeout
    while True:
        open_runs = [
            run
            async for run in GenerationRun.objects.filter(status="streaming")
            | GenerationRun.objects.filter(finished_at__isnull=True)
        ]
        if not open_runs or time.monotonic() > deadline:
            return open_runs
        await asyncio.sleep(0.05)


async def _accepted_now(user: Any) -> dict[str, Any]:
    """The first event of a new generation on a new socket (cancelled again straight after)."""
    communicator = await ws_connect(user)
    try:
        await communicator.send_json_to(generate_message())
        first = json.loads(await communicator.receive_from(timeout=10))
        if first["type"] == "accepted":
            await communicator.send_json_to({"type": "cancel"})
            await ws_events(communicator)
        return first
    finally:
        await communicator.disconnect()


async def test_generate_and_cancel_in_one_burst_twice_closes_both_runs_and_the_writer_is_not_busy(
    writer: Any, cast: Any, offline: None
) -> None:
    communicator = await ws_connect(writer)
    try:
        for _ in range(2):
            await communicator.send_json_to(generate_message())
            await communicator.send_json_to({"type": "cancel"})
            assert (await ws_events(communicator))[-1]["type"] in ("cancelled", "done")
        await communicator.send_json_to(generate_message())
        events = await ws_events(communicator)
        # A run that ended before its cancel was read answers that cancel with "no generation is
        # running", after its `done`: that answer may come first here.
        while events[-1].get("message") == "no generation is running":
            events = await ws_events(communicator)
    finally:
        await communicator.disconnect()
    assert events[0]["type"] == "accepted", events[-1]
    assert await _runs_left_open() == []
    assert await GenerationRun.objects.acount() == 3


async def test_regenerate_scene_and_cancel_in_one_burst_twice_closes_both_runs(
    writer: Any, cast: Any, offline: None
) -> None:
    story_id = await sync_to_async(_own_story_with_version)(writer)
    rewrite = {"type": "regenerate_scene", "story_id": story_id, "version": 1, "index": 0}
    communicator = await ws_connect(writer)
    try:
        for _ in range(2):
            await communicator.send_json_to(rewrite)
            await communicator.send_json_to({"type": "cancel"})
            assert (await ws_events(communicator))[-1]["type"] in ("cancelled", "done")
    finally:
        await communicator.disconnect()
    assert await _runs_left_open() == []
    assert (await _accepted_now(writer))["type"] == "accepted"


async def test_generate_and_close_at_once_twice_closes_both_runs(
    writer: Any, cast: Any, offline: None
) -> None:
    for _ in range(2):
        communicator = await ws_connect(writer)
        await communicator.send_json_to(generate_message())
        await communicator.disconnect(timeout=5)
    assert await _runs_left_open() == []
    assert (await _accepted_now(writer))["type"] == "accepted"


async def test_another_writers_story_is_refused_before_admission_and_uses_no_hourly_slot(
    writer: Any, other_writer: Any, cast: Any, offline: None, settings: Any
) -> None:
    settings.STORY_GENERATIONS_PER_HOUR = 1
    theirs = await sync_to_async(_own_story_with_version)(other_writer)
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to(generate_message(story_id=theirs))
        refused = await ws_events(communicator)
        await communicator.send_json_to(
            {"type": "regenerate_scene", "story_id": theirs, "version": 1, "index": 0}
        )
        refused_rewrite = await ws_events(communicator)
    finally:
        await communicator.disconnect()
    assert [(e["type"], e.get("code")) for e in refused] == [("error", "forbidden")]
    assert [(e["type"], e.get("code")) for e in refused_rewrite] == [("error", "forbidden")]
    assert await GenerationRun.objects.acount() == 0
    # The one generation allowed this hour is still there.
    assert (await _accepted_now(writer))["type"] == "accepted"


async def test_a_run_this_process_no_longer_runs_does_not_keep_its_writer_busy(
    writer: Any, cast: Any, offline: None, settings: Any
) -> None:
    settings.STORY_MAX_ACTIVE_PER_USER = 1

    def abandoned_run() -> int:
        # Admitted, then let go of without being closed: what any bug on the way to closing leaves.
        run = generation_run_admit(
            user_id=writer.pk, model="offline", max_tokens=1024, persona_names=[], story_id=None
        )
        generation_run_release(run_id=run.pk)
        return run.pk

    abandoned = await sync_to_async(abandoned_run)()
    assert (await _accepted_now(writer))["type"] == "accepted"
    run = await GenerationRun.objects.aget(pk=abandoned)
    assert (run.status, run.error_code) == ("failed", "interrupted") and run.finished_at


async def test_a_streaming_run_of_another_process_still_counts_as_active(
    writer: Any, cast: Any, offline: None, settings: Any
) -> None:
    settings.STORY_MAX_ACTIVE_PER_USER = 1
    # No record of which process runs it: it may be alive elsewhere, so only the stale cutoff frees it.
    await GenerationRun.objects.acreate(user=writer, status="streaming", model="offline", max_tokens=1024)
    refused = await _accepted_now(writer)
    assert (refused["type"], refused["code"]) == ("error", "busy")


async def test_stress_generate_then_cancel_or_close_at_every_offset_leaves_no_run_open(
    writer: Any, cast: Any, offline: None, settings: Any
) -> None:
    # The acceptance test of issue 13: cancel (100 times on one socket) and close (25 sockets) at
    # offsets from 0 to 50 ms after generate, then no run is left open and the writer is not busy.
    settings.STORY_GENERATIONS_PER_HOUR = 1000
    # Two messages every few milliseconds: a flood by the default limit (test_ws_security tests that).
    settings.STORY_WS_MESSAGES_PER_SECOND = 10_000
    # Slow enough (over 0.3 s a screenplay) that every cancel lands before the run could finish.
    settings.STORY_OFFLINE_TOKENS_PER_SECOND = 1000
    communicator = await ws_connect(writer)
    try:
        for iteration in range(100):
            await communicator.send_json_to(generate_message())
            await asyncio.sleep(OFFSETS_SECONDS[iteration % len(OFFSETS_SECONDS)])
            await communicator.send_json_to({"type": "cancel"})
            assert (await ws_events(communicator))[-1]["type"] == "cancelled", iteration
    finally:
        await communicator.disconnect()
    # A close no longer cancels (runs are detached from sockets, issue 16): the runs left behind go
    # on and are saved, and none is left open.
    settings.STORY_MAX_ACTIVE_PER_USER = 25
    for iteration in range(25):
        closing = await ws_connect(writer)
        await closing.send_json_to(generate_message())
        await asyncio.sleep(OFFSETS_SECONDS[iteration % len(OFFSETS_SECONDS)])
        await closing.disconnect(timeout=5)
    await _none_streaming(timeout=60)
    assert await _runs_left_open() == []
    assert await GenerationRun.objects.filter(status="cancelled").acount() == 100
    assert await GenerationRun.objects.filter(status="succeeded").acount() == 25
    assert (await _accepted_now(writer))["type"] == "accepted"


async def _none_streaming(timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while await GenerationRun.objects.filter(status="streaming").aexists():
        assert asyncio.get_running_loop().time() < deadline, "runs still streaming"
        await asyncio.sleep(0.1)


async def test_a_cancel_then_a_disconnect_during_the_save_leave_the_saved_run_succeeded(
    writer: Any, cast: Any, offline: None, save_hold: SaveHold
) -> None:
    communicator = await ws_connect(writer)
    await communicator.send_json_to(generate_message())
    assert await save_hold.reached()
    await communicator.send_json_to({"type": "cancel"})
    await asyncio.sleep(0.1)
    closing = asyncio.create_task(communicator.disconnect(timeout=5))
    await asyncio.sleep(0.2)
    save_hold.release()
    await closing
    assert await _runs_left_open() == []
    run = await GenerationRun.objects.aget()
    # The version was saved with its run: the run says so, not "cancelled".
    assert run.status == "succeeded"
    assert await ScreenplayVersion.objects.filter(run=run).aexists()


@pytest.mark.parametrize("mode", ["single", "parallel"])
async def test_a_cancel_sent_before_accepted_holds_when_the_socket_closes_straight_after(
    writer: Any, cast: Any, offline: None, settings: Any, mode: str
) -> None:
    # The create page's Cancel, then the tab closed: the cancel was read while the run was still being
    # admitted, and the close used to drop it with the socket's task; the run was written and saved.
    settings.STORY_OFFLINE_TOKENS_PER_SECOND = 1000
    settings.STORY_MAX_ACTIVE_PER_USER = 3
    for _ in range(3):
        communicator = await ws_connect(writer)
        await communicator.send_json_to(generate_message(mode=mode))
        await communicator.send_json_to({"type": "cancel"})
        await communicator.disconnect(timeout=5)
    deadline = time.monotonic() + 10
    while await GenerationRun.objects.acount() < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # the last one may still be being admitted
    await _none_streaming(timeout=30)
    assert [run.status async for run in GenerationRun.objects.all()] == ["cancelled"] * 3
    assert not await ScreenplayVersion.objects.aexists()

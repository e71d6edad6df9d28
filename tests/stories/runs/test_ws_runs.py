"""Runs detached from sockets (issue 16): leave, come back, watch from two places, cancel from another.

Against the real ASGI application and consumer, the real SDK and the fake Anthropic server. The runs'
event log is the deployment's: this process's memory, or Redis (with its local mirror) in the
PostgreSQL + Redis pass; tests/stories/runs/test_two_processes.py reads it from another process.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import OperationalError
from django.utils import timezone

from stories.generation import pipeline
from stories.models import GenerationRun, ScreenplayVersion
from stories.runs import follow, memory_log, redis_log
from stories.runs.runner import SEQ_AFTER_UNREAD, run_resume
from tests.fake_anthropic import FakeAnthropic, Reply, screenplay_text
from tests.stories.generation.conftest import TERMINAL, generate_message, ws_connect, ws_events, ws_generate
from tests.stories.runs.conftest import first_answer, log_expires, run_streaming, screenplay, script_slow

pytestmark = pytest.mark.django_db(transaction=True)


async def _until(communicator: WebsocketCommunicator, kind: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while not events or events[-1]["type"] != kind:
        events.append(json.loads(await communicator.receive_from(timeout=10)))
        assert events[-1]["type"] not in TERMINAL or kind in TERMINAL, events[-1]
    return events


def _seqs(events: list[dict[str, Any]]) -> list[int]:
    return [event["seq"] for event in events]


async def _finished(run_id: int, timeout: float = 20) -> GenerationRun:
    deadline = asyncio.get_running_loop().time() + timeout
    while (run := await GenerationRun.objects.aget(pk=run_id)).status == "streaming":
        assert asyncio.get_running_loop().time() < deadline, "the run did not finish"
        await asyncio.sleep(0.05)
    return run


async def test_a_writer_who_leaves_after_the_first_scene_gets_the_rest_on_attach_and_one_version_is_saved(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    script_slow(fake_anthropic)
    first = await ws_connect(writer)
    await first.send_json_to(generate_message())
    before = await _until(first, "scene")
    await first.disconnect()
    run_id, last = before[0]["run_id"], before[-1]["seq"]
    assert _seqs(before) == list(range(1, last + 1))
    assert all(event["run_id"] == run_id for event in before)

    second = await ws_connect(writer)
    try:
        await second.send_json_to({"type": "attach", "run_id": run_id, "after": last})
        after = await ws_events(second)
    finally:
        await second.disconnect()
    # No gap, no duplicate: the two halves are one run's sequence.
    assert _seqs(after) == list(range(last + 1, last + 1 + len(after)))
    assert [e["type"] for e in after][-2:] == ["saved", "done"]
    scenes = [e["index"] for e in [*before, *after] if e["type"] == "scene"]
    assert scenes == [0, 1, 2, 3]
    assert (await _finished(run_id)).status == "succeeded"
    assert await ScreenplayVersion.objects.acount() == 1
    # The fake saw one generation: one call, never asked again.
    assert len(fake_anthropic.requests) == 1


async def test_two_sockets_on_one_run_get_the_same_events(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    script_slow(fake_anthropic)
    starter, watcher = await ws_connect(writer), await ws_connect(writer)
    try:
        await starter.send_json_to(generate_message())
        accepted = json.loads(await starter.receive_from(timeout=10))
        await watcher.send_json_to({"type": "attach", "run_id": accepted["run_id"], "after": 0})
        started = [accepted, *await ws_events(starter)]
        watched = await ws_events(watcher)
    finally:
        await starter.disconnect()
        await watcher.disconnect()
    assert watched == started
    assert started[-1]["type"] == "done"


async def test_a_cancel_while_redis_is_down_stops_the_run_and_the_socket_stays_open(
    writer: Any, cast: Any, offline: None, settings: Any
) -> None:
    # The cancel's note for other processes could not be written to Redis: the error went up to the
    # consumer, daphne closed the socket with 1011 and logged a traceback, and the page never got
    # `cancelled` (the run was stopped all the same).
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    settings.STORY_OFFLINE_TOKENS_PER_SECOND = 300
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to(generate_message(mode="single"))
        accepted = json.loads(await communicator.receive_from(timeout=10))
        await communicator.send_json_to({"type": "cancel"})
        events = await ws_events(communicator)
        await communicator.send_json_to({"type": "cancel", "run_id": accepted["run_id"]})
        assert await communicator.receive_nothing(timeout=0.5)  # a run that has ended: nothing back
    finally:
        await communicator.disconnect()
    assert events[-1]["type"] == "cancelled"
    assert (await GenerationRun.objects.aget(pk=accepted["run_id"])).status == "cancelled"


async def test_a_cancel_from_another_socket_stops_the_upstream_within_a_second(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    script_slow(fake_anthropic, tokens_per_second=20)
    starter, run_id = await run_streaming(writer)
    other = await ws_connect(writer)
    try:
        await other.send_json_to({"type": "cancel", "run_id": run_id})
        rest = await ws_events(starter)
        gone = await sync_to_async(fake_anthropic.wait_for_disconnect)(fake_anthropic.requests[0], 1.0)
        assert gone, "the fake server still had the connection a second after the cancel"
        assert await other.receive_nothing(timeout=0.2)
    finally:
        await starter.disconnect()
        await other.disconnect()
    assert rest[-1]["type"] == "cancelled" and rest[-1]["run_id"] == run_id
    assert (await _finished(run_id)).status == "cancelled"
    assert await ScreenplayVersion.objects.acount() == 0


async def test_deleting_the_story_a_run_writes_cancels_the_run_and_its_upstream(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # A generation into a story the writer then deleted (another tab, the API) went on to its end,
    # paying the model the whole time, and ended `forbidden` ("that story does not exist or is not
    # yours") at its save: the result had nowhere to go from the moment of the delete.
    from rest_framework.test import APIClient

    from stories.models import Story

    story = await Story.objects.acreate(owner=writer, title="The Heist", plot="A plot.")
    script_slow(fake_anthropic, tokens_per_second=20)
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to(generate_message(story_id=story.pk))
        run_id = (await _until(communicator, "delta"))[0]["run_id"]
        client = APIClient()
        client.force_authenticate(writer)
        deleted = await sync_to_async(client.delete)(f"/api/stories/{story.pk}/")
        assert deleted.status_code == 204
        rest = await ws_events(communicator)
        gone = await sync_to_async(fake_anthropic.wait_for_disconnect)(fake_anthropic.requests[0], 1.0)
        assert gone, "the fake server still had the connection a second after the delete"
    finally:
        await communicator.disconnect()
    assert rest[-1]["type"] == "cancelled" and rest[-1]["run_id"] == run_id
    assert (await _finished(run_id)).status == "cancelled"
    assert await ScreenplayVersion.objects.acount() == 0


async def test_attaching_to_a_finished_run_replays_it_whole(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(Reply(text=screenplay_text(screenplay(scenes=2))))
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to(generate_message())
        original = await ws_events(communicator)
        run_id = original[0]["run_id"]
        await communicator.send_json_to({"type": "attach", "run_id": run_id})
        replayed = await ws_events(communicator)
        await communicator.send_json_to({"type": "attach", "run_id": run_id, "after": original[-1]["seq"]})
        # The client has everything already: nothing comes.
        assert await communicator.receive_nothing(timeout=0.5)
    finally:
        await communicator.disconnect()
    assert replayed == original


async def test_an_attach_with_confirm_is_told_first_where_its_replay_ends(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # A reload's replay came as a burst the page could not tell from live events: its screen reader
    # announcements were all made at once, and only the last was heard. `attached` says where it ends.
    script_slow(fake_anthropic)
    asked = asyncio.get_running_loop().time()
    starter, run_id = await run_streaming(writer)
    follower = await ws_connect(writer)
    try:
        await _until(starter, "scene")
        await follower.send_json_to({"type": "attach", "run_id": run_id, "after": 0, "confirm": True})
        attached = json.loads(await follower.receive_from(timeout=10))
        running_for = (asyncio.get_running_loop().time() - asked) * 1000
        followed = await ws_events(follower)
        finished = await first_answer(writer, {"type": "attach", "run_id": run_id, "confirm": True})
        await log_expires(run_id)
        rebuilt = await first_answer(writer, {"type": "attach", "run_id": run_id, "confirm": None})
        gone = await first_answer(writer, {"type": "attach", "run_id": run_id, "confirm": True})
    finally:
        await starter.disconnect()
        await follower.disconnect()
    assert set(attached) == {"type", "run_id", "replay_to", "elapsed_ms"} and attached["run_id"] == run_id
    # The run's time so far, which the replayed events cannot give a reloaded page.
    assert 0 < attached["elapsed_ms"] <= running_for
    # The scene was logged before the attach: the replay holds it; the run went on live after.
    first_scene = next(event["seq"] for event in followed if event["type"] == "scene")
    assert first_scene <= attached["replay_to"] < followed[-1]["seq"]
    assert _seqs(followed) == list(range(1, followed[-1]["seq"] + 1))
    # A finished run's replay is all of it; once its log is gone, its rebuilt end is (null).
    run = await _finished(run_id)
    assert run.finished_at is not None
    took = int((run.finished_at - run.created_at).total_seconds() * 1000)
    assert finished == {
        "type": "attached",
        "run_id": run_id,
        "replay_to": followed[-1]["seq"],
        "elapsed_ms": took,
    }
    assert rebuilt["type"] == "scene"  # no confirm: no answer, as before it existed
    assert gone == {"type": "attached", "run_id": run_id, "replay_to": None, "elapsed_ms": took}


async def test_an_attach_after_a_seq_the_run_has_not_reached_is_refused_not_left_silent(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # A client that sent another run's seq (or a made-up one) was sent nothing, ever: the run's events
    # up to its end, its terminal event included, were all "before" it, and the client waited for an end
    # it never got. It is told once the run has ended (at once for a run that already has).
    script_slow(fake_anthropic)
    starter, run_id = await run_streaming(writer)
    follower = await ws_connect(writer)
    try:
        await follower.send_json_to({"type": "attach", "run_id": run_id, "after": 1_000_000})
        events = await ws_events(starter)
        answer = json.loads(await follower.receive_from(timeout=10))  # the run has ended: said then
        ended = await first_answer(
            writer, {"type": "attach", "run_id": run_id, "after": events[-1]["seq"] + 1}
        )
    finally:
        await starter.disconnect()
        await follower.disconnect()
    assert (answer["type"], answer["code"]) == ("error", "invalid_request")
    assert "after" in answer["message"] and "run_id" not in answer
    assert (ended["type"], ended["code"]) == ("error", "invalid_request")


async def test_after_the_log_expired_an_attach_gets_the_runs_end_from_the_database(
    writer: Any, cast: Any, offline: None, settings: Any
) -> None:
    events = await ws_generate(writer)
    run_id = events[0]["run_id"]
    await log_expires(run_id)
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to({"type": "attach", "run_id": run_id, "after": 3})
        end = await ws_events(communicator)
    finally:
        await communicator.disconnect()
    saved = next(e for e in events if e["type"] == "saved")
    scenes = [{**e, "seq": None} for e in events if e["type"] == "scene"]
    assert end == [*scenes, {**saved, "seq": None}, {**events[-1], "seq": None}]


async def test_a_run_that_ended_before_a_restart_is_replayed_with_its_saved_scenes(
    writer: Any, cast: Any, offline: None, settings: Any
) -> None:
    # Without Redis a run's log is the process's memory: after a restart an attach (a reload of the
    # create page, ?run=<id>) got `saved` and `done` only, and the page showed the story's link and no
    # scene. The rebuilt end now carries the saved version's scenes, one `scene` event each.
    events = await ws_generate(writer, mode="single")
    run_id = events[0]["run_id"]
    await log_expires(run_id)  # what a restart does to the log without Redis
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to({"type": "attach", "run_id": run_id, "after": 0})
        end = await ws_events(communicator)
    finally:
        await communicator.disconnect()
    version = await ScreenplayVersion.objects.aget(run_id=run_id)
    shown = [(e["index"], e["scene"]) for e in end if e["type"] == "scene"]
    assert shown == list(enumerate(version.content["scenes"]))
    assert len(shown) >= 2
    assert [e["type"] for e in end][-2:] == ["saved", "done"]
    assert all(e["seq"] is None and e["run_id"] == run_id for e in end)


@pytest.mark.parametrize(
    "message",
    [
        pytest.param({"type": "attach", "run_id": 999_999}, id="unknown"),
        pytest.param({"type": "cancel", "run_id": 999_999}, id="cancel-unknown"),
    ],
)
async def test_an_unknown_run_is_not_found_and_nothing_else(
    writer: Any, db: None, message: dict[str, Any]
) -> None:
    event = await first_answer(writer, message, then_nothing=True)
    assert (event["type"], event["code"]) == ("error", "not_found")
    assert "seq" not in event and "run_id" not in event


async def test_another_writers_run_is_not_found_to_attach_or_cancel(
    writer: Any, other_writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    script_slow(fake_anthropic, tokens_per_second=40)
    owner, intruder = await ws_connect(writer), await ws_connect(other_writer)
    try:
        await owner.send_json_to(generate_message())
        run_id = json.loads(await owner.receive_from(timeout=10))["run_id"]
        answers = []
        for message in ({"type": "attach", "run_id": run_id}, {"type": "cancel", "run_id": run_id}):
            await intruder.send_json_to(message)
            answers.append(json.loads(await intruder.receive_from(timeout=5)))
        assert await intruder.receive_nothing(timeout=0.3)
        await owner.send_json_to({"type": "cancel"})
        assert (await ws_events(owner))[-1]["type"] == "cancelled"
    finally:
        await owner.disconnect()
        await intruder.disconnect()
    assert [(a["type"], a["code"]) for a in answers] == [("error", "not_found")] * 2


@pytest.mark.parametrize(
    "message",
    [
        {"type": "attach"},
        {"type": "attach", "run_id": "7"},
        {"type": "attach", "run_id": 0},
        {"type": "attach", "run_id": True},
        {"type": "attach", "run_id": 2**63},
        {"type": "attach", "run_id": 7, "after": -1},
        {"type": "attach", "run_id": 7, "after": 1.5},
        {"type": "attach", "run_id": 7, "since": 3},
        {"type": "attach", "run_id": 7, "confirm": "yes"},
        {"type": "attach", "run_id": 7, "confirm": 1},
        {"type": "cancel", "run_id": None, "force": True},
        {"type": "cancel", "run_id": [7]},
    ],
)
async def test_bad_attach_and_cancel_fields_are_invalid_requests(
    writer: Any, db: None, message: dict[str, Any]
) -> None:
    event = await first_answer(writer, message)
    assert (event["type"], event["code"]) == ("error", "invalid_request")


async def test_a_run_nobody_follows_past_the_detached_timeout_is_cancelled_and_recorded(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    settings.STORY_RUN_DETACHED_TIMEOUT_SECONDS = 1
    script_slow(fake_anthropic, tokens_per_second=20)
    communicator, run_id = await run_streaming(writer)
    await communicator.disconnect()
    gone = await sync_to_async(fake_anthropic.wait_for_disconnect)(fake_anthropic.requests[0], 4.0)
    assert gone, "the unfollowed run kept its upstream request"
    assert (await _finished(run_id)).status == "cancelled"


async def test_a_failed_runs_end_rebuilt_from_the_database_keeps_its_retryable(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    # An overloaded provider after our retries: retryable, and still so once the log has expired.
    settings.STORY_LLM_MAX_RETRIES = 0
    fake_anthropic.script(Reply(status=529, error_type="overloaded_error", headers={"retry-after-ms": "1"}))
    events = await ws_generate(writer)
    assert (events[-1]["code"], events[-1]["retryable"]) == ("llm_overloaded", True)
    run_id = events[0]["run_id"]
    await log_expires(run_id)
    # A run that a resume closed (no error of its own recorded): as its code always is.
    interrupted = await GenerationRun.objects.acreate(
        user=writer, status="failed", error_code="interrupted", model=events[0]["model"], max_tokens=1024
    )
    communicator = await ws_connect(writer)
    try:
        ends = []
        for run in (run_id, interrupted.pk):
            await communicator.send_json_to({"type": "attach", "run_id": run})
            ends.append(await ws_events(communicator))
    finally:
        await communicator.disconnect()
    assert [(e[-1]["code"], e[-1]["retryable"], e[-1]["seq"]) for e in ends] == [
        ("llm_overloaded", True, None),
        ("interrupted", True, None),
    ]


async def test_an_attach_to_a_run_whose_end_never_reached_redis_gets_its_end_from_the_database(
    writer: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Redis went down before a run ended: its process kept going (its own followers read memory) and
    # dropped the rest of the events, the end included, so the stream stayed with neither. Once Redis
    # was back, an attach from another process followed that stream until it expired (1.5 h): the page
    # waited for ever on a run the database had long recorded as finished.
    settings.REDIS_URL = settings.REDIS_URL or "redis://127.0.0.1:6379/0"
    settings.CACHES = {
        **settings.CACHES,
        "default": {**settings.CACHES["default"], "KEY_PREFIX": uuid.uuid4().hex},
    }
    monkeypatch.setattr(redis_log, "_QUIET_SECONDS", 0.3)
    run = await GenerationRun.objects.acreate(
        user=writer, status="succeeded", model="offline", max_tokens=4096
    )
    dead = redis_log.RedisRunEventLog(local=memory_log.MemoryRunEventLog())  # the process that ran it
    await dead.open(run.pk)
    for event in ({"type": "accepted"}, {"type": "delta", "text": "INT."}):
        await dead.append(run.pk, event)
    await dead.flush()

    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to({"type": "attach", "run_id": run.pk, "after": 2})
        end = json.loads(await communicator.receive_from(timeout=10))
    finally:
        await communicator.disconnect()
    assert (end["type"], end["run_id"], end["seq"]) == ("done", run.pk, None)


async def test_the_process_that_resumed_a_run_replays_what_the_dead_process_logged_before_it(
    writer: Any, settings: Any
) -> None:
    # kill -9 of one daphne mid-run; another resumed the run. An attach with `after` 0 (a new tab, the
    # runs page) on any third process replayed the run from `accepted`, but on the resuming process it
    # began at `resumed`: that process's own copy of the log starts at the resume's jump, and it never
    # read the dead process's events that Redis keeps (an interrupted run replayed as its `error` alone).
    settings.REDIS_URL = settings.REDIS_URL or "redis://127.0.0.1:6379/0"
    settings.CACHES = {
        **settings.CACHES,
        "default": {**settings.CACHES["default"], "KEY_PREFIX": uuid.uuid4().hex},
    }
    # An id no other run of the session has: this process's log must not hold it already.
    run = await GenerationRun.objects.acreate(
        pk=9_000_000_071, user=writer, status="streaming", model="offline", max_tokens=4096
    )
    dead = redis_log.RedisRunEventLog(local=memory_log.MemoryRunEventLog())  # the process that died
    await dead.open(run.pk)
    for event in ({"type": "accepted"}, {"type": "delta", "text": "INT."}):
        await dead.append(run.pk, event)
    await dead.flush()
    going_on = asyncio.Event()

    async def rest() -> Any:
        yield {"type": "resumed"}
        await going_on.wait()
        yield {"type": "cancelled"}

    await run_resume(run_id=run.pk, events=rest())  # this process takes it over
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to({"type": "attach", "run_id": run.pk, "after": 0})
        live = await _until(communicator, "resumed")
        going_on.set()
        live += await _until(communicator, "cancelled")
        await communicator.send_json_to({"type": "attach", "run_id": run.pk, "after": 1})
        ended = await _until(communicator, "cancelled")
    finally:
        await communicator.disconnect()
    jump = 2 + SEQ_AFTER_UNREAD
    assert [(e["type"], e["seq"]) for e in live] == [
        ("accepted", 1),
        ("delta", 2),
        ("resumed", jump + 1),
        ("cancelled", jump + 2),
    ]
    assert [(e["type"], e["seq"]) for e in ended] == [
        ("delta", 2),
        ("resumed", jump + 1),
        ("cancelled", jump + 2),
    ]


async def test_an_attach_while_the_sockets_own_generate_is_admitted_is_busy_and_the_run_stays_followed(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The attach stopped following the new run before its `accepted`: the client never learned its id,
    # and the run went on and was saved unseen.
    fake_anthropic.script(Reply(text=screenplay_text(screenplay(scenes=1))))
    fake_anthropic.script(Reply(text=screenplay_text(screenplay(scenes=1))))
    earlier = (await ws_generate(writer))[0]["run_id"]
    admitting, admit = threading.Event(), pipeline.generation_run_admit

    def held_admit(**fields: Any) -> Any:
        admitting.wait(timeout=10)  # until the attach has been answered
        return admit(**fields)

    monkeypatch.setattr(pipeline, "generation_run_admit", held_admit)
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to(generate_message())
        await communicator.send_json_to({"type": "attach", "run_id": earlier})
        refused = json.loads(await communicator.receive_from(timeout=10))
        assert (refused["type"], refused["code"], refused["retryable"]) == ("error", "busy", True)
        assert "attach once it is accepted" in refused["message"]
        admitting.set()
        events = await ws_events(communicator)
    finally:
        admitting.set()
        await communicator.disconnect()
    assert events[0]["type"] == "accepted" and events[0]["run_id"] != earlier
    assert events[-1]["type"] == "done"


async def test_a_generate_on_a_socket_following_an_attached_run_starts_its_own(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # It was answered `busy` while the attached run's replay or stream went on.
    script_slow(fake_anthropic, tokens_per_second=40)
    fake_anthropic.script(Reply(text=screenplay_text(screenplay(scenes=1))))
    starter, run_id = await run_streaming(writer)
    watcher = await ws_connect(writer)
    try:
        await watcher.send_json_to({"type": "attach", "run_id": run_id})
        assert json.loads(await watcher.receive_from(timeout=10))["type"] == "accepted"
        await watcher.send_json_to(generate_message())
        while (event := json.loads(await watcher.receive_from(timeout=10)))["run_id"] == run_id:
            assert event["type"] not in TERMINAL  # the attached run's own events until the new one's
        assert event["type"] == "accepted"
        own = [event, *await ws_events(watcher)]
        assert {e["run_id"] for e in own} == {event["run_id"]} and own[-1]["type"] == "done"
        assert (await GenerationRun.objects.aget(pk=run_id)).status == "streaming"  # it goes on
    finally:
        await starter.send_json_to({"type": "cancel"})
        await ws_events(starter)
        await starter.disconnect()
        await watcher.disconnect()


async def test_an_attach_while_the_socket_follows_a_run_is_busy_and_that_run_stays_followed_to_its_end(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # Each attach replaced the run followed: a script that sent many for a finished run had each one's
    # whole replay queued for it (tests/stories/runs/test_ws_not_reading.py, against daphne).
    script_slow(fake_anthropic, tokens_per_second=40)
    starter, run_id = await run_streaming(writer)
    watcher = await ws_connect(writer)
    try:
        await watcher.send_json_to({"type": "attach", "run_id": run_id})
        assert json.loads(await watcher.receive_from(timeout=10))["type"] == "accepted"
        await watcher.send_json_to({"type": "attach", "run_id": run_id, "after": 0})
        events: list[dict[str, Any]] = []
        while not events or events[-1]["type"] != "done":
            events.append(json.loads(await watcher.receive_from(timeout=10)))
        starter_rest = await ws_events(starter)
    finally:
        await starter.disconnect()
        await watcher.disconnect()
    refused = [event for event in events if event["type"] == "error"]
    assert [(e["code"], e["retryable"]) for e in refused] == [("busy", True)]
    assert f"following run {run_id} until its end" in refused[0]["message"]
    followed = [event for event in events if event["type"] != "error"]
    # Followed once, to its end: no event twice, none missing.
    assert _seqs(followed) == list(range(2, len(followed) + 2))
    assert followed[-1]["type"] == "done" and starter_rest[-1] == followed[-1]


async def test_an_attach_with_after_null_replays_from_the_start(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # `"after": null` was refused ("after must be an integer"); `after` is optional, 0 when not given.
    fake_anthropic.script(Reply(text=screenplay_text(screenplay(scenes=1))))
    original = await ws_generate(writer)
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to({"type": "attach", "run_id": original[0]["run_id"], "after": None})
        replayed = await ws_events(communicator)
    finally:
        await communicator.disconnect()
    assert replayed == original


async def test_a_database_outage_while_following_another_process_s_run_is_waited_out(
    writer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run of another process whose log this process cannot read (no Redis, or Redis down or quiet) is
    # followed in the database. Was: the database refusing that read once ended the socket's follow
    # with `error` llm_unavailable "the run's events could not be read" (no run id, no seq), as if the
    # run had failed, while it went on and was saved.
    run = await GenerationRun.objects.acreate(
        user=writer,
        status="streaming",
        model="offline",
        max_tokens=1024,
        lease_owner="other-host:4242:0123456789ab",
        lease_expires_at=timezone.now() + timedelta(seconds=60),
    )
    refusals = [OperationalError("terminating connection due to administrator command")] * 2
    read = follow.run_final_events

    def final_events(*, run_id: int) -> Any:
        if refusals:
            raise refusals.pop()
        return read(run_id=run_id)

    monkeypatch.setattr(follow, "run_final_events", final_events)
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to({"type": "attach", "run_id": run.pk})
        for _ in range(100):  # the follow asks again every second
            assert await communicator.receive_nothing(timeout=0.1)
            if not refusals:
                break
        assert not refusals
        assert await communicator.receive_nothing(timeout=1)
        await GenerationRun.objects.filter(pk=run.pk).aupdate(status="cancelled", lease_owner="")
        events = await ws_events(communicator)
    finally:
        await communicator.disconnect()
    assert [(event["type"], event["run_id"]) for event in events] == [("cancelled", run.pk)]

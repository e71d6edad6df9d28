"""Leases, checkpoints and resume in one process: a run taken over from a dead process keeps its work.

The dead process is played by a run row left ``streaming`` with an expired lease and a checkpoint, as
a killed process leaves it; tests/stories/generation/test_resume_killed.py kills real daphne processes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from datetime import datetime, timedelta
from io import StringIO
from types import SimpleNamespace
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from stories.generation import checkpoint, resume
from stories.generation.checkpoint import checkpoint_request
from stories.generation.events import ResumedEvent
from stories.generation.handover import runs_hand_over
from stories.generation.requests import GenerationRequest
from stories.generation.resume import orphans_watch_start, orphans_watch_stop, run_resume, runs_resume_drain
from stories.models import GenerationRun, ScreenplayVersion
from stories.runs.follow import run_events_follow
from stories.runs.runner import run_cancel, run_is_local, run_settled, run_start
from stories.runs.store import run_event_log
from stories.selectors import generation_run_taken_over, generation_runs_orphaned, run_final_events
from stories.services import (
    INTERRUPTED_MESSAGE,
    RUN_LEASE_OWNER,
    generation_run_admit,
    generation_run_checkpoint,
    generation_run_claim,
    generation_run_lease_renew,
    generation_run_release,
)
from storyproject.db import db_call, lock_wait_exceeded
from storyproject.logs import JsonFormatter, RepeatedFailure
from tests.conftest import RunRowLock, loop_statements
from tests.fake_anthropic import FakeAnthropic, Reply
from tests.fake_screenwriter import (
    FakeScreenwriter,
    scene_number,
    screenplay_as_assembled,
    screenplay_outline,
)
from tests.stories.generation.conftest import MODEL, generate_message, screenplay, ws_connect, ws_events

pytestmark = pytest.mark.django_db(transaction=True)

PERSONAS = ["noir-detective", "femme-fatale"]
DEAD = "dead-host:4242:0123456789ab"
SPENT = {"input_tokens": 900, "output_tokens": 700, "cache_read_tokens": 0, "cache_write_tokens": 0}


def _orphan(user: Any, *, mode: str, work: dict[str, Any], expired: bool = True) -> GenerationRun:
    """A run as a killed process leaves it: streaming, its lease expired (or not), its checkpoint."""
    request = GenerationRequest(plot="A statue, a lie, a fog.", personas=PERSONAS, mode=mode)
    checkpoint = {**checkpoint_request(request), **work, "usage": SPENT, "elapsed_ms": 4000, "calls": []}
    seconds = -5 if expired else 60
    return GenerationRun.objects.create(
        user=user,
        status="streaming",
        mode=mode,
        model=MODEL,
        max_tokens=4096,
        persona_names=PERSONAS,
        lease_owner=DEAD,
        lease_expires_at=timezone.now() + timedelta(seconds=seconds),
        checkpoint=checkpoint,
    )


def _two_scenes_one_kept(fake_anthropic: FakeAnthropic) -> tuple[dict[str, Any], dict[str, Any]]:
    """A two-scene screenplay the fake writes, and a parallel run's work with its outline and scene 1."""
    expected = screenplay(scenes=2)
    assembled = screenplay_as_assembled(expected)
    fake_anthropic.default = FakeScreenwriter(expected)
    return assembled, {"outline": screenplay_outline(expected), "scenes": {"0": assembled["scenes"][0]}}


async def _resume(run_id: int) -> list[dict[str, Any]]:
    async with aclosing(run_resume(run_id=run_id)) as events:
        received = [event async for event in events]
    # `resumed` has exactly the keys of its TypedDict (the protocol as code).
    assert set(received[0]) == ResumedEvent.__required_keys__, received[0]
    return received


async def test_a_parallel_run_resumes_writing_only_its_missing_scenes(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    expected = screenplay(scenes=4)
    assembled = screenplay_as_assembled(expected)
    fake_anthropic.default = FakeScreenwriter(expected)
    kept = {"0": assembled["scenes"][0], "2": assembled["scenes"][2]}
    work = {"outline": screenplay_outline(expected), "scenes": kept}
    run = await sync_to_async(_orphan)(writer, mode="parallel", work=work)
    events = await _resume(run.pk)
    assert events[0]["type"] == "resumed" and events[0]["run_id"] == run.pk
    assert [s["index"] for s in events[0]["scenes"]] == [0, 2]
    assert events[0]["outline"]["scenes"][1]["heading"] == expected["scenes"][1]["heading"]
    assert [e["type"] for e in events[-2:]] == ["saved", "done"]
    # The model was asked for scenes 2 and 4 only (1-based): no outline, no finished scene again.
    assert sorted(scene_number(r.body) or 0 for r in fake_anthropic.requests) == [2, 4]
    version = await ScreenplayVersion.objects.aget(run_id=run.pk)
    assert version.content == assembled
    finished = await GenerationRun.objects.aget(pk=run.pk)
    assert (finished.status, finished.lease_owner, finished.checkpoint) == ("succeeded", "", {})
    # The record counts what the dead process paid for, too.
    assert finished.output_tokens > SPENT["output_tokens"] and finished.input_tokens > SPENT["input_tokens"]
    assert finished.details["resumed"]["scenes_kept"] == 2


async def test_a_single_mode_run_continues_after_its_last_complete_scene(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    expected = screenplay(scenes=3)
    header = {key: expected[key] for key in ("title", "logline", "characters")}
    fake_anthropic.script(Reply(text=json.dumps({**header, "scenes": expected["scenes"][2:]})))
    work = {"header": header, "scenes": expected["scenes"][:2]}
    run = await sync_to_async(_orphan)(writer, mode="single", work=work)
    events = await _resume(run.pk)
    assert events[0]["type"] == "resumed" and len(events[0]["scenes"]) == 2
    assert [e["type"] for e in events[-2:]] == ["saved", "done"]
    [request] = fake_anthropic.requests
    # One continuation: the two scenes go back as the reply so far, the model is asked for the rest.
    assert 'after scene 2 ("INT. OFFICE 2 - NIGHT")' in request.body["messages"][-1]["content"]
    assert "Line 2." in request.body["messages"][1]["content"]
    version = await ScreenplayVersion.objects.aget(run_id=run.pk)
    assert version.content["scenes"] == expected["scenes"]
    finished = await GenerationRun.objects.aget(pk=run.pk)
    assert finished.continuations == 1 and finished.output_tokens > SPENT["output_tokens"]


async def test_a_scene_the_client_saw_is_in_the_checkpoint_and_usage_is_kept_with_it(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, run_writes: str
) -> None:
    expected = screenplay(scenes=3)
    # Scene 3 stalls: the run is caught with scenes 1 and 2 done, as a process killed then would leave it.
    writer_fake = FakeScreenwriter(expected)
    writer_fake.fail_scene(2, Reply(text='{"scene": {', stall_after=1, stall_seconds=3))
    fake_anthropic.default = writer_fake
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to(generate_message(mode="parallel"))
        seen: set[int] = set()
        while len(seen) < 2:
            event = json.loads(await communicator.receive_from(timeout=10))
            if event["type"] == "scene":
                seen.add(event["index"])
        run = await GenerationRun.objects.aget()
        assert run.lease_owner == RUN_LEASE_OWNER
        assert run.lease_expires_at is not None and run.lease_expires_at > timezone.now()
        assert set(run.checkpoint["scenes"]) == {"0", "1"}
        assert run.checkpoint["outline"]["scenes"][2]["heading"] == "INT. OFFICE 3 - NIGHT"
        assert run.checkpoint["usage"]["output_tokens"] > 0
        assert run.checkpoint["request"]["plot"] == "A statue, a lie, a fog."
        # The checkpoints went from the event loop's own connection where they may (PostgreSQL).
        assert (loop_statements() >= 2) == (run_writes == "event loop" and connection.vendor == "postgresql")
        await communicator.send_json_to({"type": "cancel"})
        await ws_events(communicator)
    finally:
        await communicator.disconnect()


async def test_the_lease_is_renewed_while_the_run_streams_and_let_go_when_it_ends(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any, run_writes: str
) -> None:
    settings.STORY_RUN_LEASE_SECONDS = 1
    settings.STORY_LLM_READ_TIMEOUT_SECONDS = 5
    fake_anthropic.script(Reply(text=json.dumps(screenplay(scenes=2)), ttft=2.5))
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to(generate_message())
        assert json.loads(await communicator.receive_from(timeout=10))["type"] == "accepted"
        expiries: list[datetime] = []
        for _ in range(4):
            await asyncio.sleep(0.5)
            run = await GenerationRun.objects.aget()
            assert run.lease_expires_at is not None, expiries
            expiries.append(run.lease_expires_at)
            # Renewed every third of a second-long lease: never lapses while the run is alive.
            assert run.lease_expires_at > timezone.now(), expiries
        assert expiries[-1] > expiries[0]
        assert (loop_statements() >= 2) == (run_writes == "event loop" and connection.vendor == "postgresql")
        assert (await ws_events(communicator))[-1]["type"] == "done"
    finally:
        await communicator.disconnect()
    run = await GenerationRun.objects.aget()
    assert (run.status, run.lease_owner, run.lease_expires_at, run.checkpoint) == ("succeeded", "", None, {})


def test_a_renewal_never_takes_a_run_and_a_live_lease_is_never_claimed(writer: Any) -> None:
    alive = _orphan(writer, mode="single", work={}, expired=False)
    assert not generation_run_lease_renew(run_id=alive.pk, lease_owner=RUN_LEASE_OWNER)
    assert generation_run_claim(run_id=alive.pk, lease_owner=RUN_LEASE_OWNER) is None
    alive.refresh_from_db()
    assert alive.lease_owner == DEAD
    dead = _orphan(writer, mode="single", work={})
    assert not generation_run_lease_renew(run_id=dead.pk, lease_owner=RUN_LEASE_OWNER)
    claimed = generation_run_claim(run_id=dead.pk, lease_owner=RUN_LEASE_OWNER)
    assert claimed is not None and claimed.lease_owner == RUN_LEASE_OWNER
    # Claimed once: its lease is alive again, so a second process finds nothing to take.
    assert generation_run_claim(run_id=dead.pk, lease_owner="another:1:x") is None
    assert generation_run_lease_renew(run_id=dead.pk, lease_owner=RUN_LEASE_OWNER)
    assert not generation_run_lease_renew(run_id=dead.pk, lease_owner=DEAD)


def test_a_run_this_process_runs_is_not_taken_over_by_it_when_its_lease_lapses(writer: Any) -> None:
    run = generation_run_admit(
        user_id=writer.pk, model=MODEL, max_tokens=1024, persona_names=PERSONAS, story_id=None
    )
    GenerationRun.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=5))
    # A stalled loop let the lease lapse: the run goes on here, so this process's watcher leaves it.
    assert generation_run_claim(run_id=run.pk, lease_owner=RUN_LEASE_OWNER) is None
    assert generation_run_lease_renew(run_id=run.pk, lease_owner=RUN_LEASE_OWNER)
    generation_run_release(run_id=run.pk)
    GenerationRun.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=5))
    assert generation_run_claim(run_id=run.pk, lease_owner=RUN_LEASE_OWNER) is not None
    generation_run_release(run_id=run.pk)


@pytest.mark.parametrize("mode", ["parallel", "single"])
async def test_a_run_that_lost_its_lease_stops_writing_and_its_clients_get_the_end_of_whoever_took_it(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, mode: str
) -> None:
    # This process stalled past its lease (a lock held on the run's row for longer than the lease, a
    # stopped process), and another one took the run over. Was: this process logged `error`
    # `interrupted` ("another server process took this run over") as the run's end, so its clients
    # stopped there (an attach after it: nothing more), and the other process then saved the run.
    expected = screenplay(scenes=3)
    fake_anthropic.default = FakeScreenwriter(expected, tokens_per_second=200)
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to(generate_message(mode=mode))
        while json.loads(await communicator.receive_from(timeout=10))["type"] != "scene":
            pass
        await GenerationRun.objects.aupdate(lease_owner="another:1:x")
        run = await GenerationRun.objects.aget()
        while run_is_local(run_id=run.pk):  # the next checkpoint or the save finds the run taken
            await asyncio.sleep(0.05)
        # Still the new holder's to finish: this process neither closed it nor saved a version.
        run = await GenerationRun.objects.aget()
        assert (run.status, run.lease_owner) == ("streaming", "another:1:x")
        assert not await ScreenplayVersion.objects.aexists()
        # The other process's turn: it is played here, once this process has let the run go.
        await GenerationRun.objects.aupdate(lease_expires_at=timezone.now() - timedelta(seconds=1))
        assert await runs_resume_drain(run_ids=[run.pk]) == {"finished": 1}
        events = await ws_events(communicator)
    finally:
        await communicator.disconnect()
    assert "error" not in [event["type"] for event in events], events
    assert [event["type"] for event in events][-2:] == ["saved", "done"]
    assert (await GenerationRun.objects.aget()).status == "succeeded"
    assert await ScreenplayVersion.objects.acount() == 1


def test_recover_runs_resumes_orphans_and_marks_failed_only_what_cannot_be_resumed(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    assembled, work = _two_scenes_one_kept(fake_anthropic)
    resumable = _orphan(writer, mode="parallel", work=work)
    no_outline = _orphan(writer, mode="parallel", work={})
    legacy = GenerationRun.objects.create(user=writer, status="streaming", model=MODEL, max_tokens=1024)
    alive = _orphan(writer, mode="parallel", work=work, expired=False)
    done = GenerationRun.objects.create(user=writer, status="succeeded", model=MODEL, max_tokens=1024)
    out = StringIO()
    for limit in ("99999999999999999999", "-1", "0", "abc"):
        with pytest.raises(CommandError, match="--limit"):
            call_command("recover_runs", "--limit", limit, stdout=out)
    assert GenerationRun.objects.filter(status="streaming").count() == 4  # nothing touched
    call_command("recover_runs", stdout=out)
    assert "3 orphaned run(s): 1 resumed and finished, 2 failed" in out.getvalue()
    runs = {run.pk: run for run in GenerationRun.objects.all()}
    assert runs[resumable.pk].status == "succeeded"
    assert ScreenplayVersion.objects.get(run_id=resumable.pk).content == assembled
    for failed in (no_outline, legacy):
        assert (runs[failed.pk].status, runs[failed.pk].error_code) == ("failed", "interrupted")
        assert "server stopped" in runs[failed.pk].error_message and runs[failed.pk].finished_at
    assert (runs[alive.pk].status, runs[alive.pk].lease_owner) == ("streaming", DEAD)
    assert runs[done.pk].status == "succeeded"
    assert [scene_number(r.body) for r in fake_anthropic.requests] == [2]


def test_ctrl_c_on_recover_runs_hands_its_runs_back_rather_than_cancel_them(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # Was: Ctrl-C on recover_runs (or on `make run` while it ran) recorded every run it was resuming as
    # cancelled, which no writer asked for, and printed a KeyboardInterrupt traceback.
    assembled, work = _two_scenes_one_kept(fake_anthropic)
    writes_the_rest = fake_anthropic.default
    fake_anthropic.default = lambda body: Reply(text="{}", ttft=30)  # the missing scene: a slow call
    resumable = _orphan(writer, mode="parallel", work=work)

    def ctrl_c_once_claimed() -> None:
        while GenerationRun.objects.filter(pk=resumable.pk, lease_owner=DEAD).exists():
            time.sleep(0.05)
        while not fake_anthropic.requests:  # the resume is writing: its scene call is made
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    pressing = threading.Thread(target=ctrl_c_once_claimed, daemon=True)
    pressing.start()
    with pytest.raises(CommandError, match=r"interrupted \(Ctrl-C\): 1 run\(s\) handed back unfinished"):
        try:
            call_command("recover_runs", stdout=StringIO())
        except KeyboardInterrupt:  # would end the whole test session
            pytest.fail("Ctrl-C escaped recover_runs as a KeyboardInterrupt (a traceback)")
    pressing.join()
    resumable.refresh_from_db()
    assert resumable.status == "streaming"
    assert resumable.lease_expires_at is not None and resumable.lease_expires_at <= timezone.now()
    assert resumable.checkpoint["scenes"] == work["scenes"]
    # Orphaned at once: the next recover_runs (or a server process) finishes it.
    fake_anthropic.default = writes_the_rest
    out = StringIO()
    call_command("recover_runs", stdout=out)
    assert "1 orphaned run(s): 1 resumed and finished" in out.getvalue()
    assert ScreenplayVersion.objects.get(run_id=resumable.pk).content == assembled


def test_recover_runs_resumes_with_redis_down_and_counts_what_the_database_says(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    # The dead process's event log is in Redis, which is down: the run was claimed, then failed on
    # reading the log's last seq; it stayed streaming under a fresh lease and was counted "failed".
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    assembled, work = _two_scenes_one_kept(fake_anthropic)
    resumable = _orphan(writer, mode="parallel", work=work)
    out = StringIO()
    call_command("recover_runs", stdout=out)
    assert "1 orphaned run(s): 1 resumed and finished, 0 failed" in out.getvalue()
    resumable.refresh_from_db()
    assert resumable.status == "succeeded"
    assert ScreenplayVersion.objects.get(run_id=resumable.pk).content == assembled


async def test_a_server_process_finds_and_resumes_orphans_on_its_own(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    settings.STORY_RUN_RECOVERY = True
    settings.STORY_RUN_LEASE_SECONDS = 1
    expected = screenplay(scenes=2)
    fake_anthropic.default = FakeScreenwriter(expected)
    work = {"outline": screenplay_outline(expected), "scenes": {}}
    run = await sync_to_async(_orphan)(writer, mode="parallel", work=work)
    assert orphans_watch_start()
    try:
        assert not orphans_watch_start()  # one watcher a process
        for _ in range(100):
            await asyncio.sleep(0.1)
            if (await GenerationRun.objects.aget(pk=run.pk)).status != "streaming":
                break
    finally:
        await orphans_watch_stop()
    assert (await GenerationRun.objects.aget(pk=run.pk)).status == "succeeded"
    assert sorted(scene_number(r.body) or 0 for r in fake_anthropic.requests) == [1, 2]


async def test_a_resumed_run_goes_on_in_its_event_log_after_the_last_seq_a_client_saw(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    """The log the dead process wrote (Redis keeps it; here this process's log plays that part) goes
    on with `resumed` and the missing scene: a follower that re-attaches with `after` misses nothing."""
    _, work = _two_scenes_one_kept(fake_anthropic)
    orphan = await sync_to_async(_orphan)(writer, mode="parallel", work=work)
    log = run_event_log()
    await log.open(orphan.pk)
    for event in ({"type": "accepted"}, {"type": "outline"}, {"type": "scene", "index": 0}):
        await log.append(orphan.pk, {**event, "run_id": orphan.pk})
    follower = asyncio.ensure_future(_followed(orphan.pk, after=3))
    assert await runs_resume_drain(run_ids=[orphan.pk]) == {"finished": 1}
    events = await asyncio.wait_for(follower, timeout=10)
    assert [event["seq"] for event in events] == list(range(4, 4 + len(events)))
    assert events[0]["type"] == "resumed" and events[0]["scenes"][0]["index"] == 0
    assert [e["index"] for e in events if e["type"] == "scene"] == [1]
    assert [e["type"] for e in events[-2:]] == ["saved", "done"]


async def test_a_client_of_a_dead_process_whose_log_is_gone_gets_resumed_and_the_end(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    """Without Redis the dead process's log died with it. A client (the page, after a restart)
    re-attaches with the last seq it had from that log: the resumed log used to start again at seq 1,
    so every event of it was at or before that seq, and the client got nothing, not even the end."""
    _, work = _two_scenes_one_kept(fake_anthropic)
    orphan = await sync_to_async(_orphan)(writer, mode="parallel", work=work)
    assert not await run_event_log().exists(orphan.pk)
    follower = asyncio.ensure_future(_followed(orphan.pk, after=500))
    assert await runs_resume_drain(run_ids=[orphan.pk]) == {"finished": 1}
    events = await asyncio.wait_for(follower, timeout=10)
    assert events[0]["type"] == "resumed" and events[0]["seq"] > 500
    assert [event["seq"] for event in events] == list(range(events[0]["seq"], events[0]["seq"] + len(events)))
    assert [e["type"] for e in events[-2:]] == ["saved", "done"]
    # A client that saw nothing of the run gets it all, from `resumed`.
    assert (await _followed(orphan.pk, after=0))[0]["type"] == "resumed"


async def test_a_cancel_of_an_orphaned_run_holds_when_this_process_resumes_it(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    """The writer cancels a run whose process died (POST .../cancel/ answers 202 "cancelling"); without
    Redis the cancel found no log here and was dropped, and the resume then ran the run to its end and
    saved it."""
    _, work = _two_scenes_one_kept(fake_anthropic)
    # Slow enough that the missing scene is still being written when the runner sees the cancel.
    fake_anthropic.default = FakeScreenwriter(screenplay(scenes=2), tokens_per_second=40)
    # Its process died a moment ago: its lease still runs, so the cancel cannot close it yet (an
    # orphan whose lease has run out is closed by the cancel itself: the recover_runs test below).
    orphan = await sync_to_async(_orphan)(writer, mode="parallel", work=work, expired=False)
    await run_cancel(run_id=orphan.pk)
    assert (await GenerationRun.objects.aget(pk=orphan.pk)).status == "streaming"
    await GenerationRun.objects.filter(pk=orphan.pk).aupdate(lease_expires_at=timezone.now())
    assert await runs_resume_drain(run_ids=[orphan.pk]) == {"cancelled": 1}
    assert (await GenerationRun.objects.aget(pk=orphan.pk)).status == "cancelled"
    assert not await ScreenplayVersion.objects.filter(run_id=orphan.pk).aexists()


async def test_a_cancel_of_an_orphaned_run_with_nothing_to_resume_closes_it_cancelled_not_interrupted(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    """Its process died before its first scene was complete: the resume closed it failed `interrupted`
    (retryable, counted as a failure) although the writer had asked to stop it."""
    orphan = await sync_to_async(_orphan)(writer, mode="single", work={}, expired=False)
    await run_cancel(run_id=orphan.pk)
    assert (await GenerationRun.objects.aget(pk=orphan.pk)).status == "streaming"  # its lease still runs
    await GenerationRun.objects.filter(pk=orphan.pk).aupdate(lease_expires_at=timezone.now())
    assert await runs_resume_drain(run_ids=[orphan.pk]) == {"cancelled": 1}
    run = await GenerationRun.objects.aget(pk=orphan.pk)
    assert (run.status, run.error_code, run.lease_owner) == ("cancelled", "", "")
    assert run.output_tokens == SPENT["output_tokens"]  # what the dead process paid for is kept
    assert [e["type"] for e in await _followed(orphan.pk, after=0)][-1] == "cancelled"
    assert fake_anthropic.requests == []
    # Without a cancel, the same run is closed interrupted, as before.
    other = await sync_to_async(_orphan)(writer, mode="single", work={})
    assert [event async for event in run_resume(run_id=other.pk)] == [
        {"type": "error", "code": "interrupted", "message": INTERRUPTED_MESSAGE, "retryable": True}
    ]
    assert (await GenerationRun.objects.aget(pk=other.pk)).error_code == "interrupted"


async def test_a_run_whose_log_already_told_its_end_is_closed_as_told_not_resumed(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    """PostgreSQL unreachable at the end of a run: the writer got `error` llm_unavailable ("please try
    again") but the run could not be recorded, stayed `streaming` and was resumed once its lease ran
    out: saved behind the writer's back (a Retry made a second story), with `resumed`, scenes, `saved`
    and `done` after the `error` in its log, and the runs list saying succeeded."""
    _, work = _two_scenes_one_kept(fake_anthropic)
    orphan = await sync_to_async(_orphan)(writer, mode="parallel", work=work)
    told = {
        "type": "error",
        "code": "llm_unavailable",
        "message": f"the server's database failed during the generation (run {orphan.pk}); please try again",
        "retryable": True,
    }
    log = run_event_log()
    await log.open(orphan.pk)
    for event in ({"type": "accepted"}, {"type": "outline"}, told):
        await log.append(orphan.pk, {**event, "run_id": orphan.pk})
    assert await runs_resume_drain(run_ids=[orphan.pk]) == {"failed": 1}
    run = await GenerationRun.objects.aget(pk=orphan.pk)
    assert (run.status, run.error_code, run.error_message, run.lease_owner) == (
        "failed",
        "llm_unavailable",
        told["message"],
        "",
    )
    assert run.output_tokens == SPENT["output_tokens"]  # what was paid for is kept
    assert fake_anthropic.requests == []
    assert not await ScreenplayVersion.objects.filter(run_id=orphan.pk).aexists()
    assert [e["type"] for e in await _followed(orphan.pk, after=0)] == ["accepted", "outline", "error"]
    assert await log.last_seq(orphan.pk) == 3  # nothing after the end
    # Once the log has expired, the end rebuilt from the database is the one the writer was told.
    final = await sync_to_async(run_final_events)(run_id=orphan.pk)
    assert final is not None
    [rebuilt] = final
    assert {key: rebuilt[key] for key in told} == told


async def _followed(run_id: int, *, after: int) -> list[dict[str, Any]]:
    async with aclosing(run_events_follow(run_id=run_id, after=after)) as events:
        return [event async for event in events]


def test_a_renewal_that_finds_the_run_ended_is_not_taken_for_a_lost_lease(writer: Any) -> None:
    # 200 runs at once: a renewal waiting for a database thread found its run saved meanwhile, and the
    # log said "its lease is lost to another process" (bench.flow); only a run streaming under another
    # owner is lost.
    run = generation_run_admit(
        user_id=writer.pk, model=MODEL, max_tokens=1024, persona_names=PERSONAS, story_id=None
    )
    assert not generation_run_taken_over(run_id=run.pk, lease_owner=RUN_LEASE_OWNER)
    GenerationRun.objects.filter(pk=run.pk).update(lease_owner=DEAD)
    assert generation_run_taken_over(run_id=run.pk, lease_owner=RUN_LEASE_OWNER)
    generation_run_release(run_id=run.pk)
    GenerationRun.objects.filter(pk=run.pk).update(status="succeeded", lease_owner="")
    assert not generation_run_lease_renew(run_id=run.pk, lease_owner=RUN_LEASE_OWNER)
    assert not generation_run_taken_over(run_id=run.pk, lease_owner=RUN_LEASE_OWNER)


@pytest.mark.django_db(transaction=True)
def test_a_checkpoint_commits_without_waiting_for_the_disk_and_only_itself(writer: Any) -> None:
    run = generation_run_admit(
        user_id=writer.pk, model=MODEL, max_tokens=1024, persona_names=PERSONAS, story_id=None
    )
    with CaptureQueriesContext(connection) as queries:
        assert generation_run_checkpoint(run_id=run.pk, lease_owner=RUN_LEASE_OWNER, checkpoint={"x": 1})
    asked = [query["sql"] for query in queries.captured_queries]
    if connection.vendor == "postgresql":
        # One round trip: the settings and the UPDATE as one query, which is its own transaction.
        assert len(asked) == 1
        assert asked[0].startswith(
            "SET LOCAL synchronous_commit TO OFF; SET LOCAL lock_timeout TO 10000; UPDATE "
        )
        # The settings ended with the checkpoint's transaction: this connection's next ones flush, and
        # wait for locks as they would.
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone()[0] == "on"
            cursor.execute("SHOW lock_timeout")
            assert cursor.fetchone()[0] == "0"
    else:
        assert not [sql for sql in asked if "synchronous_commit" in sql]
    assert GenerationRun.objects.get(pk=run.pk).checkpoint == {"x": 1}
    # The count of rows it updated is the UPDATE's: a process that no longer holds the run writes nothing.
    assert not generation_run_checkpoint(run_id=run.pk, lease_owner=DEAD, checkpoint={"y": 2})
    assert not generation_run_lease_renew(run_id=run.pk, lease_owner=DEAD)
    assert generation_run_lease_renew(run_id=run.pk, lease_owner=RUN_LEASE_OWNER)
    assert GenerationRun.objects.get(pk=run.pk).checkpoint == {"x": 1}
    generation_run_release(run_id=run.pk)


def test_renewals_and_checkpoints_add_no_index_entries_and_orphans_are_still_found(writer: Any) -> None:
    # A running generation updates its row at every renewal and checkpoint. On PostgreSQL those are HOT
    # updates (no index touched: the table and its indexes do not bloat under load) when the columns
    # they change are in no index and the page has room (migration 0005: no index reads
    # lease_expires_at or checkpoint, and pages are filled to 70 %). Both conditions are read from the
    # catalog: PostgreSQL's per-transaction HOT counters also depend on how full other tests left the
    # table's pages (an update that finds its page full is not HOT), and made this test flaky in full
    # runs.
    run = generation_run_admit(
        user_id=writer.pk, model=MODEL, max_tokens=1024, persona_names=PERSONAS, story_id=None
    )
    before = _updates_this_transaction()
    for scene in range(10):
        assert generation_run_lease_renew(run_id=run.pk, lease_owner=RUN_LEASE_OWNER)
        work = {
            "scenes": [{"heading": f"INT. ROOM {n} - DAY", "text": "A line. " * 20} for n in range(scene)]
        }
        assert generation_run_checkpoint(run_id=run.pk, lease_owner=RUN_LEASE_OWNER, checkpoint=work)
    updates, hot = (after - first for after, first in zip(_updates_this_transaction(), before, strict=True))
    if connection.vendor == "postgresql":  # CI runs the suite on both databases
        indexed, fillfactor = _runs_table_indexed_columns()
        assert not indexed & {"lease_expires_at", "checkpoint"}, indexed
        assert {"created_at", "status"} <= indexed  # it does see the keys and partial predicates
        assert fillfactor == "fillfactor=70"
        # At least one counted update was HOT (the counters may miss some, never invent them).
        assert hot >= 1 or updates == 0, (updates, hot)
    assert GenerationRun.objects.get(pk=run.pk).checkpoint == work
    # The orphan scan still finds a streaming run whose lease has expired, by the partial index's rows.
    GenerationRun.objects.filter(pk=run.pk).update(lease_owner=DEAD, lease_expires_at=timezone.now())
    assert run.pk in generation_runs_orphaned()
    generation_run_release(run_id=run.pk)


def _updates_this_transaction() -> tuple[int, int]:
    """PostgreSQL's counts of this transaction's updates of the runs table: all, and HOT ones."""
    if connection.vendor != "postgresql":
        return (0, 0)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relid = %s::regclass",
            [GenerationRun._meta.db_table],
        )
        row = cursor.fetchone()
    return (row[0], row[1]) if row else (0, 0)


def _runs_table_indexed_columns() -> tuple[set[str], str]:
    """The runs table's columns that some index reads (its keys, expressions and partial predicates),
    and its fillfactor storage option, from PostgreSQL's catalog."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "WHERE i.indrelid = %s::regclass AND a.attnum > 0 AND (a.attnum = ANY(i.indkey) "
            "OR pg_get_expr(i.indexprs, i.indrelid) LIKE '%%' || quote_ident(a.attname) || '%%' "
            "OR pg_get_expr(i.indpred, i.indrelid) LIKE '%%' || quote_ident(a.attname) || '%%')",
            [GenerationRun._meta.db_table],
        )
        indexed = {row[0] for row in cursor.fetchall()}
        cursor.execute(
            "SELECT array_to_string(reloptions, ',') FROM pg_class WHERE oid = %s::regclass",
            [GenerationRun._meta.db_table],
        )
        fillfactor = cursor.fetchone()[0] or ""
    return indexed, fillfactor


@pytest.mark.django_db(transaction=True)
async def test_the_lines_a_resume_logs_about_a_run_carry_its_id(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # A resume runs in a task of its own, outside the run's pipeline: "run N resumed with..." had no
    # run_id in the JSON log lines.
    _, work = _two_scenes_one_kept(fake_anthropic)
    orphan = await sync_to_async(_orphan)(writer, mode="parallel", work=work)
    stream = StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    resume_logger = logging.getLogger("stories.generation.resume")
    level = resume_logger.level
    resume_logger.addHandler(handler)
    resume_logger.setLevel(logging.INFO)
    try:
        assert await runs_resume_drain(run_ids=[orphan.pk]) == {"finished": 1}
    finally:
        resume_logger.removeHandler(handler)
        resume_logger.setLevel(level)
    [line] = [json.loads(text) for text in stream.getvalue().splitlines() if "resumed with" in text]
    assert line["run_id"] == orphan.pk


def test_a_cancel_of_an_orphaned_run_holds_through_recover_runs(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # The writer cancels a run whose process died: no process runs it to see the cancel, so the run
    # is closed `cancelled` there and then; recover_runs must not resume it, pay for it and save it.
    _, work = _two_scenes_one_kept(fake_anthropic)
    orphan = _orphan(writer, mode="parallel", work=work)
    async_to_sync(_log_as_the_dead_process_left_it)(orphan.pk)
    client = APIClient()
    client.force_authenticate(writer)
    response = client.post(f"/api/runs/{orphan.pk}/cancel/")
    assert (response.status_code, response.json()["status"]) == (200, "cancelled")
    # A client following it gets the end the dead process never wrote.
    assert [e["type"] for e in async_to_sync(_followed)(orphan.pk, after=0)] == ["accepted", "cancelled"]
    orphan.refresh_from_db()
    assert (orphan.status, orphan.lease_owner, orphan.checkpoint) == ("cancelled", "", {})
    assert orphan.finished_at is not None and orphan.usage_estimated is False
    out = StringIO()
    call_command("recover_runs", stdout=out)
    assert out.getvalue().startswith("0 orphaned run(s)")
    assert not ScreenplayVersion.objects.filter(run_id=orphan.pk).exists()
    assert fake_anthropic.requests == []


async def _log_as_the_dead_process_left_it(run_id: int) -> None:
    log = run_event_log()
    await log.open(run_id)
    await log.append(run_id, {"type": "accepted"})
    await log.flush()


async def test_a_database_outage_logs_the_lease_renewals_failing_once_not_at_every_renewal(
    settings: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Every run renewed its lease every STORY_RUN_LEASE_SECONDS / 3 and logged a traceback each time the
    # database was down: 200 runs wrote hundreds of tracebacks a minute.
    settings.STORY_RUN_LEASE_SECONDS = 0.03

    async def database_down(**_: Any) -> bool:
        raise OperationalError("the database is down")

    monkeypatch.setattr(checkpoint, "generation_run_lease_renew_async", database_down)
    monkeypatch.setattr(checkpoint, "_RENEWALS", RepeatedFailure(checkpoint.logger, "renewing leases"))
    runs = [SimpleNamespace(run_id=n, lease_owner=RUN_LEASE_OWNER) for n in (1, 2, 3)]
    # Stand-ins for Run: _lease_renew reads only their run_id and lease_owner.
    renewals = [asyncio.ensure_future(checkpoint._lease_renew(run)) for run in runs]  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger=checkpoint.logger.name):
        await asyncio.sleep(0.4)
        for renewal in renewals:
            renewal.cancel()
        await asyncio.gather(*renewals, return_exceptions=True)
    lines = [r for r in caplog.records if r.name == checkpoint.logger.name]
    assert [r.getMessage() for r in lines] == ["renewing leases failed (run 1)"]
    assert lines[0].exc_info is not None
    assert checkpoint._RENEWALS.failures > 10  # three runs, every 10 ms: all tried, one line


def test_recover_runs_counts_the_runs_it_closed_cancelled(writer: Any, cast: Any) -> None:
    # Was: "1 orphaned run(s): 0 resumed and finished, 0 failed (...), 0 taken by another process.":
    # a run whose writer cancelled it while its process was dead was closed `cancelled` and counted
    # nowhere in the line.
    orphan = _orphan(writer, mode="single", work={}, expired=False)
    async_to_sync(run_cancel)(run_id=orphan.pk)
    GenerationRun.objects.filter(pk=orphan.pk).update(lease_expires_at=timezone.now())
    out = StringIO()
    call_command("recover_runs", stdout=out)
    assert out.getvalue() == (
        "1 orphaned run(s): 0 resumed and finished, 0 failed (nothing to resume from, or the resume "
        "failed), 1 cancelled (as their writer asked), 0 taken by another process.\n"
    )
    assert GenerationRun.objects.get(pk=orphan.pk).status == "cancelled"


async def test_a_claim_of_an_orphan_whose_row_is_locked_elsewhere_gives_up_after_the_bound(
    writer: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The orphan watcher claims each orphan in a task of its own, every lease period: a row locked by
    # hand (psql's SELECT ... FOR UPDATE left open) held each claim, and the thread it waited in, for as
    # long as the lock, a new one every period. The claim now gives up after the bound (SQLite: its busy
    # timeout, 1 s here) and succeeds once the lock goes.
    settings.STORY_RUN_LOCK_TIMEOUT_SECONDS = 1
    if connection.vendor == "sqlite":
        monkeypatch.setitem(connection.settings_dict["OPTIONS"], "timeout", 1)
    orphan = await sync_to_async(_orphan)(writer, mode="single", work={})
    lock = RunRowLock()
    try:
        await lock.take(orphan.pk)
        with pytest.raises(OperationalError) as refused:
            await asyncio.wait_for(
                db_call(generation_run_claim)(run_id=orphan.pk, lease_owner=RUN_LEASE_OWNER), 15
            )
        assert lock_wait_exceeded(refused.value)
        assert lock.thread is not None and lock.thread.is_alive()
        lock.release()
        claimed = await db_call(generation_run_claim)(run_id=orphan.pk, lease_owner=RUN_LEASE_OWNER)
        assert claimed is not None and claimed.lease_owner == RUN_LEASE_OWNER
    finally:
        lock.release()
        generation_run_release(run_id=orphan.pk)


def _lock_bounded_to_a_second(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # STORY_RUN_LOCK_TIMEOUT_SECONDS on PostgreSQL (lock_timeout); on SQLite the connection's busy timeout.
    settings.STORY_RUN_LOCK_TIMEOUT_SECONDS = 1
    if connection.vendor == "sqlite":
        monkeypatch.setitem(connection.settings_dict["OPTIONS"], "timeout", 1)


async def test_a_cancel_of_an_orphan_whose_row_is_locked_elsewhere_gives_up_and_says_so(
    writer: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cancel of a run whose process died closes it in the request: with its row locked by hand
    # (psql's SELECT ... FOR UPDATE left open) the request, and its thread, waited for as long as the
    # lock. It now gives up after the bound, as the run's own writes do: a retryable error saying so,
    # the run left as it was; once the lock goes, the cancel closes it.
    _lock_bounded_to_a_second(settings, monkeypatch)
    orphan = await sync_to_async(_orphan)(writer, mode="single", work={})
    client = APIClient()
    client.force_authenticate(writer)
    cancel = sync_to_async(client.post)
    lock = RunRowLock()
    try:
        await lock.take(orphan.pk)
        refused = await asyncio.wait_for(cancel(f"/api/runs/{orphan.pk}/cancel/"), 15)
        assert (refused.status_code, refused.json()) == (
            502,
            {
                "code": "llm_unavailable",
                "message": f"the server's database kept this run's record locked for too long (run {orphan.pk}); "
                "please try again",
                "retryable": True,
            },
        )
        assert lock.thread is not None and lock.thread.is_alive()
        lock.release()
        assert (await GenerationRun.objects.aget(pk=orphan.pk)).status == "streaming"
        cancelled = await cancel(f"/api/runs/{orphan.pk}/cancel/")
        assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
    finally:
        lock.release()


async def test_a_hand_over_whose_run_is_locked_elsewhere_gives_up_and_keeps_the_run_here(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stopping process releases each run's lease for another to resume it: with the run's row locked
    # by hand, the release (and the stop, and a thread) waited for as long as the lock. It now gives up
    # after the bound: that run is not handed over but goes on here (its lease lapses with the process,
    # and another resumes it then), and the others are handed over all the same.
    _lock_bounded_to_a_second(settings, monkeypatch)
    _, work = await sync_to_async(_two_scenes_one_kept)(fake_anthropic)
    runs = [await sync_to_async(_orphan)(writer, mode="parallel", work=work, expired=False) for _ in range(2)]
    await GenerationRun.objects.filter(pk__in=[run.pk for run in runs]).aupdate(lease_owner=RUN_LEASE_OWNER)
    going = asyncio.Event()

    async def events(run_id: int) -> AsyncGenerator[dict[str, Any], None]:
        yield {"type": "accepted", "run_id": run_id}
        await going.wait()
        yield {"type": "cancelled"}

    for run in runs:
        await run_start(events(run.pk))
    lock = RunRowLock()
    try:
        await lock.take(runs[0].pk)
        counts = await asyncio.wait_for(runs_hand_over(), 15)
        assert lock.thread is not None and lock.thread.is_alive()
        lock.release()
        kept, other = [await GenerationRun.objects.aget(pk=run.pk) for run in runs]
        assert (kept.status, kept.lease_owner) == ("streaming", RUN_LEASE_OWNER) and run_is_local(
            run_id=kept.pk
        )
        if connection.vendor == "sqlite":  # its lock is the whole database's: no run could be released
            assert counts == {"kept": 2}
            return
        assert counts == {"kept": 1, "handed_over": 1}
        assert (other.status, other.lease_owner) == ("streaming", "") and not run_is_local(run_id=other.pk)
    finally:
        lock.release()
        going.set()
        await run_settled(run_id=runs[0].pk)
        for run in runs:
            generation_run_release(run_id=run.pk)


@pytest.mark.parametrize(
    ("before", "closed"),
    [
        ("nothing", ("failed", "interrupted", "failed")),
        ("cancel asked", ("cancelled", "", "cancelled")),
        ("its end told", ("failed", "llm_timeout", "failed")),
    ],
)
async def test_the_close_of_an_unresumable_orphan_whose_row_is_locked_elsewhere_gives_up_and_comes_again(
    writer: Any, settings: Any, monkeypatch: pytest.MonkeyPatch, before: str, closed: tuple[str, str, str]
) -> None:
    # An orphan with nothing to resume from is claimed, then closed `interrupted` (or `cancelled` when a
    # cancel was asked, or as its log says it ended): with its row locked by hand after the claim, the
    # close (and the watcher's thread) waited for as long as the lock. It now gives up after the bound,
    # as the claim does: the run stays streaming, claimed until its lease lapses, and the next claim
    # closes it (before, this process never claimed it again).
    _lock_bounded_to_a_second(settings, monkeypatch)
    orphan = await sync_to_async(_orphan)(writer, mode="single", work={})
    log = run_event_log()
    if before == "cancel asked":
        await log.cancel_request(orphan.pk)
    elif before == "its end told":
        await _log_as_the_dead_process_left_it(orphan.pk)
        await log.append(
            orphan.pk, {"type": "error", "code": "llm_timeout", "message": "m", "retryable": True}
        )
        await log.flush()
    lock = RunRowLock()
    claim = resume.generation_run_claim

    def claimed_then_locked(**kwargs: Any) -> GenerationRun | None:
        claimed = claim(**kwargs)
        lock.thread = threading.Thread(target=lock._hold, args=(orphan.pk,), daemon=True)
        lock.thread.start()
        assert lock.locked.wait(10)
        return claimed

    monkeypatch.setattr(resume, "generation_run_claim", claimed_then_locked)
    try:
        assert await asyncio.wait_for(runs_resume_drain(run_ids=[orphan.pk]), 15) == {"failed": 1}
        assert lock.thread is not None and lock.thread.is_alive()
        lock.release()
        run = await GenerationRun.objects.aget(pk=orphan.pk)
        assert (run.status, run.lease_owner) == ("streaming", RUN_LEASE_OWNER)
        monkeypatch.undo()
        await GenerationRun.objects.filter(pk=orphan.pk).aupdate(lease_expires_at=timezone.now())
        assert await runs_resume_drain(run_ids=[orphan.pk]) == {closed[2]: 1}
        run = await GenerationRun.objects.aget(pk=orphan.pk)
        assert (run.status, run.error_code, run.lease_owner) == (closed[0], closed[1], "")
    finally:
        lock.release()
        generation_run_release(run_id=orphan.pk)

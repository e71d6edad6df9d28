"""The event log's contract, on both implementations: addresses, replay, follow, and a resumed run."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
import weakref
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import pytest
import redis.asyncio as redis

from stories.runs import redis_conn, redis_log
from stories.runs.follow import run_events_follow
from stories.runs.log import RunEventLog
from stories.runs.memory_log import MemoryRunEventLog
from stories.runs.redis_log import RedisRunEventLog
from stories.runs.runner import WATCH_SECONDS, run_resume, run_settled, run_start

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["memory", "redis"])
def log(request: pytest.FixtureRequest, settings: Any) -> Iterator[RunEventLog]:
    if request.param == "memory":
        yield MemoryRunEventLog()
        return
    settings.REDIS_URL = REDIS_URL
    settings.CACHES = {
        **settings.CACHES,
        "default": {**settings.CACHES["default"], "KEY_PREFIX": uuid.uuid4().hex},
    }
    # A log without this process's copy: what another process reads.
    yield RedisRunEventLog(local=MemoryRunEventLog())


async def test_events_get_consecutive_seqs_and_a_replay_from_any_seq(log: RunEventLog) -> None:
    await log.open(7)
    seqs = [await log.append(7, {"type": "delta", "text": str(n)}) for n in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert [e["text"] for e in await log.read(7, 2)] == ["2", "3", "4"]
    assert all(e["run_id"] == 7 for e in await log.read(7, 0))
    assert await log.last_seq(7) == 5 and not await log.ended(7)


async def test_a_follower_gets_the_kept_then_the_live_events_and_stops_at_the_terminal_one(
    log: RunEventLog,
) -> None:
    await log.open(8)
    await log.append(8, {"type": "accepted"})

    async def follow() -> list[dict[str, Any]]:
        return [event async for event in log.follow(8, 0)]

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0.05)
    await log.append(8, {"type": "delta", "text": "x"})
    await log.append(8, {"type": "done"})
    events = await asyncio.wait_for(follower, timeout=5)
    assert [(e["type"], e["seq"]) for e in events] == [("accepted", 1), ("delta", 2), ("done", 3)]
    assert await log.ended(8)
    assert [e async for e in log.follow(8, 3)] == []


async def test_a_follower_gets_the_end_appended_while_it_was_handing_on_an_earlier_event(
    log: RunEventLog,
) -> None:
    # The memory log's follower read the events there were, handed each on, then found the run ended
    # and stopped: an end appended while it was handing one on (a cancel, from a revoked token, landing
    # as an SSE stream read) never reached the client, whose stream stopped without `cancelled`.
    await log.open(9)
    await log.append(9, {"type": "accepted"})
    follower = log.follow(9, 0)
    assert (await anext(follower))["type"] == "accepted"
    await log.append(9, {"type": "cancelled"})
    assert [event["type"] async for event in follower] == ["cancelled"]


async def test_a_fresh_run_drops_a_stale_log_under_its_id(log: RunEventLog) -> None:
    await log.open(9)
    await log.append(9, {"type": "done"})
    await log.open(9)
    assert await log.append(9, {"type": "accepted"}) == 1


async def test_a_resumed_run_goes_on_after_its_last_seq(settings: Any) -> None:
    # The hand-over issue 16 part B needs: a run that has events goes on under the same sequence.
    settings.REDIS_URL = ""
    from stories.runs.memory_log import LOG

    await LOG.open(11)
    for event in ({"type": "accepted"}, {"type": "scene", "index": 0}):
        await LOG.append(11, event)

    async def rest() -> AsyncGenerator[dict[str, Any], None]:
        yield {"type": "scene", "index": 1}
        yield {"type": "done"}

    await run_resume(run_id=11, events=rest())
    events = [event async for event in LOG.follow(11, 0)]
    assert [(e["type"], e["seq"]) for e in events] == [
        ("accepted", 1),
        ("scene", 2),
        ("scene", 3),
        ("done", 4),
    ]


async def test_a_run_resumed_from_a_dead_processs_log_goes_on_past_every_seq_that_process_gave_out(
    settings: Any,
) -> None:
    # kill -9 of a daphne mid-run: its own followers had seqs 3 and 4 at once, from its memory, and they
    # never reached Redis (written every 0.1 s), which kept 1 and 2. The resume went on at 3: the page,
    # re-attaching after 4, got the resumed run's events under seqs it had not seen, but never `resumed`.
    settings.REDIS_URL = REDIS_URL
    settings.CACHES = {
        **settings.CACHES,
        "default": {**settings.CACHES["default"], "KEY_PREFIX": uuid.uuid4().hex},
    }
    # An id no run of this test session has: this process's own log (memory_log.LOG) must not hold it.
    run_id = 9_000_000_052
    dead = RedisRunEventLog(local=MemoryRunEventLog())
    await dead.open(run_id)
    for event in ({"type": "accepted"}, {"type": "delta", "text": "INT."}):
        await dead.append(run_id, event)
    await dead.flush()
    for text in (" LIGHTHOUSE", " - NIGHT"):
        dead.local.append_now(run_id, {"type": "delta", "text": text})  # given out, never written to Redis

    async def rest() -> AsyncGenerator[dict[str, Any], None]:
        yield {"type": "resumed"}
        yield {"type": "done"}

    await run_resume(run_id=run_id, events=rest())
    resumed = RedisRunEventLog(local=MemoryRunEventLog())  # any process, reading Redis
    after_the_page = [event async for event in resumed.follow(run_id, 4)]
    assert [e["type"] for e in after_the_page] == ["resumed", "done"]
    assert after_the_page[0]["seq"] > 4
    # Nothing seen from Redis is given out again either.
    assert [e["type"] for e in await resumed.read(run_id, 0)] == ["accepted", "delta", "resumed", "done"]


async def test_more_runs_at_once_than_the_connection_pool_holds_wait_for_a_connection(
    log: RunEventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 200 runs polling for a cancel on a busy loop outgrew redis-py's default pool (100), whose
    # MaxConnectionsError failed runs (bench.flow, 200 concurrent); here 150 calls share 4 connections.
    monkeypatch.setattr(redis_conn, "MAX_CONNECTIONS", 4)
    monkeypatch.setattr(redis_conn, "clients", weakref.WeakKeyDictionary())
    await log.open(21)
    found = await asyncio.gather(*(log.last_seq(21 + n) for n in range(150)))
    assert found == [0] * 150
    await log.cancel_request(21)
    assert await log.cancels_requested([21]) == {21}


async def test_cancels_and_followers_are_asked_about_for_many_runs_at_once(log: RunEventLog) -> None:
    for run_id in (31, 32, 33):
        await log.open(run_id)
    await log.cancel_request(32)
    # 34 runs elsewhere: only its cancel key says it was cancelled.
    if isinstance(log, redis_log.RedisRunEventLog):
        other_process = redis.Redis.from_url(REDIS_URL)
        await other_process.set(redis_log.run_key(34, "cancel"), b"1", ex=60)
        await other_process.aclose()
        expected = {32, 34}
    else:
        expected = {32}
    assert await log.cancels_requested([31, 32, 33, 34]) == expected
    await log.touch(33)
    assert 33 in await log.followed_within([31, 33, 35], 60)
    assert 35 not in await log.followed_within([31, 33, 35], 60)


async def test_a_terminal_append_never_waits_for_a_writer_that_was_cancelled(log: RunEventLog) -> None:
    # Ctrl-C on `generate_screenplay`: asyncio.run cancels every task, the log's writer and the runner
    # alike; the runner's `cancelled` then waited for a write the cancelled writer would never make, and
    # the command hung instead of exiting.
    await log.open(41)
    await log.append(41, {"type": "delta", "text": "x"})
    appending = asyncio.create_task(log.append(41, {"type": "cancelled"}))
    await asyncio.sleep(0)  # the append waits for its write
    for task in asyncio.all_tasks():
        if task not in (appending, asyncio.current_task()):
            task.cancel()
    assert await asyncio.wait_for(appending, timeout=5) == 2


async def test_a_flush_returns_once_other_processes_can_read_every_event(log: RunEventLog) -> None:
    # A run handed to another process (make serve's graceful stop): what it wrote must be readable there.
    await log.open(51)
    for n in range(3):
        await log.append(51, {"type": "delta", "text": str(n)})
    await log.flush()
    elsewhere = RedisRunEventLog(local=MemoryRunEventLog()) if isinstance(log, RedisRunEventLog) else log
    assert [event["text"] for event in await elsewhere.read(51, 0)] == ["0", "1", "2"]


async def test_the_cancel_watcher_does_not_say_redis_works_again_while_it_is_down(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis unreachable while a run streamed: once the run ended, the watcher, asking about no run,
    logged "checking this process's runs for a cancel works again", with Redis still down."""
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there

    async def events() -> AsyncGenerator[dict[str, Any], None]:
        yield {"type": "accepted", "run_id": 31}
        await asyncio.sleep(3 * WATCH_SECONDS)
        yield {"type": "cancelled"}

    with caplog.at_level(logging.INFO, logger="stories.runs.runner"):
        await run_start(events())
        await run_settled(run_id=31)
        await asyncio.sleep(3 * WATCH_SECONDS)  # the watcher's turns after the run ended
    said = [record.getMessage() for record in caplog.records if record.name == "stories.runs.runner"]
    assert said and said[0] == "checking this process's runs for a cancel failed (1 runs)"
    assert not [line for line in said if "works again" in line], said


async def test_this_processs_copy_of_an_ended_run_is_dropped_once_its_retention_has_passed(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Looked for at most once a second (each look reads every run kept), at a run's start.
    from stories.runs import memory_log

    settings.STORY_RUN_EVENTS_RETENTION_SECONDS = 10
    now = [1000.0]
    monkeypatch.setattr(memory_log.time, "monotonic", lambda: now[0])
    log = MemoryRunEventLog()
    await log.open(1)
    await log.append(1, {"type": "done"})
    await log.open(2)  # the run still streaming is kept however long
    now[0] += 9.5
    await log.open(3)
    assert await log.exists(1) and await log.exists(2)  # not yet past its retention
    now[0] += 0.6
    await log.open(4)
    assert await log.exists(1)  # past it, but the last look was under a second ago
    now[0] += 0.5
    await log.open(5)
    assert not await log.exists(1) and await log.exists(2)
    assert await log.read(2, 0) == []


async def test_a_follower_waiting_on_a_quiet_run_counts_as_following_it_until_it_stops(
    log: RunEventLog,
) -> None:
    # A detached run is cancelled once nobody has followed it for STORY_RUN_DETACHED_TIMEOUT_SECONDS
    # (runner._watch). A follower waiting on a run that says nothing (the model thinking) follows it all
    # the while, though it no longer wakes every second to say so.
    await log.open(51)
    await log.append(51, {"type": "accepted"})
    seen: list[str] = []

    async def follow() -> None:
        async for event in log.follow(51, 0):
            seen.append(event["type"])

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0.05)
    assert seen == ["accepted"]
    await asyncio.sleep(0.2)
    assert await log.followed_within([51], 0.1) == {51}
    follower.cancel()
    with pytest.raises(asyncio.CancelledError):
        await follower
    await asyncio.sleep(0.15)
    assert await log.followed_within([51], 0.1) == set()


async def test_a_follower_goes_on_with_a_run_opened_again_in_its_place() -> None:
    # A run opened fresh under an id this process still keeps (its old events are stale): a follower
    # waiting on the old copy reads the new one, rather than waiting for events that never come.
    log = MemoryRunEventLog()
    await log.open(61)
    await log.append(61, {"type": "accepted"})
    follower = asyncio.create_task(_types(log.follow(61, 1)))
    await asyncio.sleep(0.05)
    await log.open(61)
    await log.append(61, {"type": "accepted"})
    await log.append(61, {"type": "done"})
    assert await asyncio.wait_for(follower, timeout=2) == ["done"]


async def _types(events: Any) -> list[str]:
    return [event["type"] async for event in events]


@pytest.mark.parametrize("log", ["redis"], indirect=True)
async def test_an_event_redis_refuses_does_not_lose_the_others_written_with_it(
    log: RunEventLog, caplog: pytest.LogCaptureFixture
) -> None:
    # One write carries every run's events of the interval. Here run 71's stream already holds a later
    # entry (written by a process that ran it after a database reset), so Redis refuses its event; run
    # 72's events, in the same write, are kept, and the refusal is logged.
    other_process = redis.Redis.from_url(REDIS_URL)
    await other_process.xadd(redis_log.run_key(71, "events"), {"e": "{}"}, id="0-9")
    await log.open(72)
    await log.append(71, {"type": "delta", "text": "late"})
    await log.append(72, {"type": "accepted"})
    with caplog.at_level(logging.WARNING, logger="stories.runs.redis_writer"):
        await log.append(72, {"type": "done"})  # terminal: returns once written
    elsewhere = RedisRunEventLog(local=MemoryRunEventLog())
    assert [e["type"] for e in await elsewhere.read(72, 0)] == ["accepted", "done"]
    assert await other_process.xlen(redis_log.run_key(71, "events")) == 1
    assert "1 of 3 events refused" in caplog.text
    await other_process.aclose()


def _ends_right_after_a_read_that_found_nothing(
    monkeypatch: pytest.MonkeyPatch, writer: RunEventLog, run_id: int
) -> None:
    """The run's process writes its last events just after the follower's blocking read found nothing
    new, before the follower asks whether the stream goes on (a save that took longer than the read's
    second, then `saved` and `done` at once)."""
    asked = RedisRunEventLog._goes_on

    async def goes_on(self: RedisRunEventLog, *args: Any) -> bool:
        if not await writer.ended(run_id):
            await writer.append(run_id, {"type": "saved"})
            await writer.append(run_id, {"type": "done"})  # terminal: returns once written
        return await asked(self, *args)

    monkeypatch.setattr(RedisRunEventLog, "_goes_on", goes_on)


@pytest.mark.parametrize("log", ["redis"], indirect=True)
async def test_a_follower_in_another_process_gets_an_end_written_just_after_a_read_found_nothing(
    log: RunEventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Was: the follower saw the stream end in a terminal event and stopped, without reading the events
    # written since its read; the client's socket never got `saved` nor `done` (a resumed run followed
    # from the process that resumed it, two runs in six under daphne).
    await log.open(81)
    await log.append(81, {"type": "accepted"})
    await log.flush()
    _ends_right_after_a_read_that_found_nothing(monkeypatch, log, 81)
    elsewhere = RedisRunEventLog(local=MemoryRunEventLog())
    assert await asyncio.wait_for(_types(elsewhere.follow(81, 1)), timeout=10) == ["saved", "done"]


@pytest.mark.parametrize("log", ["redis"], indirect=True)
async def test_a_follower_handed_back_on_a_quiet_stream_still_gets_an_end_written_meanwhile(
    log: RunEventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A quiet stream hands back to run_events_follow, which asks whether the run is over. Was: a log
    # that had ended counted as read to its end, and the events after the client's seq were lost.
    monkeypatch.setattr(redis_log, "_QUIET_SECONDS", 0.0)
    run_id = 9_000_000_082  # not in this process's own log (memory_log.LOG): followed from Redis
    await log.open(run_id)
    await log.append(run_id, {"type": "accepted"})
    await log.flush()
    _ends_right_after_a_read_that_found_nothing(monkeypatch, log, run_id)
    followed = run_events_follow(run_id=run_id, after=1)
    assert await asyncio.wait_for(_types(followed), timeout=10) == ["saved", "done"]

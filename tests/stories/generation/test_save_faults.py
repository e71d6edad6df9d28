"""The database failing during the save: the client gets save_failed, the model is never called again,
and the text paid for survives: in the failed run when the database is back, in the log when it is not."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.db import OperationalError, connection

from stories.generation import checkpoint, finish, pipeline
from stories.models import GenerationRun, ScreenplayVersion, Story
from tests.conftest import RunRowLock
from tests.fake_anthropic import FakeAnthropic, Reply, screenplay_text
from tests.fake_screenwriter import FakeScreenwriter
from tests.stories.generation.conftest import generate_message, screenplay, unaddressed, ws_connect, ws_events

pytestmark = pytest.mark.django_db(transaction=True)


def _database_down(*args: Any, **kwargs: Any) -> Any:
    raise OperationalError("server closed the connection unexpectedly")


async def _database_down_async(*args: Any, **kwargs: Any) -> Any:
    return _database_down()


async def _generate(writer: Any, **fields: Any) -> list[dict[str, Any]]:
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to(generate_message(**fields))
        return await ws_events(communicator)
    finally:
        await communicator.disconnect()


async def test_a_failed_save_is_save_failed_and_the_run_keeps_the_streamed_text(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = screenplay_text(screenplay(scenes=2))
    fake_anthropic.script(Reply(text=text))
    monkeypatch.setattr(finish, "screenplay_version_create", _database_down)
    events = await _generate(writer)
    assert unaddressed(events[-1]) == {
        "type": "error",
        "code": "save_failed",
        "message": "the screenplay could not be saved; please try again",
        "retryable": events[-1]["retryable"],
    }
    run = await GenerationRun.objects.aget(pk=events[0]["run_id"])
    assert (run.status, run.error_code) == ("failed", "save_failed")
    assert run.raw_text == text
    assert len(fake_anthropic.requests) == 1  # never called again
    assert await Story.objects.acount() == 0 and await ScreenplayVersion.objects.acount() == 0


async def test_with_the_database_still_down_the_text_goes_to_the_log(
    writer: Any,
    cast: Any,
    fake_anthropic: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    text = screenplay_text(screenplay(scenes=2))
    fake_anthropic.script(Reply(text=text))
    monkeypatch.setattr(finish, "screenplay_version_create", _database_down)
    monkeypatch.setattr(pipeline, "generation_run_finish", _database_down)
    with caplog.at_level(logging.ERROR, logger="stories.generation.pipeline"):
        events = await _generate(writer)
    assert events[-1]["code"] == "save_failed"
    run_id = events[0]["run_id"]
    logged = [
        r.getMessage()
        for r in caplog.records
        if f"generation run {run_id} could not be recorded" in r.getMessage()
    ]
    assert len(logged) == 1
    assert text in logged[0]
    assert len(fake_anthropic.requests) == 1


async def test_the_database_failing_on_the_cast_after_admission_fails_the_run_without_a_model_call(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The contexts are read in the admission's trip to the thread pool, after the run is recorded:
    # the run must still come back to be closed, not be left streaming.
    monkeypatch.setattr(pipeline, "persona_contexts", _database_down)
    events = await _generate(writer)
    assert [event["type"] for event in events] == ["accepted", "error"]
    assert events[-1]["code"] == "llm_unavailable"
    run = await GenerationRun.objects.aget(pk=events[0]["run_id"])
    assert run.status == "failed"
    assert fake_anthropic.requests == []


async def test_the_database_failing_mid_run_is_said_to_be_the_databases_doing(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkpoint's write failing (the database gone mid-stream) ended the run with "the generation
    # failed unexpectedly" under llm_unavailable, not retryable: it read as the model's failure.
    fake_anthropic.script(Reply(text=screenplay_text(screenplay(scenes=2))))
    monkeypatch.setattr(checkpoint, "generation_run_checkpoint_async", _database_down_async)
    events = await _generate(writer)
    assert unaddressed(events[-1]) == {
        "type": "error",
        "code": "llm_unavailable",
        "message": f"the server's database failed during the generation (run {events[0]['run_id']}); please try again",
        "retryable": True,
    }


async def test_the_database_failing_on_a_parallel_scenes_checkpoint_is_said_to_be_the_databases_doing(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Parallel mode checkpoints each scene from the scene's own task, which turned the database's
    # failure into "scene 1 failed unexpectedly", not retryable: the writer was told not to try again.
    fake_anthropic.default = FakeScreenwriter(screenplay(scenes=2))
    calls = 0
    save = checkpoint.generation_run_checkpoint_async

    async def outline_saved_then_down(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await save(*args, **kwargs) if calls == 1 else _database_down()

    monkeypatch.setattr(checkpoint, "generation_run_checkpoint_async", outline_saved_then_down)
    events = await _generate(writer, mode="parallel")
    assert unaddressed(events[-1]) == {
        "type": "error",
        "code": "llm_unavailable",
        "message": f"the server's database failed during the generation (run {events[0]['run_id']}); please try again",
        "retryable": True,
    }


async def test_a_row_lock_held_on_the_run_fails_its_checkpoint_after_a_bounded_wait(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    # A lock held on the run's row by hand stalled its first checkpoint (and then its close) for as long
    # as it was held: the writer got only keepalives. The wait is now bounded, on PostgreSQL by
    # STORY_RUN_LOCK_TIMEOUT_SECONDS (lock_timeout), on SQLite by the connection's busy timeout (20 s,
    # set to 1 s here), and the run ends saying the database kept it locked, worth trying again.
    settings.STORY_RUN_LOCK_TIMEOUT_SECONDS = 1
    if connection.vendor == "sqlite":
        monkeypatch.setitem(connection.settings_dict["OPTIONS"], "timeout", 1)
    fake_anthropic.script(Reply(text=screenplay_text(screenplay(scenes=2))))
    lock = RunRowLock()
    save = checkpoint.generation_run_checkpoint_async

    async def taken_then_saved(*, run_id: int, **kwargs: Any) -> Any:
        if lock.thread is None:
            await lock.take(run_id)
        return await save(run_id=run_id, **kwargs)

    monkeypatch.setattr(checkpoint, "generation_run_checkpoint_async", taken_then_saved)
    try:
        # Each event within ws_events' 10 s: the run must end well before the lock goes.
        events = await _generate(writer)
        assert lock.thread is not None and lock.thread.is_alive()  # the lock was held all along
    finally:
        lock.release()
    assert unaddressed(events[-1]) == {
        "type": "error",
        "code": "llm_unavailable",
        "message": f"the server's database kept this run's record locked for too long (run {events[0]['run_id']}); please try again",
        "retryable": True,
    }
    assert "scene" not in [event["type"] for event in events]

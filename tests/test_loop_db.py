"""A running generation's own writes sent from the event loop itself (storyproject.loop_db).

Each test runs with the writes from the thread pool and from the loop (``run_writes``); on SQLite the
loop's connections are never used, and the writes behave the same either way.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.db import DatabaseError, connection

from stories.models import GenerationRun
from stories.services import (
    RUN_LEASE_OWNER,
    generation_run_admit,
    generation_run_checkpoint_async,
    generation_run_lease_renew_async,
    generation_run_release,
)
from storyproject import loop_db
from storyproject.db import db_call, lock_wait_exceeded
from tests.conftest import RunRowLock, loop_statements

pytestmark = pytest.mark.django_db(transaction=True)

DEAD = "dead-host:4242:0123456789ab"


async def _streaming_run(writer: Any) -> GenerationRun:
    return await db_call(generation_run_admit)(
        user_id=writer.pk, model="claude-sonnet-5-5", max_tokens=1024, persona_names=["a"], story_id=None
    )


def _from_loop(run_writes: str) -> bool:
    return run_writes == "event loop" and connection.vendor == "postgresql"


async def test_a_checkpoint_and_a_renewal_are_written_only_while_the_run_is_held(
    writer: Any, run_writes: str
) -> None:
    run = await _streaming_run(writer)
    try:
        assert await generation_run_checkpoint_async(
            run_id=run.pk, lease_owner=RUN_LEASE_OWNER, checkpoint={"scenes": [{"heading": "INT. ROOM"}]}
        )
        assert not await generation_run_checkpoint_async(run_id=run.pk, lease_owner=DEAD, checkpoint={"x": 1})
        assert not await generation_run_lease_renew_async(run_id=run.pk, lease_owner=DEAD)
        before = (await GenerationRun.objects.aget(pk=run.pk)).lease_expires_at
        assert await generation_run_lease_renew_async(run_id=run.pk, lease_owner=RUN_LEASE_OWNER)
        stored = await GenerationRun.objects.aget(pk=run.pk)
        assert stored.checkpoint == {"scenes": [{"heading": "INT. ROOM"}]}
        assert before is not None and stored.lease_expires_at is not None
        assert stored.lease_expires_at >= before
        # Where they went from: four statements from the loop's connection on PostgreSQL, none elsewhere.
        assert loop_statements() == (4 if _from_loop(run_writes) else 0)
        if _from_loop(run_writes):
            # The loop's connections commit without waiting for the disk (what they send may); Django's
            # own connections still wait.
            [pool] = loop_db._pools.values()
            async with pool.connection() as pooled, pooled.cursor() as cursor:
                await cursor.execute("SHOW synchronous_commit")
                assert await cursor.fetchone() == ("off",)
            assert await db_call(_synchronous_commit)() == "on"
    finally:
        generation_run_release(run_id=run.pk)


async def test_writes_go_on_after_postgresql_dropped_every_connection(writer: Any, run_writes: str) -> None:
    # A PostgreSQL restart (or a proxy cutting idle connections) kills every connection in the pool; a
    # write that finds its connection dead is sent again on another (it sets the same values), so the
    # run's checkpoint is not lost and the run does not fail for it.
    run = await _streaming_run(writer)
    try:
        assert await generation_run_lease_renew_async(run_id=run.pk, lease_owner=RUN_LEASE_OWNER)
        if _from_loop(run_writes):
            await db_call(_loop_connections_terminate)()
        assert await generation_run_checkpoint_async(
            run_id=run.pk, lease_owner=RUN_LEASE_OWNER, checkpoint={"kept": True}
        )
        assert (await GenerationRun.objects.aget(pk=run.pk)).checkpoint == {"kept": True}
    finally:
        generation_run_release(run_id=run.pk)


async def test_a_database_that_cannot_be_reached_fails_the_write_as_a_database_error(
    writer: Any, run_writes: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pipeline handles Django's DatabaseError (a renewal tries again next period, a checkpoint fails
    # the run as a database failure): the loop's connections raise it too, after the database's pool
    # timeout, when no connection can be made.
    run = await _streaming_run(writer)
    try:
        if _from_loop(run_writes):
            await loop_db.pools_close()
            with monkeypatch.context() as unreachable:
                unreachable.setitem(connection.settings_dict, "PORT", "1")  # nothing listens there
                unreachable.setitem(connection.settings_dict["OPTIONS"]["pool"], "timeout", 1)
                with pytest.raises(DatabaseError):
                    await generation_run_lease_renew_async(run_id=run.pk, lease_owner=RUN_LEASE_OWNER)
                await loop_db.pools_close()
        assert await generation_run_lease_renew_async(run_id=run.pk, lease_owner=RUN_LEASE_OWNER)
    finally:
        generation_run_release(run_id=run.pk)


async def test_a_row_lock_held_elsewhere_fails_a_checkpoint_and_a_renewal_after_a_bounded_wait(
    writer: Any, run_writes: str, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A lock held on the run's row by hand (psql's SELECT ... FOR UPDATE left open) made both wait for as
    # long as it was held, from the thread pool and from the loop's connections alike; they now give
    # up after STORY_RUN_LOCK_TIMEOUT_SECONDS (SQLite: its busy timeout, 1 s here) with an error that
    # says so, and succeed again once the lock goes.
    settings.STORY_RUN_LOCK_TIMEOUT_SECONDS = 1
    if connection.vendor == "sqlite":
        monkeypatch.setitem(connection.settings_dict["OPTIONS"], "timeout", 1)
    run = await _streaming_run(writer)
    lock = RunRowLock()
    try:
        await lock.take(run.pk)
        for write in (
            generation_run_checkpoint_async(run_id=run.pk, lease_owner=RUN_LEASE_OWNER, checkpoint={"x": 1}),
            generation_run_lease_renew_async(run_id=run.pk, lease_owner=RUN_LEASE_OWNER),
        ):
            with pytest.raises(DatabaseError) as refused:
                await asyncio.wait_for(write, timeout=15)
            assert lock_wait_exceeded(refused.value), refused.value
        assert lock.thread is not None and lock.thread.is_alive()
        lock.release()
        assert await generation_run_checkpoint_async(
            run_id=run.pk, lease_owner=RUN_LEASE_OWNER, checkpoint={"kept": True}
        )
        assert loop_statements() == (3 if _from_loop(run_writes) else 0)
    finally:
        lock.release()
        generation_run_release(run_id=run.pk)


async def test_writes_that_come_together_share_round_trips_and_fail_alone(
    writer: Any, run_writes: str, settings: Any
) -> None:
    # Forty runs' checkpoints at once on two connections: they go in a few pipelined round trips, not
    # one connection trip each, and the one PostgreSQL refuses (a NUL in its JSON) fails by itself.
    settings.STORY_LOOP_DB_CONNECTIONS = 2
    settings.STORY_MAX_ACTIVE_PER_USER = settings.STORY_GENERATIONS_PER_HOUR = 50
    runs = [await _streaming_run(writer) for _ in range(40)]

    async def checkpoints(bad: int | None) -> list[Any]:
        return await asyncio.gather(
            *(
                generation_run_checkpoint_async(
                    run_id=run.pk,
                    lease_owner=RUN_LEASE_OWNER,
                    checkpoint={"scenes": ["\u0000" if run.pk == bad else f"scene {run.pk}"]},
                )
                for run in runs
            ),
            return_exceptions=True,
        )

    try:
        assert await checkpoints(bad=None) == [True] * 40
        if _from_loop(run_writes):
            assert loop_db.sent["statements"] == 40
            assert loop_db.sent["round_trips"] <= 4, loop_db.sent
        bad = runs[17].pk
        outcomes = await checkpoints(bad=bad)
        refused = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if connection.vendor == "postgresql":
            assert len(refused) == 1 and isinstance(refused[0], DatabaseError), outcomes
            assert isinstance(outcomes[17], DatabaseError)
        assert [outcome for outcome in outcomes if outcome is True] == [True] * (40 - len(refused))
        stored = {
            run.pk: run.checkpoint async for run in GenerationRun.objects.filter(pk__in=[r.pk for r in runs])
        }
        assert all(stored[run.pk] == {"scenes": [f"scene {run.pk}"]} for run in runs if run.pk != bad)
    finally:
        for run in runs:
            generation_run_release(run_id=run.pk)


def _synchronous_commit() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return str(cursor.fetchone()[0])


def _loop_connections_terminate() -> None:
    with connection.cursor() as cursor:
        # Waits (up to 5 s) until each backend is gone, not only signalled.
        cursor.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
            " WHERE application_name = %s AND datname = current_database()",
            [loop_db.APPLICATION_NAME],
        )
        terminated = [row[0] for row in cursor.fetchall()]
        assert terminated and all(terminated)

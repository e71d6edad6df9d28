"""Statements sent from daphne's event loop itself, on PostgreSQL, through psycopg's async connections.

A statement sent through the loop's thread pool (storyproject.db) costs far more CPU than its work: the
trip to a thread and back, Django's connection handling in that thread, and, under load, the GIL passed
between that thread and the busy loop thread at every round trip (bench/results/run_writes.md;
docs/performance.md, "Eleventh step"). The writes a running generation makes on its way
(lease renewals, checkpoints) go from the loop instead, as one statement each
(storyproject.db.update_unflushed_async), those that come together in one pipelined round trip.

They are all writes whose commit need not wait for PostgreSQL to flush its WAL to disk
(storyproject.db.update_unflushed says why that is safe for them), so these connections commit that way
for everything they send (``synchronous_commit`` off for the session): a statement needs no ``SET LOCAL``
before it and goes alone, with its parameters bound by the server. Nothing that must be durable at its
commit (an admission, a save) may be sent through them.

Only on the loop daphne serves on for the life of its process (``storyproject.runtime.serving_loop``, as
for the model's aiohttp clients), on PostgreSQL, and while ``STORY_LOOP_DB_CONNECTIONS`` is above 0;
anywhere else (SQLite, a command's or a test's own loop) the caller falls back to the thread pool. The
connections are psycopg_pool's ``AsyncConnectionPool``, one per such loop, opened at its first use with
the database settings Django connects with; a test that turns this on closes its loop's pool with
``pools_close``.

Errors are Django's (``connection.wrap_database_errors``): a caller that handles ``DatabaseError`` from
the thread pool handles it from here the same way, a database that cannot be reached included (the
pool's ``PoolTimeout`` is a psycopg ``OperationalError``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

import psycopg
from django.conf import settings
from django.db import connections
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from storyproject.runtime import serving_loop

# What pg_stat_activity names these connections by.
APPLICATION_NAME = "story: event loop"
_pools: dict[tuple[asyncio.AbstractEventLoop, str], AsyncConnectionPool[AsyncConnection[Any]]] = {}
# How long a statement waits for one of the pool's connections (psycopg_pool's ``timeout``) when the
# database's own pool settings name none; a database that cannot be reached fails it after this long.
_DEFAULT_WAIT_SECONDS = 10.0


def usable(using: str) -> bool:
    """Whether statements for database ``using`` may go from the running loop (see the module docstring)."""
    if settings.STORY_LOOP_DB_CONNECTIONS <= 0:
        return False
    return connections[using].vendor == "postgresql" and serving_loop(asyncio.get_running_loop())


async def rowcount(using: str, statement: str, parameters: Sequence[Any], *, row: tuple[str, Any]) -> int:
    """Send ``statement`` on one of this loop's connections to ``using``, in autocommit, its commit not
    waiting for the disk (see the module docstring); the number of rows it affected.

    Statements are sent in batches: a statement that finds a connection free goes at once; those that
    come while every connection is busy wait together, and the next connection free takes them all
    (up to ``BATCH``) in one round trip, in psycopg's pipeline mode. A statement's connection is held
    until the busy loop gets back to the coroutine that sent it, several loop turns, so one statement
    per connection made the connections the queue at a few hundred streams (docs/performance.md,
    "Twelfth step"); a batch pays those turns once for all its statements.

    A pipeline's statements run in one implicit transaction, up to its one Sync (PostgreSQL's "Pipeline
    Mode", libpq; psycopg's pipeline sends its Sync at the end): a batch holds the locks of all the
    rows it updates until it ends. ``row`` (table, key) names the one row the statement updates, and a
    batch updates its rows in that order, so two batches never wait for each other in a cycle.

    For idempotent statements only (a renewal, a checkpoint: the same values set again): a batch that
    failed on a connection that had died (every idle connection of the pool after a PostgreSQL restart,
    or one a proxy cut) is sent again on another, at most once per connection the pool may hold, where
    the thread pool's Django connections would fail one statement each; a batch that failed otherwise
    (a statement refused, a deadlock with another transaction, a row lock held elsewhere for longer
    than ``STORY_RUN_LOCK_TIMEOUT_SECONDS``: these connections' ``lock_timeout``) is sent again one
    statement at a time, so each fails or succeeds on its own.
    """
    loop = asyncio.get_running_loop()
    with connections[using].wrap_database_errors:
        queue = _queues.get((loop, using))
        if queue is None:
            queue = _queues[(loop, using)] = _Queue()
        waiting = _Waiting(statement=statement, parameters=parameters, row=row, done=loop.create_future())
        queue.pending.append(waiting)
        if queue.senders < settings.STORY_LOOP_DB_CONNECTIONS:
            queue.senders += 1
            sender = loop.create_task(_send(using, queue))
            _senders.add(sender)
            sender.add_done_callback(_senders.discard)
        return await waiting.done


# At most this many statements go in one pipelined round trip.
BATCH = 100
# What has been sent, for tests and benchmarks: statements, and the round trips (batches) they took.
sent = {"statements": 0, "round_trips": 0}


@dataclasses.dataclass
class _Waiting:
    statement: str
    parameters: Sequence[Any]
    row: tuple[str, Any]
    done: asyncio.Future[int]


@dataclasses.dataclass
class _Queue:
    pending: list[_Waiting] = dataclasses.field(default_factory=list)
    # Tasks sending (each holds, or waits for, one connection): at most the pool's size.
    senders: int = 0


_queues: dict[tuple[asyncio.AbstractEventLoop, str], _Queue] = {}
_senders: set[asyncio.Task[None]] = set()


async def _send(using: str, queue: _Queue) -> None:
    """Send what is pending, a batch at a time, while anything is."""
    try:
        while queue.pending:
            try:
                pool = await _pool(using)
                connection: AsyncConnection[Any] | None = await pool.getconn()
            except Exception as error:
                # No connection to be had (the database cannot be reached): what waits now fails.
                _settle(queue.pending, error)
                queue.pending = []
                return
            try:
                while queue.pending and connection is not None:
                    batch, queue.pending = queue.pending[:BATCH], queue.pending[BATCH:]
                    batch.sort(key=_row)
                    try:
                        connection = await _batch_send(pool, connection, batch)
                    except BaseException:
                        # This task cancelled (its loop closing): nobody is left to answer its batch.
                        for waiting in batch:
                            waiting.done.cancel()
                        raise
            finally:
                if connection is not None:
                    await pool.putconn(connection)
    finally:
        queue.senders -= 1


async def _batch_send(
    pool: AsyncConnectionPool[AsyncConnection[Any]], connection: AsyncConnection[Any], batch: list[_Waiting]
) -> AsyncConnection[Any] | None:
    """Send ``batch`` and settle each statement's future; the connection to go on with (another one
    when ``connection`` was found dead; None when no other could be had)."""
    for attempt in itertools.count(1):
        try:
            counts = await _batch_execute(connection, batch)
        except psycopg.Error as error:
            if not connection.broken:
                if len(batch) == 1:
                    _settle(batch, error)
                    return connection
                # One statement failed the batch (a pipeline's statements share one implicit
                # transaction, all rolled back), or the batch met another transaction's locks in a
                # deadlock: each is sent again on its own, to fail or succeed as it would alone.
                alone: AsyncConnection[Any] | None = connection
                for waiting in batch:
                    if alone is None:
                        _settle([waiting], error)
                    else:
                        alone = await _batch_send(pool, alone, [waiting])
                return alone
            if attempt > settings.STORY_LOOP_DB_CONNECTIONS:
                _settle(batch, error)
                return connection
            await pool.putconn(connection)
            try:
                connection = await pool.getconn()
            except Exception as unavailable:
                _settle(batch, unavailable)
                return None
            continue
        for waiting, count in zip(batch, counts, strict=True):
            if not waiting.done.done():  # its caller may have been cancelled meanwhile
                waiting.done.set_result(count)
        return connection
    raise AssertionError("unreachable")


async def _batch_execute(connection: AsyncConnection[Any], batch: list[_Waiting]) -> list[int]:
    sent["round_trips"] += 1
    sent["statements"] += len(batch)
    if len(batch) == 1:
        async with connection.cursor() as cursor:
            await cursor.execute(batch[0].statement, batch[0].parameters)
            return [int(cursor.rowcount)]
    cursors = [connection.cursor() for _ in batch]
    try:
        async with connection.pipeline():
            for cursor, waiting in zip(cursors, batch, strict=True):
                await cursor.execute(waiting.statement, waiting.parameters)
        return [int(cursor.rowcount) for cursor in cursors]
    finally:
        for cursor in cursors:
            await cursor.close()


def _row(waiting: _Waiting) -> tuple[str, Any]:
    return waiting.row


def _settle(batch: list[_Waiting], error: BaseException) -> None:
    for waiting in batch:
        if not waiting.done.done():
            waiting.done.set_exception(error)


async def _pool(using: str) -> AsyncConnectionPool[AsyncConnection[Any]]:
    key = (asyncio.get_running_loop(), using)
    pool = _pools.get(key)
    if pool is None:
        database = connections[using]
        kwargs = database.get_connection_params()
        # The connection parameters Django's own connections use (database, credentials, options, the
        # adapters of its types), with psycopg's async cursor.
        kwargs.pop("cursor_factory", None)
        kwargs.update(autocommit=True, application_name=APPLICATION_NAME)
        pool_options = database.settings_dict["OPTIONS"].get("pool")
        wait = pool_options.get("timeout", _DEFAULT_WAIT_SECONDS) if isinstance(pool_options, dict) else None
        opened: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
            kwargs=kwargs,
            min_size=1,
            max_size=settings.STORY_LOOP_DB_CONNECTIONS,
            timeout=wait or _DEFAULT_WAIT_SECONDS,
            open=False,
            name=f"loop-{using}",
            configure=_commits_unflushed,
        )
        await opened.open()
        pool = _pools.setdefault(key, opened)
        if pool is not opened:  # another statement opened one meanwhile
            await opened.close()
    return pool


async def _commits_unflushed(connection: AsyncConnection[Any]) -> None:
    # A SET once connected rather than a startup option: a pooler such as PgBouncer refuses unknown
    # startup parameters (behind one in transaction mode the setting may not hold, and commits wait).
    await connection.execute("SET synchronous_commit TO OFF")
    # They send only a run's own writes, whose wait for a row lock held elsewhere is bounded
    # (storyproject.db.lock_wait_bound); the setting is read when a connection is made.
    await connection.execute(lock_timeout_set(local=False))


def lock_timeout_set(*, local: bool) -> str:
    """``SET [LOCAL] lock_timeout`` to ``STORY_RUN_LOCK_TIMEOUT_SECONDS`` (storyproject.db.lock_wait_bound)."""
    # A number of milliseconds (lock_timeout's unit without one), from an integer setting: no quoting.
    milliseconds = int(settings.STORY_RUN_LOCK_TIMEOUT_SECONDS) * 1000
    return f"SET {'LOCAL ' if local else ''}lock_timeout TO {milliseconds}"


async def pools_close() -> None:
    """Close the running loop's pools (their connections), e.g. before the loop ends."""
    loop = asyncio.get_running_loop()
    for key in [key for key in _pools if key[0] is loop]:
        await _pools.pop(key).close()
    for key in [key for key in _queues if key[0] is loop]:
        _settle(
            _queues.pop(key).pending, psycopg.OperationalError("the event loop's connections were closed")
        )

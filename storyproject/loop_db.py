"""Statements sent from daphne's event loop itself, on PostgreSQL, through psycopg's async connections.

A statement sent through the loop's thread pool (storyproject.db) costs far more CPU than its work: the
trip to a thread and back, Django's connection handling in that thread, and, under load, the GIL passed
between that thread and the busy loop thread at every round trip (bench/results/run_writes.md;
docs/performance.md, "Eleventh step"). The writes a running generation makes on its way
(lease renewals, checkpoints) go from the loop instead, as one statement each
(storyproject.db.update_unflushed_async).

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


async def rowcount(using: str, statement: str, parameters: Sequence[Any]) -> int:
    """Send ``statement`` on one of this loop's connections to ``using``, in autocommit, its commit not
    waiting for the disk (see the module docstring); the number of rows it affected.

    For idempotent statements only (a renewal, a checkpoint: the same values set again): one that
    failed on a connection that had died (every idle connection of the pool after a PostgreSQL restart,
    or one a proxy cut) is sent again on another, at most once per connection the pool may hold, where
    the thread pool's Django connections would fail one statement each.
    """
    with connections[using].wrap_database_errors:
        pool = await _pool(using)
        for attempt in itertools.count(1):
            connection = await pool.getconn()
            try:
                async with connection.cursor() as cursor:
                    await cursor.execute(statement, parameters)
                    return int(cursor.rowcount)
            except psycopg.OperationalError:
                if not connection.broken or attempt > settings.STORY_LOOP_DB_CONNECTIONS:
                    raise
            finally:
                await pool.putconn(connection)
    raise AssertionError("unreachable")


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


async def pools_close() -> None:
    """Close the running loop's pools (their connections), e.g. before the loop ends."""
    loop = asyncio.get_running_loop()
    for key in [key for key in _pools if key[0] is loop]:
        await _pools.pop(key).close()

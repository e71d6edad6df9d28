"""The Redis client of the run event log (one per event loop) and its keys."""

from __future__ import annotations

import asyncio
import weakref

import redis.asyncio as redis
from django.conf import settings

# How long one XREAD of a follower waits for a live event before it checks the stream still exists.
BLOCK_MS = 1000
# Connections per process (followers of another process's run hold one through each blocking XREAD),
# and how long a command waits for one when all are busy.
MAX_CONNECTIONS = 500
_POOL_WAIT_SECONDS = 10

# redis.asyncio clients belong to the event loop that made them: one per loop (daphne has one).
clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.Redis] = weakref.WeakKeyDictionary()


def redis_client() -> redis.Redis:
    """This event loop's client of the runs' Redis (REDIS_URL), shared by the run event logs."""
    loop = asyncio.get_running_loop()
    client = clients.get(loop)
    if client is None:
        # A blocking pool: past its size a command waits for a free connection instead of failing.
        # redis-py's default pool raises MaxConnectionsError past 100 connections, which 200 runs
        # polling for a cancel on a busy loop reached (bench.flow, 200 concurrent): the polls failed,
        # and so would a batch of events written meanwhile (other processes would never see it).
        pool = redis.BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            max_connections=MAX_CONNECTIONS,
            timeout=_POOL_WAIT_SECONDS,
            socket_connect_timeout=2,
            socket_timeout=BLOCK_MS / 1000 + 5,
        )
        client = redis.Redis(connection_pool=pool)
        clients[loop] = client
    return client


def key_prefix() -> str:
    return str(settings.CACHES["default"].get("KEY_PREFIX") or "story")


def run_key(run_id: int, part: str) -> str:
    return f"{key_prefix()}:run:{run_id}:{part}"

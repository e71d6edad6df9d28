"""Telling the other server processes that runs were just orphaned, so that they look at once.

A stopping process that hands its runs over (stories.generation.handover) publishes on one Redis
channel, ``<prefix>:runs:orphaned``; every server process's orphan watcher (stories.generation.resume)
waits on that channel between its scans, so a run handed over is resumed within a moment instead of
within a lease period. Without ``REDIS_URL`` (or while Redis is down) the watchers scan every lease
period only: a missed message costs that wait, nothing else, since the scan is what finds the runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import Any

from django.conf import settings
from redis.exceptions import RedisError

from stories.runs.redis_conn import key_prefix, redis_client
from storyproject.logs import RepeatedFailure

logger = logging.getLogger(__name__)
_ANNOUNCEMENTS = RepeatedFailure(logger, "waiting for orphaned-run announcements")

# One wait on the channel at most this long, so that a connection that died is noticed.
_WAIT_SLICE_SECONDS = 5.0

# The subscription of each event loop (daphne has one), kept between waits.
_subscriptions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()


def _channel() -> str:
    return f"{key_prefix()}:runs:orphaned"


async def orphans_announce() -> None:
    """Tell every server process (with Redis) that runs were just orphaned."""
    if not settings.REDIS_URL:
        return
    try:
        await redis_client().publish(_channel(), b"1")
    except RedisError:
        logger.warning("the other processes could not be told about runs handed over", exc_info=True)


async def orphans_wait(seconds: float) -> None:
    """Wait ``seconds``, or less when a process announces orphaned runs (``orphans_announce``)."""
    deadline = time.monotonic() + seconds
    if settings.REDIS_URL:
        try:
            await _announcement(deadline)
            _ANNOUNCEMENTS.succeeded()
            return
        except RedisError:
            _ANNOUNCEMENTS.failed()
            _subscriptions.pop(asyncio.get_running_loop(), None)
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))


async def _announcement(deadline: float) -> None:
    loop = asyncio.get_running_loop()
    pubsub = _subscriptions.get(loop)
    if pubsub is None:
        pubsub = redis_client().pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(_channel())
        _subscriptions[loop] = pubsub
    try:
        while (left := deadline - time.monotonic()) > 0:
            # redis-py: get_message(timeout=t) waits up to t seconds for a message, None when none came
            # (redis.asyncio.client.PubSub.get_message / parse_response, block=False).
            if await pubsub.get_message(timeout=min(left, _WAIT_SLICE_SECONDS)) is not None:
                return
    except BaseException:
        # Cut in the middle of a read (a cancel, an error): the connection's state is unknown.
        _subscriptions.pop(loop, None)
        await asyncio.shield(pubsub.aclose())
        raise

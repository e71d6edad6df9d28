"""Database work called from async code, on the loop's thread pool instead of Channels' one thread."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from channels.db import database_sync_to_async
from django.db import connections

_T = TypeVar("_T")


# Concurrent sockets and generations run their database and cache calls side by side in the loop's
# thread pool (each thread takes its own pooled connection) rather than queueing on Channels' one
# thread-sensitive thread: with 50 generations starting together that queue alone added seconds
# (bench/results/flow.md). Every call is self-contained (its own transaction, no thread-bound state),
# so the thread it runs on does not matter.
def db_call(function: Callable[..., _T]) -> Callable[..., Awaitable[_T]]:
    def call(*args: Any, **kwargs: Any) -> _T:
        try:
            return function(*args, **kwargs)
        finally:
            # Hand the connection back now: a pool thread may never run Django code again (its loop
            # closes), and a connection it kept would be lost to PostgreSQL's pool until it ran dry.
            connections.close_all()

    return database_sync_to_async(call, thread_sensitive=False)

"""The per-run event log: the interface, and the choice of its implementation.

Every event of a run is appended by the one runner that drives it (``stories.runs.runner``) and gets
its address: ``run_id`` and ``seq`` (1, 2, 3… per run, no gaps). Anybody may read or follow it, from
any process when it lives in Redis. A run is cancelled through it too, so a cancel sent to any process
reaches the process that runs it. The embedded default keeps it in this process
(``stories.runs.memory_log``); with ``REDIS_URL`` it is also written to a Redis Stream per run
(``stories.runs.redis_log``), which any process reads. ``stories.runs.store`` picks one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Protocol

from django.conf import settings

# The events that end a run: nothing follows them.
TERMINAL = frozenset({"done", "error", "cancelled"})


class LoggedEvent(dict[str, Any]):
    """An event as this process's log keeps it, with its ``run_id`` and ``seq``, never changed once
    logged; ``event_text`` makes its JSON once, for Redis and for every socket and event stream that
    follows the run (encoding each event once for each was about 2.5 % of a busy server's CPU)."""

    __slots__ = ("text",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.text: str | None = None


def event_text(event: dict[str, Any]) -> str:
    """The event as JSON (not ASCII-escaped): made once for an event of this process's log."""
    if not isinstance(event, LoggedEvent):
        return json.dumps(event, ensure_ascii=False)
    if event.text is None:
        event.text = json.dumps(event, ensure_ascii=False)
    return event.text


class RunEventLog(Protocol):
    async def open(self, run_id: int, *, last_seq: int = 0) -> None:
        """Start writing a run's log here: a fresh one (``last_seq`` 0 drops anything stale kept under
        the id) or, for a run resumed elsewhere, one that goes on after ``last_seq``."""

    async def append(self, run_id: int, event: dict[str, Any]) -> int:
        """Add the event with its ``run_id`` and next ``seq``; return the seq."""

    async def flush(self) -> None:
        """Wait until every event appended so far is where other processes read it."""

    def forget(self, run_id: int) -> None:
        """This process no longer writes the run (another process goes on with it): drop what it
        keeps of it, which ends the run's followers here (no terminal event)."""

    async def read(self, run_id: int, after: int) -> list[dict[str, Any]]:
        """The kept events with ``seq > after``, in order."""

    def follow(self, run_id: int, after: int) -> AsyncIterator[dict[str, Any]]:
        """The events with ``seq > after``, then live ones, up to the terminal event; ends early, with
        no terminal event, when the log does not exist (never written here, or expired), or (Redis)
        when nothing new came for a few seconds: the caller then asks whether the run still goes on."""

    async def exists(self, run_id: int) -> bool: ...

    async def ended(self, run_id: int) -> bool:
        """Whether the log holds the run's terminal event."""

    async def last_seq(self, run_id: int) -> int:
        """The seq of the run's last event, 0 when it has none."""

    async def holds_all(self, run_id: int) -> bool:
        """Whether this process's own log of the run holds every event given out under its seqs (it
        wrote them here). False for a log another process wrote: that process's own followers got each
        event before it reached the log (Redis, every 0.1 s), so they may hold seqs past its last one."""

    async def cancel_request(self, run_id: int) -> None:
        """Ask the process that runs ``run_id`` to cancel it."""

    async def cancels_requested(self, run_ids: list[int]) -> set[int]:
        """Which of ``run_ids`` a cancel was asked for (all in one round trip)."""

    async def touch(self, run_id: int) -> None:
        """Record that somebody follows the run now (for STORY_RUN_DETACHED_TIMEOUT_SECONDS)."""

    async def followed_within(self, run_ids: list[int], seconds: float) -> set[int]:
        """Which of ``run_ids`` somebody followed in the last ``seconds`` (all in one round trip)."""


def retention_seconds() -> int:
    return int(settings.STORY_RUN_EVENTS_RETENTION_SECONDS)

"""Log lines as JSON (``LOG_FORMAT=json``), each carrying the id of the generation run it was logged in.

The pipeline binds the run id to the running task's context when a run is admitted
(``run_log_context_bind``); tasks it starts (parallel scenes) and threads it calls through asgiref's
``sync_to_async`` copy that context, so every line logged on behalf of the run, by our code or a library,
carries ``run_id``. One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
``message``, ``run_id`` when there is one, ``exception`` when there is one. Five fields and ``json.dumps``
need no dependency.

``RepeatedFailure`` keeps a dependency's outage from flooding the log.
"""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar
from datetime import UTC, datetime

_run_id: ContextVar[int | None] = ContextVar("story_run_id", default=None)


def run_log_context_bind(*, run_id: int) -> int | None:
    """Tag every line logged from here on in this context with ``run_id``; returns what to restore."""
    previous = _run_id.get()
    _run_id.set(run_id)
    return previous


def run_log_context_release(previous: int | None) -> None:
    # A set, not ContextVar.reset: an async generator may be closed from another context than the one
    # that bound it, where reset() raises.
    _run_id.set(previous)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        run_id = _run_id.get()
        if run_id is not None:
            entry["run_id"] = run_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class RepeatedFailure:
    """The log of something that fails again and again while a dependency is down (Redis).

    One warning with its traceback when it starts failing, then one line a minute saying how many times
    it failed since, and one when it works again. Logged at every attempt, a Redis outage wrote a
    traceback every 110 ms per process (the run events' writer), and more from the cancel watcher and
    the orphan announcements.
    """

    def __init__(self, logger: logging.Logger, what: str, *, every_seconds: float = 60.0) -> None:
        self.logger = logger
        self.what = what
        self.every = every_seconds
        self.failures = 0
        self.since = 0.0
        self.last_said = 0.0

    def failed(self, detail: str = "") -> None:
        """Call in the ``except`` block (the first time, its exception is logged)."""
        now = time.monotonic()
        self.failures += 1
        if self.failures == 1:
            self.since = self.last_said = now
            self.logger.warning("%s failed%s", self.what, f" ({detail})" if detail else "", exc_info=True)
        elif now - self.last_said >= self.every:
            self.last_said = now
            self.logger.warning(
                "%s still failing: %d times in the last %.0f s", self.what, self.failures, now - self.since
            )

    def succeeded(self) -> None:
        if self.failures:
            self.logger.warning(
                "%s works again, after %d failures in %.0f s",
                self.what,
                self.failures,
                time.monotonic() - self.since,
            )
            self.failures = 0

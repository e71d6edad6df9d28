"""The run event log this deployment uses (``stories.runs.log.RunEventLog``)."""

from __future__ import annotations

from django.conf import settings

from stories.runs import memory_log
from stories.runs.log import RunEventLog
from stories.runs.redis_log import RedisRunEventLog


def run_event_log() -> RunEventLog:
    """Redis Streams with REDIS_URL (mirrored in this process's memory for local followers), else memory."""
    if settings.REDIS_URL:
        return RedisRunEventLog(local=memory_log.LOG)
    return memory_log.LOG

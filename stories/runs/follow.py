"""Following a run: its events after a seq, then the live ones, to its end, from wherever it runs.

Once the log has expired (STORY_RUN_EVENTS_RETENTION_SECONDS after the end), or is gone with the process
that kept it (a restart without Redis), a run's end is rebuilt from the database instead
(``stories.selectors.run_final_events``): its saved scenes, ``saved`` and ``done``, its ``error`` or its
``cancelled``, with ``seq`` null (their place in the sequence is no longer known).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from stories.runs.log import TERMINAL
from stories.runs.runner import run_settled, run_start
from stories.runs.store import run_event_log
from stories.selectors import run_final_events, run_find_for_user
from storyproject.db import db_call

# How often a follower asks again about a run that is running but has no log it can read yet.
_POLL_SECONDS = 1.0


async def run_owned(*, run_id: int, user_id: int) -> bool:
    return await db_call(run_find_for_user)(run_id=run_id, user_id=user_id) is not None


async def run_starter(*, run_id: int, user_id: int) -> str | None:
    """The digest of the credential that started the writer's run (``GenerationRun.started_by``, "" when
    none did); None when the run is not theirs."""
    run = await db_call(run_find_for_user)(run_id=run_id, user_id=user_id)
    return None if run is None else run.started_by


async def run_events_follow(*, run_id: int, after: int = 0) -> AsyncGenerator[dict[str, Any], None]:
    """The run's events with ``seq > after``, then the live ones, ending with its terminal event."""
    log = run_event_log()
    while True:
        async for event in log.follow(run_id, after):
            yield event
            after = event["seq"]
            if event["type"] in TERMINAL:
                return
        exists = await log.exists(run_id)
        if exists and await log.ended(run_id):
            if await log.last_seq(run_id) > after:
                # It ended after the follow handed back (a quiet stream): the rest, its end included.
                continue
            return  # the log ended at or before ``after``: the client has it all
        # No log, or one that went quiet without its end: the run may be over without its log saying
        # so (it ended while Redis was down, and its last events never reached the stream).
        final = await db_call(run_final_events)(run_id=run_id)
        if final is not None:
            for event in final:
                yield event
            return
        if not exists:
            # Still running, but no log here yet (another process without Redis, or a dead process
            # whose run is not resumed yet): ask again.
            await asyncio.sleep(_POLL_SECONDS)


async def run_events(events: AsyncGenerator[dict[str, Any], None]) -> AsyncGenerator[dict[str, Any], None]:
    """Start a run and follow it to its end: the whole run's events, or its refusal alone.

    For the blocking interfaces (REST, the story page's form, the command), which fold them with
    ``stories.generation.events.events_fold``: the run is driven and logged as any other, so it can
    be watched and cancelled from elsewhere meanwhile.
    """
    start = await run_start(events)
    if start.run_id is None:
        assert start.refusal is not None
        yield start.refusal
        return
    async with aclosing(run_events_follow(run_id=start.run_id)) as followed:
        async for event in followed:
            if event["type"] in TERMINAL:
                await run_settled(run_id=start.run_id)
            yield event

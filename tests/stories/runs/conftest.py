from __future__ import annotations

import json
from typing import Any

from channels.testing import WebsocketCommunicator
from django.conf import settings
from redis.asyncio import Redis

from stories.runs import memory_log
from stories.runs.redis_log import run_key
from tests.fake_anthropic import FakeAnthropic, Reply, screenplay_text
from tests.stories.generation.conftest import (  # noqa: F401
    cast,
    fake_anthropic,
    generate_message,
    offline,
    screenplay,
    ws_connect,
)


def script_slow(fake: FakeAnthropic, tokens_per_second: float = 150) -> None:
    """One four-scene reply at ``tokens_per_second``, in 16-character deltas."""
    text = screenplay_text(screenplay(scenes=4))
    fake.script(Reply(text=text, tokens_per_second=tokens_per_second, chunk_chars=16))


async def run_streaming(writer: Any) -> tuple[WebsocketCommunicator, int]:
    """A socket of ``writer`` that started a run now streaming its text, and the run's id."""
    communicator = await ws_connect(writer)
    await communicator.send_json_to(generate_message())
    run_id = json.loads(await communicator.receive_from(timeout=10))["run_id"]
    while json.loads(await communicator.receive_from(timeout=10))["type"] != "delta":
        pass
    return communicator, run_id


async def first_answer(writer: Any, message: dict[str, Any], *, then_nothing: bool = False) -> dict[str, Any]:
    """The first event a new socket of ``writer`` gets for ``message`` (and, if asked, nothing after it)."""
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to(message)
        event = json.loads(await communicator.receive_from(timeout=5))
        if then_nothing:
            assert await communicator.receive_nothing(timeout=0.3)
        return dict(event)
    finally:
        await communicator.disconnect()


async def log_expires(run_id: int) -> None:
    """What the retention does to a run's log, now rather than in an hour; and what a restart does to
    it without Redis (the log was the process's memory)."""
    memory_log.LOG.runs.pop(run_id, None)
    if settings.REDIS_URL:
        client = Redis.from_url(settings.REDIS_URL)
        await client.delete(run_key(run_id, "events"))
        await client.aclose()

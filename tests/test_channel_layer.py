"""The Redis channel layer, configured as settings.py configures it, keeps idle consumers alive."""

from __future__ import annotations

import asyncio
import os
import runpy
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from channels_redis.core import RedisChannelLayer

SETTINGS = Path(__file__).resolve().parent.parent / "storyproject" / "settings.py"


def test_a_quiet_channel_outlives_the_blocking_read_of_the_redis_layer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # CI starts Redis for both passes; the SQLite pass reads the layer settings as a Redis deployment would.
    monkeypatch.setenv("REDIS_URL", os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    config = runpy.run_path(str(SETTINGS))["CHANNEL_LAYERS"]["default"]["CONFIG"]
    # Its own thread and event loop: the browser tests leave a loop running in the main thread.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, _quiet_channel_receives(config)).result(timeout=60)


async def _quiet_channel_receives(config: dict[str, object]) -> None:
    layer = RedisChannelLayer(**{**config, "prefix": "test-quiet-channel"})
    channel = await layer.new_channel()
    receiving = asyncio.ensure_future(layer.receive(channel))
    try:
        # Longer than channels_redis's BZPOPMIN wait: a consumer streaming a screenplay is this quiet.
        await asyncio.sleep(layer.brpop_timeout + 2)
        assert not receiving.done(), receiving.exception()
        await layer.send(channel, {"type": "generation.note", "text": "still here"})
        message = await asyncio.wait_for(receiving, timeout=5)
        assert message == {"type": "generation.note", "text": "still here"}
    finally:
        receiving.cancel()
        await layer.flush()
        await layer.close_pools()

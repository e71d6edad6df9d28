"""The benchmark's WebSocket client: one generation over /ws/generate/, timed on the client's clock.

Times are time.monotonic() (CLOCK_MONOTONIC), the clock bench/fake_server.py records with, so client
and model times can be subtracted. Deltas are recognised by their prefix without parsing the JSON:
the client must not be the slowest part of a 200-stream run.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

_DELTA = '{"type": "delta"'
_PROGRESS = '{"type": "progress"'


@dataclass
class Generation:
    """What one client saw of one generation."""

    run_id: str
    started_at: float = 0.0  # before the WebSocket handshake
    sent_at: float = 0.0  # the generate message sent
    first_delta_at: float | None = None
    first_scene_at: float | None = None
    done_at: float | None = None
    error: str = ""
    frames: int = 0  # WebSocket messages received
    delta_frames: int = 0  # of which `delta` events


async def ws_open(*, base: str, session_cookie: str) -> ClientConnection:
    """A signed-in WebSocket to /ws/generate/ (the consumer authenticates by the session cookie)."""
    url = base.replace("http://", "ws://") + "/ws/generate/"
    return await connect(
        url,
        origin=Origin(base),
        additional_headers={"Cookie": f"sessionid={session_cookie}"},
        open_timeout=60,
        max_size=2**22,
    )


async def ws_generate(
    socket: ClientConnection, *, generation: Generation, plot: str, personas: list[str], timeout: float
) -> Generation:
    """Send one generate message and read until done or error; fill in ``generation``'s times."""
    message = {"type": "generate", "plot": plot, "personas": personas, "title": "Bench"}
    generation.sent_at = time.monotonic()
    await socket.send(json.dumps(message))
    try:
        async with asyncio.timeout(timeout):
            async for raw in socket:
                now = time.monotonic()
                generation.frames += 1
                text = raw if isinstance(raw, str) else raw.decode()
                if text.startswith(_DELTA):
                    generation.delta_frames += 1
                    if generation.first_delta_at is None:
                        generation.first_delta_at = now
                    continue
                if text.startswith(_PROGRESS):
                    continue
                event = json.loads(text)
                kind = event.get("type")
                if kind == "scene" and generation.first_scene_at is None:
                    generation.first_scene_at = now
                elif kind == "done":
                    generation.done_at = now
                    return generation
                elif kind in ("error", "cancelled"):
                    generation.error = f"{event.get('code', kind)}: {event.get('message', '')}"[:200]
                    return generation
        generation.error = "connection closed before done"
    except TimeoutError:
        generation.error = f"no done within {timeout:.0f} s"
    except Exception as error:  # a benchmark counts every failure as an error and goes on
        generation.error = f"{type(error).__name__}: {error}"[:200]
    return generation

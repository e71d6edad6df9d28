"""A WebSocket's incoming messages, bounded per socket: a token bucket, and a queue that cannot grow.

daphne puts every frame a client sends into the connection's ``asyncio.Queue()`` at once, with no size
(daphne/server.py, ``create_application``; ``ws_protocol.onMessage`` calls ``put_nowait``), and Channels'
consumer reads that queue one message at a time (channels/consumer.py, ``await_many_dispatch``):
neither offers a bound. A client that sent faster than the consumer answered had every message kept
until its turn (a script's 2,000 a second grew the process by about 100 MB in 1.5 s).

``inbound_bounded`` stands between them: a task reads daphne's queue as fast as frames arrive and hands
the consumer at most ``STORY_WS_MESSAGES_PER_SECOND`` a second (a bucket of that many tokens, refilled
at that rate), keeping at most that many waiting for it (a text longer than ``STORY_WS_MAX_MESSAGE_BYTES``,
which the consumer refuses, waits cut to one character past it). A message over the bound is dropped at once;
the first drop is told to the consumer as a ``story.flooded`` message (``closing`` false: it answers
``rate_limited`` once), and a second's worth more drops before the client has kept under the rate for a
whole second (the bucket full again) as a second one (``closing`` true: it closes the socket, 4429). A
client that sends at the rate plus one message a second is let through at the rate and closed within
``rate`` seconds; at ten times the rate, within a second. The socket's other messages (connect,
disconnect) always pass.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

from django.conf import settings

FLOODED = "story.flooded"

Receive = Callable[[], Awaitable[dict[str, Any]]]
Application = Callable[[dict[str, Any], Receive, Any], Awaitable[None]]


class TokenBucket:
    """``rate`` tokens a second, at most ``rate`` held: ``take`` spends one when there is one."""

    def __init__(self, rate: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.tokens = float(rate)
        self.clock = clock
        self.last = clock()

    def take(self) -> bool:
        self._refill()
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def full(self) -> bool:
        """Whether a second's worth is unspent: nothing was taken for a second, or slowly enough."""
        self._refill()
        return self.tokens >= self.rate

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(float(self.rate), self.tokens + (now - self.last) * self.rate)
        self.last = now


class InboundGate:
    """The messages of one socket, from the server's ``receive`` to the application's, bounded."""

    def __init__(self, receive: Receive, rate: int) -> None:
        self.server_receive = receive
        self.rate = rate
        self.bucket = TokenBucket(rate)
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        # Messages dropped since the client last kept under the rate for a second (the bucket full).
        self.dropped = 0

    async def receive(self) -> dict[str, Any]:
        return await self.queue.get()

    async def pump(self) -> None:
        while True:
            message = await self.server_receive()
            if message["type"] != "websocket.receive":
                self.queue.put_nowait(message)
                if message["type"] == "websocket.disconnect":
                    return
                continue
            self._admit(message)

    def _admit(self, message: dict[str, Any]) -> None:
        # Waiting messages are counted too: a consumer held up (a slow database) does not let the
        # bucket's tokens pile messages up behind it.
        if self.bucket.full():
            self.dropped = 0  # it slowed down after it was told: a new flood is told again
        if self.bucket.take() and self.queue.qsize() < self.rate:
            self.queue.put_nowait(_oversized_cut(message))
            return
        self.dropped += 1
        if self.dropped == 1:
            self.queue.put_nowait({"type": FLOODED, "closing": False, "rate": self.rate})
        elif self.dropped == self.rate + 1:
            self.queue.put_nowait({"type": FLOODED, "closing": True, "rate": self.rate})


def _oversized_cut(message: dict[str, Any]) -> dict[str, Any]:
    """A text over ``STORY_WS_MAX_MESSAGE_BYTES`` cut to one character past it (daphne takes up to 1 MiB):
    the consumer refuses it as too long all the same, and what waits for it stays small. A binary
    message, refused whatever it holds, waits empty."""
    limit = settings.STORY_WS_MAX_MESSAGE_BYTES
    text = message.get("text")
    if text is not None and len(text) > limit:
        return {**message, "text": text[: limit + 1]}
    if message.get("bytes"):
        return {**message, "bytes": b""}
    return message


async def inbound_bounded(app: Application, scope: dict[str, Any], receive: Receive, send: Any) -> None:
    """Run ``app`` on a WebSocket's ``scope`` with its incoming messages bounded (the module's doc)."""
    gate = InboundGate(receive, settings.STORY_WS_MESSAGES_PER_SECOND)
    pump = asyncio.create_task(gate.pump())
    try:
        await app(scope, gate.receive, send)
    finally:
        pump.cancel()
        with suppress(asyncio.CancelledError):
            await pump

"""storyproject.ws_inbound: a socket's incoming messages, bounded whatever the application's pace."""

from __future__ import annotations

import asyncio
from typing import Any

from storyproject.ws_inbound import FLOODED, InboundGate, TokenBucket


def test_the_bucket_holds_a_seconds_worth_and_refills_at_its_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(4, clock=lambda: now[0])
    assert [bucket.take() for _ in range(5)] == [True] * 4 + [False]
    now[0] = 0.5
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    now[0] = 100.0  # idle for long: still a second's worth, no more
    assert sum(bucket.take() for _ in range(10)) == 4


async def test_a_flood_while_the_application_reads_nothing_keeps_a_bounded_queue() -> None:
    # daphne's queue, which the application would otherwise read: 10,000 messages of 1 KB arriving
    # while the consumer is held up (a slow database). What waits for it is bounded by the rate.
    server: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    server.put_nowait({"type": "websocket.connect"})
    for _ in range(10_000):
        server.put_nowait({"type": "websocket.receive", "text": "x" * 1024})
    server.put_nowait({"type": "websocket.disconnect", "code": 1000})
    gate = InboundGate(server.get, rate=20)
    await asyncio.wait_for(gate.pump(), timeout=5)
    assert server.empty()
    waiting = [gate.queue.get_nowait() for _ in range(gate.queue.qsize())]
    kinds = [message["type"] for message in waiting]
    assert kinds == ["websocket.connect"] + ["websocket.receive"] * 19 + [FLOODED] * 2 + [
        "websocket.disconnect"
    ]
    assert [message["closing"] for message in waiting if message["type"] == FLOODED] == [False, True]


async def test_a_message_too_long_for_the_consumer_waits_cut_short(settings: Any) -> None:
    settings.STORY_WS_MAX_MESSAGE_BYTES = 1024
    server: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for message in ({"text": "x" * 1_000_000}, {"text": "short"}, {"bytes": b"y" * 1_000_000}):
        server.put_nowait({"type": "websocket.receive", **message})
    server.put_nowait({"type": "websocket.disconnect", "code": 1000})
    gate = InboundGate(server.get, rate=20)
    await gate.pump()
    # Still too long, so refused as such; a binary message is refused whatever it holds.
    assert [await gate.receive() for _ in range(3)] == [
        {"type": "websocket.receive", "text": "x" * 1025},
        {"type": "websocket.receive", "text": "short"},
        {"type": "websocket.receive", "bytes": b""},
    ]


async def test_a_steady_flood_is_closed_though_some_messages_pass() -> None:
    # 100 a second against 20: every fifth passes as the bucket refills. It was told again after each,
    # and never closed; now it is told once and closed once another second's worth was dropped.
    now = [0.0]
    server: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    gate = InboundGate(server.get, rate=20)
    gate.bucket = TokenBucket(20, clock=lambda: now[0])
    flooded = []
    for index in range(200):
        now[0] = index / 100
        gate._admit({"type": "websocket.receive", "text": "{}"})
        while not gate.queue.empty():
            message = gate.queue.get_nowait()
            if message["type"] == FLOODED:
                flooded.append((index, message["closing"]))
    assert [closing for _, closing in flooded] == [False, True]
    assert flooded[1][0] < 50  # about 0.45 s into the flood

"""daphne as WebSocket clients meet it: a close's code and reason, as docs/protocol.md's close codes say.

Channels' test communicator hands the consumer's ``websocket.close`` message to the test as it is, reason
included; daphne dropped the reason (its ``handle_reply`` passed the code alone to autobahn), so a client
of the real server read an empty reason for both 4429s, the one a socket past the per-user cap gets and
the one a flooding socket gets.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.typing import Origin

from tests.live_server import daphne_start, daphne_stop, server_env, writer_seeded


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    env = server_env(
        database=tmp_path / "db.sqlite3", STORY_WS_MAX_SOCKETS_PER_USER="1", STORY_WS_MESSAGES_PER_SECOND="5"
    )
    token = writer_seeded(env)
    url, process = daphne_start(env=env, log=tmp_path / "daphne.log")
    yield url, token
    daphne_stop(process)


async def _open(url: str, token: str) -> Any:
    return await websockets.connect(
        url.replace("http", "ws", 1) + "/ws/generate/",
        origin=Origin(url),
        additional_headers={"Authorization": f"Token {token}"},
    )


async def _until_closed(socket: Any) -> tuple[list[dict[str, Any]], int | None, str | None]:
    """What the server sent until it closed the socket, then the close frame's code and reason."""
    messages = []
    try:
        async with asyncio.timeout(20):
            async for text in socket:
                messages.append(json.loads(text))
    except websockets.ConnectionClosed:
        pass
    return messages, socket.close_code, socket.close_reason


async def test_both_4429s_carry_their_reason_under_daphne(server: tuple[str, str]) -> None:
    url, token = server
    first = await _open(url, token)
    await first.send(json.dumps({"type": "cancel"}))  # answered once the socket holds its slot
    assert json.loads(await first.recv())["code"] == "invalid_request"

    second = await _open(url, token)
    messages, code, reason = await _until_closed(second)
    assert [message["code"] for message in messages] == ["busy"]
    assert (code, reason) == (4429, "busy")

    for _ in range(40):  # far past 5 a second: told once, then closed
        await first.send(json.dumps({"type": "cancel"}))
    messages, code, reason = await _until_closed(first)
    assert "rate_limited" in [message["code"] for message in messages]
    assert (code, reason) == (4429, "too_many_messages")

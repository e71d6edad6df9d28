"""A WebSocket client that does not read what it is sent, against a real daphne (the only server that says
how much a connection holds unsent: storyproject/send_buffer.py).

A script that sent ``attach`` for a finished run again and again without reading had the whole run
replayed into the connection's buffer for each one: the process grew by about 1 MB a second until daphne
dropped the connection some 50 s later. The client here is a raw socket with a small receive buffer, so
what it does not read stays on the server; the server's limits are small (1 KiB, then 256 KiB).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from channels.testing import WebsocketCommunicator
from rest_framework.authtoken.models import Token

from stories.generation.models_registry import DEFAULT_MODEL
from stories.routing import GENERATE_WS_PATH
from storyproject.asgi import application
from storyproject.send_buffer import UNSENT_BYTES
from tests.fake_anthropic import FakeAnthropic, Reply, screenplay_text
from tests.live_server import daphne_start, daphne_stop, server_env, writer_seeded
from tests.stories.generation.conftest import generate_message, screenplay


@dataclass
class Server:
    url: str
    token: str
    fake: FakeAnthropic

    def generate(self, *, wait: bool) -> int:
        message = generate_message(mode="single")
        body = {key: message[key] for key in ("plot", "personas", "mode")}
        response = httpx.post(
            f"{self.url}/api/ai/generate-screenplay/",
            json={**body, "wait": wait},
            headers={"Authorization": f"Token {self.token}"},
            timeout=60,
        )
        assert response.status_code == (201 if wait else 202), response.text
        return int(response.json()["run_id"])

    def run_events(self, run_id: int) -> list[dict[str, Any]]:
        """The run's events over SSE, to its end (for a live run: once it has ended)."""
        events = []
        headers = {"Authorization": f"Token {self.token}", "Accept": "text/event-stream"}
        with httpx.stream(
            "GET", f"{self.url}/api/runs/{run_id}/events/", headers=headers, timeout=60
        ) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line.removeprefix("data: ")))
        return events


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("not-reading")
    fake = FakeAnthropic()
    env = server_env(
        database=workdir / "db.sqlite3",
        ANTHROPIC_API_KEY=fake.api_key,
        ANTHROPIC_BASE_URL=fake.base_url,
        STORY_BACKEND="stories.generation.backends.anthropic.AnthropicBackend",
        STORY_MODEL=DEFAULT_MODEL,
        STORY_MODELS=DEFAULT_MODEL,
        STORY_WS_SEND_BUFFER_BYTES="1024",
        STORY_WS_SEND_BUFFER_MAX_BYTES="262144",
        # Its 300 attaches at once are a flood by the default limit (test_ws_security tests that).
        STORY_WS_MESSAGES_PER_SECOND="1000",
    )
    token = writer_seeded(env)
    url, process = daphne_start(env=env, log=workdir / "daphne.log")
    try:
        yield Server(url=url, token=token, fake=fake)
    finally:
        daphne_stop(process)
        fake.close()


@pytest.fixture(scope="module")
def finished_run(server: Server) -> tuple[int, list[dict[str, Any]]]:
    """A finished run of some 60 KB of events (many small deltas), and its events."""
    server.fake.script(Reply(text=screenplay_text(screenplay(scenes=8)), chunk_chars=8))
    run_id = server.generate(wait=True)
    return run_id, server.run_events(run_id)


class RawSocket:
    """A WebSocket client on a plain socket: it reads only when told to."""

    def __init__(self, server: Server) -> None:
        port = int(server.url.rsplit(":", 1)[1])
        self.sock = socket.socket()
        # Small, before connecting: what the client does not read stays on the server's side.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))
        self.sock.settimeout(20)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /ws/generate/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: {server.url}\r\nAuthorization: Token {server.token}\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        self.pending = b""
        self.close_code: int | None = None

    def send_json(self, message: dict[str, Any]) -> None:
        self._send(0x1, json.dumps(message).encode())

    def _send(self, opcode: int, data: bytes) -> None:
        mask = os.urandom(4)
        size = (
            bytes([0x80 | len(data)])
            if len(data) < 126
            else bytes([0x80 | 126]) + struct.pack("!H", len(data))
        )
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(data))
        self.sock.sendall(bytes([0x80 | opcode]) + size + mask + masked)

    def read_events(self, enough: Any) -> tuple[list[dict[str, Any]], bool]:
        """Text messages until ``enough(events)`` or the connection ends; and whether it ended."""
        events: list[dict[str, Any]] = []
        while not enough(events):
            frame = self._frame()
            if frame is None:
                return events, True
            opcode, payload = frame
            if opcode == 0x1:
                events.append(json.loads(payload))
            elif opcode == 0x9:
                # Once it reads, the client answers daphne's pings: without, daphne drops it ~50 s in.
                with contextlib.suppress(OSError):
                    self._send(0xA, payload)
            elif opcode == 0x8:
                self.close_code = struct.unpack("!H", payload[:2])[0] if payload else None
        return events, False

    def _frame(self) -> tuple[int, bytes] | None:
        head = self._exactly(2)
        if head is None:
            return None
        size, start = head[1] & 0x7F, 0
        if size == 126:
            extended = self._exactly(2)
            size = struct.unpack("!H", extended)[0] if extended else -1
        elif size == 127:
            extended = self._exactly(8)
            size = struct.unpack("!Q", extended)[0] if extended else -1
        payload = self._exactly(size) if size >= start else None
        return None if payload is None else (head[0] & 0x0F, payload)

    def _exactly(self, count: int) -> bytes | None:
        while len(self.pending) < count:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not data:
                return None
            self.pending += data
        taken, self.pending = self.pending[:count], self.pending[count:]
        return taken

    def close(self) -> None:
        self.sock.close()


def _replays(events: list[dict[str, Any]], run_id: int) -> list[list[dict[str, Any]]]:
    """The run's events cut into replays, each starting at its ``accepted``."""
    replays: list[list[dict[str, Any]]] = []
    for event in events:
        if event.get("run_id") != run_id:
            continue
        if event["type"] == "accepted":
            replays.append([])
        replays[-1].append(event)
    return replays


def test_attaches_sent_without_reading_are_refused_busy_and_every_replay_arrives_whole(
    server: Server, finished_run: tuple[int, list[dict[str, Any]]]
) -> None:
    run_id, run_events = finished_run
    server.fake.script(Reply(text=screenplay_text(screenplay(scenes=4)), tokens_per_second=2))
    live = server.generate(wait=False)
    client = RawSocket(server)
    try:
        for _ in range(300):
            client.send_json({"type": "attach", "run_id": run_id, "after": 0})
        # Messages are handled in order: once this cancel has ended the live run, every attach before it
        # has been answered, while the client read nothing.
        client.send_json({"type": "cancel", "run_id": live})
        assert server.run_events(live)[-1]["type"] == "cancelled"

        def answered(events: list[dict[str, Any]]) -> bool:
            ends = [e for e in events if e["type"] == "done" or e.get("code") == "busy"]
            return len(ends) == 300

        events, ended = client.read_events(answered)
    finally:
        client.close()
    assert not ended
    refused = [event for event in events if event["type"] == "error"]
    replays = _replays(events, run_id)
    assert len(refused) + len(replays) == 300
    # The replays went out until the client's side was full; the attaches after them were refused.
    assert len(refused) > 200
    assert {event["code"] for event in refused} == {"busy"}
    assert all(event["retryable"] for event in refused)
    assert f"following run {run_id} until its end" in refused[0]["message"]
    # Every replay that was accepted came whole, none cut short by the next attach.
    assert all(replay == run_events for replay in replays)


def test_a_client_that_stops_reading_a_replay_leaves_nothing_behind_for_a_reading_one(
    server: Server, finished_run: tuple[int, list[dict[str, Any]]]
) -> None:
    # A flood of messages no longer fills the server's buffer for it: an unknown field's refusal names
    # five at most (it named all, 40 KB for 1,000 of them), so the 4408 close is tested with the
    # server's unsent count given (test_a_socket_whose_client_has_not_read_the_limit_is_closed).
    run_id, run_events = finished_run
    client = RawSocket(server)
    try:
        client.send_json({"type": "attach", "run_id": run_id, "after": 0})
        first, ended = client.read_events(lambda events: len(events) >= 1)
    finally:
        client.close()
    assert not ended and first[0]["type"] == "accepted"
    reader = RawSocket(server)
    try:
        reader.send_json({"type": "attach", "run_id": run_id, "after": 0})
        replay, _ = reader.read_events(lambda events: bool(events) and events[-1]["type"] == "done")
    finally:
        reader.close()
    assert replay == run_events


@pytest.mark.django_db(transaction=True)
async def test_a_socket_whose_client_has_not_read_the_limit_is_closed(writer: Any, settings: Any) -> None:
    # daphne says how much a connection holds unsent (storyproject.send_buffer); given here.
    settings.STORY_WS_SEND_BUFFER_MAX_BYTES = 4096
    unsent = [0]
    token = await Token.objects.acreate(user=writer)
    communicator = WebsocketCommunicator(
        application,
        GENERATE_WS_PATH,
        headers=[
            (b"host", b"testserver"),
            (b"origin", b"http://testserver"),
            (b"authorization", f"Token {token.key}".encode()),
        ],
    )
    communicator.scope["extensions"] = {UNSENT_BYTES: lambda: unsent[0]}
    try:
        assert (await communicator.connect(timeout=5))[0]
        await communicator.send_json_to({"type": "cancel", "x": 1})
        assert (await communicator.receive_json_from(timeout=5))["code"] == "invalid_request"
        unsent[0] = 4097
        await communicator.send_json_to({"type": "cancel", "x": 1})
        closed = await communicator.receive_output(timeout=5)
        assert closed == {"type": "websocket.close", "code": 4408, "reason": "not_reading"}
        await communicator.send_json_to({"type": "cancel", "x": 1})
        assert await communicator.receive_nothing(timeout=0.2)
    finally:
        await communicator.disconnect()

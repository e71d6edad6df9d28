"""A fake Anthropic Messages API for benchmarks: one asyncio process, hundreds of paced streams at once.

tests/fake_anthropic.py runs a thread per request and polls the socket every 50 ms while it waits;
that is right for scripted faults in tests but not for 200 concurrent streams on two shared cores.
This server speaks the same protocol to the real SDK: ``POST /v1/messages`` with ``Authorization:
Bearer <key>``; with ``"stream": true`` the SSE events (message_start, content_block_start, ping,
content_block_delta text deltas, content_block_stop, message_delta with stop_reason and usage,
message_stop) in chunked transfer encoding, and without it one JSON message sent when the whole text
would have been written, as the old app's blocking call got it.

Pacing: ``--ttft-ms`` before the first text (default 800), then deltas of ``--chunk-chars`` characters
(default 12, about three tokens) at ``--tokens-per-second`` (default 60, four characters a token),
on an absolute schedule so that the model's own time does not drift with the event loop's load.

What the model writes comes from the BENCH[...] tag in the plot (bench/screenplays.py). Every request
is recorded with monotonic times (CLOCK_MONOTONIC, comparable across processes on one machine): when
its body was read, when its first text and the end of its first scene were written, when the stream
ended. ``GET /_bench/records`` returns them as JSON; ``DELETE /_bench/records`` clears them.

Run: ``python -m bench.fake_server --port 0``; it prints ``READY <port>`` once it listens.

It is a load generator, not a model of the API: for the API's rules use tests/fake_anthropic.py. What it
leaves out: thinking blocks (the 5.x models think unless told not to, and their thinking events, which
the app drops, come before the text on the API), structured outputs' key order (bench/screenplays.py
writes the order the app asks for), the prompt cache (both cache counts are 0), the refusals of
request_refusal, and errors other than a wrong path or key (in the API's shape: ``details`` null and
the request id, as tests/fake_anthropic.error_body gives them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from bench.screenplays import marker_parse, screenplay_build, screenplay_text

API_KEY = "sk-ant-bench-fake-key"


@dataclass
class Pacing:
    ttft: float = 0.8
    tokens_per_second: float = 60.0
    chunk_chars: int = 12


@dataclass
class Record:
    id: str
    stream: bool
    received_at: float
    first_token_at: float | None = None
    first_scene_at: float | None = None
    ended_at: float | None = None
    output_tokens: int = 0
    disconnected: bool = False


class FakeServer:
    def __init__(self, pacing: Pacing):
        self.pacing = pacing
        self.records: list[Record] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                method, path, headers = _head_parse(head)
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if not await self._route(method, path, headers, body, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def _route(
        self, method: str, path: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the connection must close."""
        path = path.split("?", 1)[0]
        if path == "/_bench/records":
            if method == "DELETE":
                self.records.clear()
            payload = json.dumps([asdict(r) for r in self.records]).encode()
            await _respond(writer, 200, payload)
            return True
        if method != "POST" or path != "/v1/messages":
            await _respond(writer, 404, _error_body("not_found_error", "no such path"))
            return True
        if headers.get("authorization") != f"Bearer {API_KEY}":
            await _respond(writer, 401, _error_body("authentication_error", "invalid x-api-key"))
            return True
        request = json.loads(body)
        received_at = time.monotonic()
        raw = body.decode("utf-8", "replace")
        tag = marker_parse(raw)
        run_id, personas, scenes, lines = tag or ("untagged", [], 1, 2)
        text, first_scene_end = screenplay_text(
            screenplay_build(personas=personas, scenes=scenes, lines=lines)
        )
        record = Record(id=run_id, stream=bool(request.get("stream")), received_at=received_at)
        record.output_tokens = max(len(text) // 4, 1)
        self.records.append(record)
        usage = {
            "input_tokens": max(len(raw) // 4, 1),
            "output_tokens": record.output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        try:
            if record.stream:
                await self._stream(writer, request, record, text, first_scene_end, usage)
            else:
                await self._whole(writer, request, record, text, usage)
        except ConnectionError:
            record.disconnected = True
            return False
        record.ended_at = time.monotonic()
        return True

    async def _whole(
        self,
        writer: asyncio.StreamWriter,
        request: dict[str, Any],
        record: Record,
        text: str,
        usage: dict[str, int],
    ) -> None:
        pacing = self.pacing
        await asyncio.sleep(pacing.ttft + record.output_tokens / pacing.tokens_per_second)
        message = _message(request, usage) | {
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
        }
        await _respond(writer, 200, json.dumps(message).encode())

    async def _stream(
        self,
        writer: asyncio.StreamWriter,
        request: dict[str, Any],
        record: Record,
        text: str,
        first_scene_end: int,
        usage: dict[str, int],
    ) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"transfer-encoding: chunked\r\nrequest-id: req_bench\r\n\r\n"
        )
        start = _message(request, {**usage, "output_tokens": 1})
        _event(writer, "message_start", {"type": "message_start", "message": start})
        _event(
            writer,
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        )
        _event(writer, "ping", {"type": "ping"})
        await writer.drain()
        pacing = self.pacing
        size = max(pacing.chunk_chars, 1)
        pause = size / 4 / pacing.tokens_per_second
        first_at = record.received_at + pacing.ttft
        for index, offset in enumerate(range(0, len(text), size)):
            # An absolute schedule: a late wake-up does not push every later delta back.
            delay = first_at + index * pause - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            piece = text[offset : offset + size]
            _event(
                writer,
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
            )
            await writer.drain()
            now = time.monotonic()
            if record.first_token_at is None:
                record.first_token_at = now
            if record.first_scene_at is None and offset + size >= first_scene_end:
                record.first_scene_at = now
        _event(writer, "content_block_stop", {"type": "content_block_stop", "index": 0})
        _event(
            writer,
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": usage,
            },
        )
        _event(writer, "message_stop", {"type": "message_stop"})
        writer.write(b"0\r\n\r\n")
        await writer.drain()


def _head_parse(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    method, path, _version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return method, path, headers


def _message(request: dict[str, Any], usage: dict[str, int]) -> dict[str, Any]:
    return {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": request.get("model", ""),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }


def _event(writer: asyncio.StreamWriter, name: str, data: dict[str, Any]) -> None:
    payload = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
    writer.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")


def _error_body(kind: str, message: str) -> bytes:
    error = {"details": None, "type": kind, "message": message}
    return json.dumps({"type": "error", "error": error, "request_id": "req_bench"}).encode()


async def _respond(writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
    reason = {200: "OK", 401: "Unauthorized", 404: "Not Found"}.get(status, "Error")
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nrequest-id: req_bench\r\n\r\n".encode()
        + body
    )
    await writer.drain()


async def _serve(port: int, pacing: Pacing) -> None:
    fake = FakeServer(pacing)
    server = await asyncio.start_server(fake.handle, "127.0.0.1", port, backlog=1024)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ttft-ms", type=float, default=800.0)
    parser.add_argument("--tokens-per-second", type=float, default=60.0)
    parser.add_argument("--chunk-chars", type=int, default=12)
    args = parser.parse_args()
    pacing = Pacing(
        ttft=args.ttft_ms / 1000, tokens_per_second=args.tokens_per_second, chunk_chars=args.chunk_chars
    )
    asyncio.run(_serve(args.port, pacing))


if __name__ == "__main__":
    main()

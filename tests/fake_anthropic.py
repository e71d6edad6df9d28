"""A fake Anthropic Messages API on 127.0.0.1 that speaks the real protocol, for tests and benchmarks.

The real SDK talks to it over HTTP: ``POST /v1/messages`` with ``Authorization: Bearer <key>``, answered
with Server-Sent Events in chunked transfer encoding (message_start, content_block_start, ping,
content_block_delta with text_delta, content_block_stop, message_delta with stop_reason and usage
including cache tokens, message_stop), or with an error body ``{"type": "error", "error": {...}}`` and
its status and ``retry-after``/``retry-after-ms`` headers. A scripted reply can also send an ``error``
event mid-stream, stall, or drop the connection. Every request is recorded with its body, and the server
notes when a client goes away before the reply ends.

Two optional behaviours serve the parallel mode's tests and benchmark: the server counts the requests in
flight at once (``max_active``, and ``active_at_arrival`` on each request), and with
``prompt_cache=True`` it answers like Anthropic's prompt cache: a prefix ending at a block marked
``cache_control`` is written to the cache (``cache_creation_input_tokens``) the first time, becomes
readable once that reply has started streaming, and is read (``cache_read_input_tokens``) by every later
request that repeats it. A Reply's explicit cache counts still win over the simulation.

Usage::

    server = FakeAnthropic()
    server.script(Reply(status=529), Reply(text='{"title": ...}'))
    ...  # point ANTHROPIC_BASE_URL / the settings at server.base_url, key server.api_key
    server.requests[0].body["system"]
    server.close()
"""

from __future__ import annotations

import hashlib
import json
import re
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer to one request."""

    text: str = ""
    status: int = 200
    error_type: str = ""
    error_message: str = ""
    # An error's ``error.details.error_code`` (e.g. "enforced_spend_limit_reached"), and its
    # ``x-should-retry`` header: None sends what the API sends for the status (see error_headers).
    error_code: str = ""
    should_retry: bool | None = None
    # Thinking sent before the text when the request asks for it (or the model thinks by default).
    thinking_text: str = "The detective should enter first; the liar second."
    headers: dict[str, str] = field(default_factory=dict)
    stop_reason: str = "end_turn"
    refusal_explanation: str | None = None
    # Usage: None means an estimate from the request and the text (four characters a token).
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    # Pacing: seconds before the first text, and text deltas of chunk_chars at tokens_per_second.
    ttft: float = 0.0
    tokens_per_second: float | None = None
    chunk_chars: int = 24
    # Faults, counted in text deltas sent: an `error` event, a dropped connection, a stall.
    error_event_after: int | None = None
    error_event_type: str = "overloaded_error"
    drop_after: int | None = None
    stall_after: int | None = None
    stall_seconds: float = 30.0


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    received_at: float
    finished_at: float | None = None
    disconnected_at: float | None = None
    # Requests in flight when this one arrived, itself included.
    active_at_arrival: int = 0
    released: bool = False

    @property
    def disconnected(self) -> bool:
        return self.disconnected_at is not None


class _ClientGone(Exception):
    pass


class FakeAnthropic:
    def __init__(
        self,
        *,
        api_key: str = "sk-ant-fake-test-key",
        default: Callable[[dict[str, Any]], Reply] | None = None,
        prompt_cache: bool = False,
        cache_min_tokens: int = 0,
        port: int = 0,
    ):
        self.api_key = api_key
        self.default = default
        self.prompt_cache = prompt_cache
        # Anthropic caches no prefix shorter than a model-dependent minimum (1,024 tokens for Sonnet).
        self.cache_min_tokens = cache_min_tokens
        self.cached_prefixes: set[str] = set()
        self.active = 0
        self.max_active = 0
        self.replies: deque[Reply] = deque()
        self.request_count = 0
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-anthropic", daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self.replies.extend(replies)

    def wait_for_disconnect(self, request: RecordedRequest, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if request.disconnected:
                return True
            time.sleep(0.01)
        return request.disconnected

    def close(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _release(self, record: RecordedRequest) -> None:
        with self._lock:
            if not record.released:
                record.released = True
                self.active -= 1

    def _cache_usage(self, body: dict[str, Any]) -> tuple[int, int, list[str]]:
        """(cache read tokens, cache write tokens, prefixes to store) for a request's breakpoints."""
        breakpoints = prompt_cache_breakpoints(body)
        eligible = [(key, tokens) for key, tokens in breakpoints if tokens >= self.cache_min_tokens]
        if not eligible:
            return 0, 0, []
        with self._lock:
            hits = [tokens for key, tokens in eligible if key in self.cached_prefixes]
        read = max(hits, default=0)
        longest = eligible[-1][1]
        return read, max(longest - read, 0), [key for key, _ in eligible]

    def _cache_store(self, keys: list[str]) -> None:
        with self._lock:
            self.cached_prefixes.update(keys)

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            if self.replies:
                return self.replies.popleft()
        if self.default is not None:
            return self.default(body)
        return Reply(status=500, error_type="api_error", error_message="fake server: no reply scripted")


def _handler_for(fake: FakeAnthropic) -> type[BaseHTTPRequestHandler]:
    class Handler(_MessagesHandler):
        server_state = fake

    return Handler


class _MessagesHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: FakeAnthropic

    def log_message(self, format: str, *args: Any) -> None:
        # Quiet: pytest shows failures, not every request.
        pass

    def do_POST(self) -> None:
        fake = self.server_state
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        if self.path.split("?")[0] != "/v1/messages":
            self._error(Reply(status=404, error_type="not_found_error", error_message="no such path"))
            return
        if self.headers.get("authorization") != f"Bearer {fake.api_key}":
            self._error(
                Reply(status=401, error_type="authentication_error", error_message="invalid x-api-key")
            )
            return
        with fake._lock:
            fake.request_count += 1
            self.request_id = f"req_fake_{fake.request_count:06d}"
        record = RecordedRequest(
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=json.loads(raw),
            received_at=time.monotonic(),
        )
        with fake._lock:
            fake.requests.append(record)
            fake.active += 1
            fake.max_active = max(fake.max_active, fake.active)
            record.active_at_arrival = fake.active
        try:
            reply = fake._next_reply(record.body)
            if reply.status != 200:
                self._error(reply)
            else:
                self._stream(reply, record)
            record.finished_at = time.monotonic()
        except (_ClientGone, BrokenPipeError, ConnectionResetError):
            record.disconnected_at = time.monotonic()
            self.close_connection = True
        finally:
            fake._release(record)

    def _error(self, reply: Reply) -> None:
        request_id = getattr(self, "request_id", "req_fake_unrecorded")
        body = json.dumps(error_body(reply, request_id)).encode()
        self.send_response(reply.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        for name, value in {**error_headers(reply, request_id), **reply.headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, reply: Reply, record: RecordedRequest) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("request-id", self.request_id)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        input_tokens = (
            reply.input_tokens
            if reply.input_tokens is not None
            else max(len(json.dumps(record.body)) // 4, 1)
        )
        output_tokens = (
            reply.output_tokens if reply.output_tokens is not None else max(len(reply.text) // 4, 1)
        )
        thinking = reply.thinking_text if thinking_requested(record.body) else ""
        if reply.output_tokens is None:
            # Like the API: thinking tokens are output tokens.
            output_tokens += len(thinking) // 4
        new_prefixes: list[str] = []
        cache_read, cache_write = reply.cache_read_tokens, reply.cache_write_tokens
        if self.server_state.prompt_cache and not (cache_read or cache_write):
            cache_read, cache_write, new_prefixes = self.server_state._cache_usage(record.body)
            if reply.input_tokens is None:
                # Like the real API: input_tokens counts only what came after the last cache breakpoint.
                input_tokens = max(input_tokens - cache_read - cache_write, 1)
        usage = {
            "input_tokens": input_tokens,
            "output_tokens": 1,
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cache_read,
        }
        message = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": record.body.get("model", ""),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        self._event("message_start", {"type": "message_start", "message": message})
        text_index = self._thinking_block(thinking)
        self._event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": text_index,
                "content_block": {"type": "text", "text": ""},
            },
        )
        self._event("ping", {"type": "ping"})
        self._wait(reply.ttft)
        # A prefix written to the cache is readable once its reply has begun.
        self.server_state._cache_store(new_prefixes)
        if not self._deltas(reply, text_index):
            self._end_chunks()
            return
        self._event("content_block_stop", {"type": "content_block_stop", "index": text_index})
        delta: dict[str, Any] = {"stop_reason": reply.stop_reason, "stop_sequence": None}
        if reply.stop_reason == "refusal":
            delta["stop_details"] = {
                "type": "refusal",
                "category": None,
                "explanation": reply.refusal_explanation,
            }
        final_usage = {
            "output_tokens": output_tokens,
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cache_read,
        }
        self._event("message_delta", {"type": "message_delta", "delta": delta, "usage": final_usage})
        # No longer in flight once the client has all it needs (before it can send its next request).
        self.server_state._release(record)
        self._event("message_stop", {"type": "message_stop"})
        self._end_chunks()

    def _thinking_block(self, thinking: str) -> int:
        """A thinking block at index 0, as the API streams one (RawContentBlockStartEvent with a
        ThinkingBlock, then ThinkingDelta and SignatureDelta events, anthropic 2.14 types/); returns
        the index of the text block that follows."""
        if not thinking:
            return 0
        start = {"type": "thinking", "thinking": "", "signature": ""}
        self._event(
            "content_block_start", {"type": "content_block_start", "index": 0, "content_block": start}
        )
        for piece in (thinking[: len(thinking) // 2], thinking[len(thinking) // 2 :]):
            delta = {"type": "thinking_delta", "thinking": piece}
            self._event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        signature = {"type": "signature_delta", "signature": "fake-signature-" + "0" * 16}
        self._event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": signature})
        self._event("content_block_stop", {"type": "content_block_stop", "index": 0})
        return 1

    def _deltas(self, reply: Reply, index: int = 0) -> bool:
        """Send the text; False when a scripted fault ended the stream early."""
        size = max(reply.chunk_chars, 1)
        pieces = [reply.text[i : i + size] for i in range(0, len(reply.text), size)]
        pause = size / 4 / reply.tokens_per_second if reply.tokens_per_second else 0.0
        # An absolute schedule: a late delta (a busy machine) does not push every later one back.
        started = time.monotonic()
        for sent, piece in enumerate(pieces):
            if reply.error_event_after == sent:
                error = {
                    "type": "error",
                    "error": {"type": reply.error_event_type, "message": "fault injected"},
                }
                self._event("error", error)
                return False
            if reply.drop_after == sent:
                # Gone without the terminating chunk: the client sees an incomplete body.
                self.connection.shutdown(socket.SHUT_RDWR)
                raise _ClientGone
            if reply.stall_after == sent:
                self._wait(reply.stall_seconds)
                started += reply.stall_seconds
            self._event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": piece},
                },
            )
            if pause:
                self._wait(started + (sent + 1) * pause - time.monotonic())
        return True

    def _event(self, name: str, data: dict[str, Any]) -> None:
        payload = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
        self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
        self.wfile.flush()

    def _end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _wait(self, seconds: float) -> None:
        """Sleep, noticing at once when the client closes the connection."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if self.server_state._stopping.is_set():
                raise _ClientGone
            readable, _, _ = select.select([self.connection], [], [], min(remaining, 0.05))
            if readable and self.connection.recv(1, socket.MSG_PEEK) == b"":
                raise _ClientGone


def error_body(reply: Reply, request_id: str) -> dict[str, Any]:
    """The API's error body (the SDK's types/shared/error_response.py: ErrorResponse), with
    ``error.details.error_code`` where the reply names one (read as APIStatusError.error_code)."""
    error: dict[str, Any] = {
        "type": reply.error_type or "api_error",
        "message": reply.error_message or "error",
    }
    if reply.error_code:
        error["details"] = {"error_code": reply.error_code}
    return {"type": "error", "error": error, "request_id": request_id}


# Statuses the SDK itself retries (_base_client.py, _should_retry), and so the API marks retryable.
_RETRYABLE_STATUSES = frozenset({408, 409, 429})


def error_headers(reply: Reply, request_id: str) -> dict[str, str]:
    """``request-id``, ``x-should-retry`` (which the SDK's _should_retry obeys before the status) and,
    on a 429, ``retry-after`` and the ``anthropic-ratelimit-*`` headers of the rate-limits docs."""
    retry = reply.should_retry
    if retry is None:
        retry = reply.status in _RETRYABLE_STATUSES or reply.status >= 500
    headers = {"request-id": request_id, "x-should-retry": "true" if retry else "false"}
    if reply.status == 429:
        headers.update(
            {
                "retry-after": "1",
                "anthropic-ratelimit-requests-limit": "50",
                "anthropic-ratelimit-requests-remaining": "0",
                "anthropic-ratelimit-requests-reset": "2026-11-26T00:00:01Z",
                "anthropic-ratelimit-input-tokens-limit": "30000",
                "anthropic-ratelimit-input-tokens-remaining": "0",
                "anthropic-ratelimit-input-tokens-reset": "2026-11-26T00:00:01Z",
                "anthropic-ratelimit-output-tokens-limit": "8000",
                "anthropic-ratelimit-output-tokens-remaining": "8000",
                "anthropic-ratelimit-output-tokens-reset": "2026-11-26T00:00:01Z",
            }
        )
    return headers


def thinking_requested(body: dict[str, Any]) -> bool:
    """Whether the model would think: asked to, or, asked nothing, a model that thinks by default."""
    from stories.generation.models_registry import model_get

    thinking = body.get("thinking")
    if isinstance(thinking, dict):
        return thinking.get("type") in ("enabled", "adaptive")
    model = model_get(str(body.get("model", "")))
    return model is not None and model.thinks_by_default


def prompt_cache_breakpoints(body: dict[str, Any]) -> list[tuple[str, int]]:
    """Each prefix that ends at a block marked cache_control: (a key for it, its tokens), shortest first.

    The order is the API's: tools, then system, then messages; the model is part of every key.
    """
    blocks: list[tuple[str, bool]] = []
    for tool in body.get("tools") or []:
        blocks.append((json.dumps(tool, sort_keys=True), "cache_control" in tool))
    system = body.get("system") or []
    for block in [{"type": "text", "text": system}] if isinstance(system, str) else system:
        blocks.append(_block_text(block))
    for message in body.get("messages") or []:
        content = message.get("content")
        items = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for block in items:
            text, marked = _block_text(block)
            blocks.append((f"{message.get('role')}:{text}", marked))
    result: list[tuple[str, int]] = []
    prefix = str(body.get("model", ""))
    chars = 0
    for text, marked in blocks:
        prefix += "\x00" + text
        chars += len(text)
        if marked:
            result.append((hashlib.sha256(prefix.encode()).hexdigest(), max(chars // 4, 1)))
    return result


def _block_text(block: dict[str, Any]) -> tuple[str, bool]:
    plain = {key: value for key, value in block.items() if key != "cache_control"}
    return json.dumps(plain, sort_keys=True), "cache_control" in block


def screenplay_text(screenplay: dict[str, Any], *, fenced: bool = False) -> str:
    text = json.dumps(screenplay, indent=1)
    return f"```json\n{text}\n```" if fenced else text


def screenplay_reply_for(
    body: dict[str, Any], *, ttft: float = 0.0, tokens_per_second: float | None = None
) -> Reply:
    """A plausible reply to the app's own prompt: the offline model's screenplay for its plot and personas,
    cut at max_tokens like a real model, and only the remaining scenes for a continuation."""
    from html import unescape

    from stories.generation.backends.base import Brief, CastMember
    from stories.generation.backends.offline import offline_screenplay

    system = "".join(block.get("text", "") for block in body.get("system", []) if isinstance(block, dict))
    first = body["messages"][0]["content"]
    plot = re.search(r"<plot>\n(.*?)\n</plot>", first, re.S)
    title = re.search(r"<title>(.*?)</title>", first, re.S)
    cast = tuple(
        CastMember(name=unescape(name), display_name=unescape(display), context=unescape(context))
        for name, display, context in re.findall(
            r'<persona name="([^"]*)" display_name="([^"]*)">\n(.*?)\n</persona>', system, re.S
        )
    )
    brief = Brief(
        plot=unescape(plot.group(1)) if plot else "",
        title=unescape(title.group(1)) if title else "",
        cast=cast,
    )
    document: dict[str, Any] = offline_screenplay(brief)
    if len(body["messages"]) > 1:
        done = re.search(r"after scene (\d+)", body["messages"][-1]["content"])
        document = {"scenes": document["scenes"][int(done.group(1)) if done else 0 :]}
    text = json.dumps(document, indent=1)
    limit = int(body.get("max_tokens", 4096)) * 4
    return Reply(
        text=text[:limit],
        stop_reason="max_tokens" if len(text) > limit else "end_turn",
        ttft=ttft,
        tokens_per_second=tokens_per_second,
    )


def main() -> None:
    """Serve until interrupted: ``python -m tests.fake_anthropic --port 8765`` (see docs/generation.md)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--key", default="sk-ant-fake-local")
    parser.add_argument("--ttft", type=float, default=0.6, help="seconds before the first token")
    parser.add_argument("--tokens-per-second", type=float, default=80.0)
    args = parser.parse_args()
    server = FakeAnthropic(
        api_key=args.key,
        port=args.port,
        default=lambda body: screenplay_reply_for(
            body, ttft=args.ttft, tokens_per_second=args.tokens_per_second
        ),
    )
    print(f"fake Anthropic API on {server.base_url} (key {args.key}); Ctrl-C stops it", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.close()


if __name__ == "__main__":
    main()

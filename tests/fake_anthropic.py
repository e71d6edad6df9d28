"""A fake Anthropic Messages API on 127.0.0.1 that speaks the real protocol, for tests and benchmarks.

The real SDK talks to it over HTTP: ``POST /v1/messages`` with ``Authorization: Bearer <key>``, answered
with Server-Sent Events in chunked transfer encoding (message_start, content_block_start, ping,
content_block_delta with text_delta, content_block_stop, message_delta with stop_reason and usage
including cache tokens, message_stop; thinking, signature_delta and, if scripted, redacted_thinking
blocks before the text), or with an error body ``{"type": "error", "error": {...}}`` and
its status and ``retry-after``/``retry-after-ms`` headers, or with an HTML page instead of that body (what
Cloudflare answers a request too large with, or a proxy a 5xx). A scripted reply can also send an ``error``
event mid-stream, stall, or drop the connection. Every request is recorded with its body, and the server
notes when a client goes away before the reply ends.

Like the API, it refuses before any reply what the API refuses (``request_refusal``): a model it does
not know (404), a thinking type the model rejects, a thinking budget not under max_tokens, max_tokens
over the model's limit, and on the 5.x models an assistant prefill or a non-default sampling parameter
(400s), from its own table of the API's models (``API_MODELS``, with its sources), not the app's registry;
and whatever the model, a request that thinks with its sampling changed or whose last assistant turn does
not begin with its thinking, a turn with empty or blank content, and a thinking block not passed back
exactly as it was sent (its signature, ``thinking_signature``).

Like the API, it honours ``output_config`` (structured outputs): a request whose JSON schema uses what
structured outputs reject gets a 400, and a JSON reply is sent with its keys in the order the model
writes them, required properties first (in schema order), then optional ones. Token counts come from
the text (``token_count``), and a Reply with ``cut_at_max_tokens`` stops at the request's max_tokens.

Two optional behaviours serve the parallel mode's tests and benchmark: the server counts the requests in
flight at once (``max_active``, and ``active_at_arrival`` on each request), and with
``prompt_cache=True`` it answers like Anthropic's prompt cache (``prompt_cache_breakpoints``): a prefix
ending at a block marked ``cache_control``, at least the model's minimum long, is written to the cache
(``cache_creation_input_tokens``) the first time, becomes readable once that reply has started
streaming, and is read (``cache_read_input_tokens``) for five minutes after its last use by every
request that repeats it, output format included. A Reply's explicit cache counts still win.

Usage::

    server = FakeAnthropic()
    server.script(Reply(status=529), Reply(text='{"title": ...}'))
    ...  # point ANTHROPIC_BASE_URL / the settings at server.base_url, key server.api_key
    server.requests[0].body["system"]
    server.close()
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
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
    # An error body that is not the API's JSON (a proxy's or Cloudflare's HTML page), sent as text/html
    # with no request-id: what a client gets when something in front of the API answers instead.
    error_html: str | None = None
    # Thinking sent before the text when the request asks for it (or the model thinks by default).
    thinking_text: str = "The detective should enter first; the liar second."
    # A redacted_thinking block after the thinking one, as the API sends when part of the thinking was
    # safety-redacted: its encrypted ``data`` whole in content_block_start, no delta (anthropic 2.14
    # types/redacted_thinking_block.py; lib/streaming/_messages.py appends the start's block as it is).
    redacted_thinking: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    stop_reason: str = "end_turn"
    refusal_explanation: str | None = None
    # Usage: None means a count from the request and the text (token_count).
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
    # Where that error event comes: "text" (after error_event_after text deltas), "start" (right after
    # message_start, before any block) or "thinking" (inside the thinking block, before its deltas).
    # The API may send one at any point of the stream ("We may occasionally send errors in the event
    # stream", build-with-claude/streaming, "Error events", as quoted in kharvd/gpt-cli issue 71).
    error_event_at: str = "text"
    drop_after: int | None = None
    stall_after: int | None = None
    stall_seconds: float = 30.0
    # Stop at the request's max_tokens (stop_reason "max_tokens") when the text is longer, like a model.
    cut_at_max_tokens: bool = False
    # How the events go on the wire (what an SSE decoder must read whatever the framing): the line end
    # ("\n", "\r\n" or "\r"), each event written in three parts (split inside its lines), the whole
    # reply in one part, the data spread over several ``data:`` lines, and a comment and an event of a
    # type the app does not know before the text.
    sse_newline: str = "\n"
    sse_split: bool = False
    sse_one_part: bool = False
    sse_multiline_data: bool = False
    sse_unknown_event: bool = False


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


class _ErrorSent(Exception):
    """A scripted ``error`` event ended the stream before its text."""


class FakeAnthropic:
    def __init__(
        self,
        *,
        api_key: str = "sk-ant-fake-test-key",
        default: Callable[[dict[str, Any]], Reply] | None = None,
        prompt_cache: bool = False,
        cache_min_tokens: int | None = None,
        port: int = 0,
    ):
        self.api_key = api_key
        self.default = default
        self.prompt_cache = prompt_cache
        # Anthropic caches no prefix shorter than a model-dependent minimum; None: the model's own.
        self.cache_min_tokens = cache_min_tokens
        # Cached prefix key -> when it expires (clock()); a hit pushes it back by cache_ttl_seconds.
        self.cache_entries: dict[str, float] = {}
        self.cache_ttl_seconds = 300.0
        self.clock: Callable[[], float] = time.monotonic
        # Until when (time.monotonic()) the account is rate limited: a 429 rate_limit_error with a
        # retry-after starts a wait, and every request that comes before it ends is answered with a 429
        # too, without a scripted reply being used. "retry-after: The number of seconds to wait until you
        # can retry the request. Earlier retries will fail." (platform.claude.com/docs/en/api/rate-limits,
        # "Response headers"); the limit is the organization's, so it holds for every request.
        self.rate_limited_until = 0.0
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
        return f"http://127.0.0.1:{self._server.server_port}"

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
        """(cache read tokens, cache write tokens, prefixes to store) for a request's breakpoints.

        The longest live prefix is read (and its lifetime renewed); what the last breakpoint adds on top
        is written. Prefixes under the minimum are neither: the API silently does not cache them.
        """
        minimum = self.cache_min_tokens
        if minimum is None:
            known = API_MODELS.get(str(body.get("model", "")))
            minimum = known.min_cache_tokens if known is not None else _UNKNOWN_MIN_CACHE_TOKENS
        eligible = [(key, tokens) for key, tokens in prompt_cache_breakpoints(body) if tokens >= minimum]
        if not eligible:
            return 0, 0, []
        now = self.clock()
        with self._lock:
            hits = [(key, tokens) for key, tokens in eligible if self.cache_entries.get(key, 0.0) > now]
            for key, _ in hits:
                self.cache_entries[key] = now + self.cache_ttl_seconds
        read = max((tokens for _, tokens in hits), default=0)
        return read, max(eligible[-1][1] - read, 0), [key for key, _ in eligible]

    def _cache_store(self, keys: list[str]) -> None:
        expires = self.clock() + self.cache_ttl_seconds
        with self._lock:
            for key in keys:
                self.cache_entries[key] = max(self.cache_entries.get(key, 0.0), expires)

    def _rate_limit_start(self, reply: Reply, headers: dict[str, str]) -> None:
        """Start the wait a rate-limit 429 announces, read as the SDK reads it: ``retry-after-ms``,
        else ``retry-after`` in seconds (anthropic 2.14 _base_client.py, ``_parse_retry_after_header``)."""
        if reply.status != 429 or reply.error_code in _SPEND_LIMIT_CODES:
            return
        seconds = _header_seconds(headers)
        if seconds is not None and seconds > 0:
            with self._lock:
                self.rate_limited_until = max(self.rate_limited_until, time.monotonic() + seconds)

    def _rate_limit_left(self) -> float:
        """Seconds left of the current rate-limit wait; 0 when requests are taken."""
        with self._lock:
            return max(self.rate_limited_until - time.monotonic(), 0.0)

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
            refusal = request_refusal(record.body)
            waiting = fake._rate_limit_left()
            if refusal:
                reply = Reply(status=refusal[0], error_type=refusal[1], error_message=refusal[2])
            elif waiting:
                # Asked again before the retry-after of a 429 had passed: refused again, with what is left.
                reply = Reply(
                    status=429,
                    error_type="rate_limit_error",
                    error_message="This request would exceed your organization's rate limit. Please wait.",
                    headers={"retry-after": str(math.ceil(waiting))},
                )
            else:
                reply = reply_shaped(fake._next_reply(record.body), record.body)
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
        if reply.error_html is not None:
            self._error_html(reply)
            return
        request_id = getattr(self, "request_id", "req_fake_unrecorded")
        body = json.dumps(error_body(reply, request_id)).encode()
        headers = {**error_headers(reply, request_id), **reply.headers}
        # The wait starts as the answer leaves, so a client that waits what it says is never early.
        self.server_state._rate_limit_start(reply, headers)
        self.send_response(reply.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _error_html(self, reply: Reply) -> None:
        body = reply.error_html.encode() if reply.error_html is not None else b""
        self.send_response(reply.status)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, reply: Reply, record: RecordedRequest) -> None:
        self.wire, self.held = reply, b""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("request-id", self.request_id)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        input_tokens = reply.input_tokens if reply.input_tokens is not None else prompt_tokens(record.body)
        thinking = reply.thinking_text if thinking_requested(record.body) else ""
        # Like the API: thinking tokens are output tokens.
        output_tokens = (
            reply.output_tokens
            if reply.output_tokens is not None
            else max(token_count(reply.text) + token_count(thinking), 1)
        )
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
            # The write by TTL (anthropic 2.14 types/usage.py, Usage.cache_creation: CacheCreation):
            # every breakpoint here is a plain "ephemeral", the five-minute one.
            "cache_creation": {"ephemeral_5m_input_tokens": cache_write, "ephemeral_1h_input_tokens": 0},
            "service_tier": "standard",
        }
        message = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": record.body.get("model", ""),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # Sent as null unless a refusal has details (anthropic 2.14 types/message.py and
            # types/raw_message_delta_event.py: stop_details "is `null` when the `stop_reason` has no
            # additional detail to report").
            "stop_details": None,
            "usage": usage,
        }
        self._event("message_start", {"type": "message_start", "message": message})
        try:
            self._error_event_at(reply, "start")
            text_index = self._thinking_block(
                thinking, shown=thinking_shown(record.body), model=str(record.body.get("model", ""))
            )
        except _ErrorSent:
            self._end_chunks()
            return
        if thinking and reply.redacted_thinking is not None:
            text_index = self._redacted_thinking_block(reply.redacted_thinking, text_index)
        # Cut at max_tokens while thinking (reply_shaped): the model never began a text block.
        text_block = bool(reply.text) or reply.stop_reason != "max_tokens" or not thinking
        if text_block:
            self._event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": text_index,
                    "content_block": {"type": "text", "text": ""},
                },
            )
        self._event("ping", {"type": "ping"})
        if reply.sse_unknown_event:
            self._event("content_block_note", {"type": "content_block_note", "index": text_index})
        self._wait(reply.ttft)
        # A prefix written to the cache is readable once its reply has begun.
        self.server_state._cache_store(new_prefixes)
        if not self._deltas(reply, text_index):
            self._end_chunks()
            return
        if text_block:
            self._event("content_block_stop", {"type": "content_block_stop", "index": text_index})
        delta: dict[str, Any] = {
            "stop_reason": reply.stop_reason,
            "stop_sequence": None,
            "stop_details": None,
        }
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

    def _thinking_block(self, thinking: str, *, shown: bool = True, model: str = "") -> int:
        """A thinking block at index 0, as the API streams one (RawContentBlockStartEvent with a
        ThinkingBlock, then ThinkingDelta and SignatureDelta events, anthropic 2.14 types/); returns
        the index of the text block that follows. Not ``shown`` (display "omitted"), the block has no
        thinking_delta: its thinking stays empty, its tokens are still output (billed)."""
        if not thinking:
            return 0
        start = {"type": "thinking", "thinking": "", "signature": ""}
        self._event(
            "content_block_start", {"type": "content_block_start", "index": 0, "content_block": start}
        )
        self._error_event_at(self.wire, "thinking")
        halves = (thinking[: len(thinking) // 2], thinking[len(thinking) // 2 :]) if shown else ()
        for piece in halves:
            delta = {"type": "thinking_delta", "thinking": piece}
            self._event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        # Signed over what the block carries (no text when not shown), so that it comes back valid.
        signature = {
            "type": "signature_delta",
            "signature": thinking_signature(model, "".join(halves)),
        }
        self._event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": signature})
        self._event("content_block_stop", {"type": "content_block_stop", "index": 0})
        return 1

    def _error_event_at(self, reply: Reply, where: str) -> None:
        """Send the reply's error event here if it is scripted for ``where``; raise _ErrorSent then."""
        if reply.error_event_after is not None and reply.error_event_at == where:
            self._event(
                "error", error_body(dataclasses.replace(reply, error_type=reply.error_event_type), None)
            )
            raise _ErrorSent

    def _redacted_thinking_block(self, data: str, index: int) -> int:
        """A redacted_thinking block at ``index``: start (with its data) and stop; the next index."""
        start = {"type": "redacted_thinking", "data": data}
        self._event(
            "content_block_start", {"type": "content_block_start", "index": index, "content_block": start}
        )
        self._event("content_block_stop", {"type": "content_block_stop", "index": index})
        return index + 1

    def _deltas(self, reply: Reply, index: int = 0) -> bool:
        """Send the text; False when a scripted fault ended the stream early."""
        size = max(reply.chunk_chars, 1)
        pieces = [reply.text[i : i + size] for i in range(0, len(reply.text), size)]
        pause = size / 4 / reply.tokens_per_second if reply.tokens_per_second else 0.0
        # An absolute schedule: a late delta (a busy machine) does not push every later one back.
        started = time.monotonic()
        for sent, piece in enumerate(pieces):
            if reply.error_event_after == sent and reply.error_event_at == "text":
                # The event's data is an error body without request_id (the response's request-id
                # header names the request): error_body's sources.
                error = error_body(dataclasses.replace(reply, error_type=reply.error_event_type), None)
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
        wire: Reply | None = getattr(self, "wire", None)
        if wire is None:
            self._part(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
            return
        end = wire.sse_newline
        lines = [f"event: {name}"]
        if wire.sse_unknown_event:
            lines.insert(0, ": a comment, which a client ignores")
        data_text = json.dumps(data, indent=1) if wire.sse_multiline_data else json.dumps(data)
        lines += [f"data: {line}" for line in data_text.split("\n")]
        payload = (end.join(lines) + end + end).encode()
        if wire.sse_one_part:
            self.held += payload
        elif wire.sse_split:
            third = max(len(payload) // 3, 1)
            for start in range(0, len(payload), third):
                self._part(payload[start : start + third])
        else:
            self._part(payload)

    def _part(self, payload: bytes) -> None:
        """One part of the chunked body, sent at once."""
        self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
        self.wfile.flush()

    def _end_chunks(self) -> None:
        if getattr(self, "held", b""):
            self._part(self.held)
            self.held = b""
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


# Each status's error.type where a reply names none (platform.claude.com/docs/en/api/errors, "HTTP
# errors"): a 529 is an overloaded_error, a 429 a rate_limit_error, never the 500's api_error; a 409 a
# conflict_error and a 504 a timeout_error (anthropic 2.14 types/shared/error_type.py, ErrorType, and
# types/shared/gateway_timeout_error_object.py: ``type: Literal["timeout_error"]``).
_STATUS_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


# What the API says where a reply gives no message: "Overloaded" for an overloaded_error (the bodies
# quoted below), "Internal server error" for an api_error (gptme/gptme pull request 745's log).
_DEFAULT_MESSAGES = {"overloaded_error": "Overloaded", "api_error": "Internal server error"}


def error_body(reply: Reply, request_id: str | None) -> dict[str, Any]:
    """The API's error body (the SDK's anthropic.types.shared.error_response.ErrorResponse), with
    ``error.details.error_code`` where the reply names one (read as APIStatusError.error_code).

    As the API writes it: ``details`` is null when there is no code, and comes first, in an HTTP
    error ({"type":"error","error":{"details":null,"type":"overloaded_error","message":"Overloaded"},
    "request_id":"req_..."}, gotgenes/pi-anthropic-auth issue 73, 2026-09) and in an ``error`` event
    mid-stream, whose data has no request_id (``request_id`` None here; the SDK's APIStatusError
    printed with its body: {'type': 'error', 'error': {'details': None, 'type': 'overloaded_error',
    'message': 'Overloaded'}}, anthropics/anthropic-sdk-python issue 688, pipecat-ai/pipecat issue 2161).
    """
    kind = reply.error_type or _STATUS_ERROR_TYPES.get(reply.status, "api_error")
    error: dict[str, Any] = {
        "details": {"error_code": reply.error_code} if reply.error_code else None,
        "type": kind,
        "message": reply.error_message or _DEFAULT_MESSAGES.get(kind, "error"),
    }
    body: dict[str, Any] = {"type": "error", "error": error}
    if request_id is not None:
        body["request_id"] = request_id
    return body


# error.details.error_code of a 429 that lasts until someone raises a limit (anthropic 2.14 types/shared/).
_SPEND_LIMIT_CODES = frozenset(
    {
        "enforced_spend_limit_reached",
        "contract_spend_limit_reached",
        "linked_organization_spend_limit_reached",
    }
)
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
        # A spend-limit 429 "has no retry-after header" (platform.claude.com/docs/api/rate-limits,
        # spend limits: rate_limit_error with error.details.error_code enforced_spend_limit_reached);
        # a rate limit or a ramp limit has one (anthropic 2.14 ramp_limit_exceeded_error_details.py).
        if reply.error_code not in _SPEND_LIMIT_CODES:
            headers["retry-after"] = "1"
        headers.update(
            {
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


def _header_seconds(headers: dict[str, str]) -> float | None:
    """The wait ``retry-after-ms`` or ``retry-after`` (seconds) gives; None for neither (or a date)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            seconds = float(lowered[name]) / scale
        except (KeyError, ValueError):
            continue
        return seconds if math.isfinite(seconds) else None
    return None


def thinking_shown(body: dict[str, Any]) -> bool:
    """Whether a thinking block carries its text: ``thinking.display``, else the model's default."""
    thinking = body.get("thinking")
    display = thinking.get("display") if isinstance(thinking, dict) else None
    if display is None:
        model = API_MODELS.get(str(body.get("model", "")))
        display = model.default_display if model is not None else "summarized"
    return display == "summarized"


def thinking_requested(body: dict[str, Any]) -> bool:
    """Whether the model would think: asked to, or, asked nothing, a model that thinks by default."""
    thinking = body.get("thinking")
    if isinstance(thinking, dict):
        return thinking.get("type") in ("enabled", "adaptive")
    model = API_MODELS.get(str(body.get("model", "")))
    return model is not None and model.thinks_by_default


# --- Tokens, structured outputs and the prompt cache, as the API documents them -------------------

_WORD = re.compile(r"[^\W\d_]+")
_DIGITS = re.compile(r"\d{1,3}")
_SYMBOLS = re.compile(r"[^\w\s]+")


def token_count(text: str) -> int:
    """Tokens in ``text``, counted the way Claude's tokenizer roughly does rather than four characters each.

    Chosen rule: a word is 1.3 tokens (long and rare words split), a group of up to three digits is
    one, and a run of punctuation is one token per two characters (JSON's ``": "`` and ``"},{"`` merge
    into few tokens); whitespace is free. English prose comes out near four characters a token; JSON,
    with its quotes and braces, costs more, as it does with the real tokenizer.
    """
    words = len(_WORD.findall(text))
    symbols = sum((len(run) + 1) // 2 for run in _SYMBOLS.findall(text))
    return round(words * 1.3) + len(_DIGITS.findall(text)) + symbols


def _block_key_and_text(block: dict[str, Any]) -> tuple[str, str]:
    """A block as the cache compares it (everything but its marker), and the text its tokens count."""
    key = json.dumps({k: v for k, v in block.items() if k != "cache_control"}, sort_keys=True)
    return key, str(block.get("text", "")) if block.get("type") == "text" else key


def _prompt_blocks(body: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(key text, counted text, marked) for every block, in the cache's order: tools, system, messages."""
    blocks: list[tuple[str, str, bool]] = []
    system = body.get("system") or []
    tagged = [("tool", tool) for tool in body.get("tools") or []]
    tagged += [
        ("system", b) for b in ([{"type": "text", "text": system}] if isinstance(system, str) else system)
    ]
    for message in body.get("messages") or []:
        content = message.get("content")
        items = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        tagged += [(str(message.get("role")), block) for block in items]
    for role, block in tagged:
        key, text = _block_key_and_text(block)
        blocks.append((f"{role}:{key}", text, "cache_control" in block))
    return blocks


def prompt_tokens(body: dict[str, Any]) -> int:
    """The input tokens of a request: every tool, system and message block (the schema is not counted)."""
    return max(sum(token_count(text) for _, text, _ in _prompt_blocks(body)), 1)


def prompt_cache_breakpoints(body: dict[str, Any]) -> list[tuple[str, int]]:
    """Each prefix that ends at a block marked cache_control: (a key for it, its tokens), shortest first.

    As https://platform.claude.com/docs/en/build-with-claude/prompt-caching describes it: the prefix
    runs tools, then system, then messages, and a hit needs it identical up to the breakpoint. The model
    and the output format are part of every key, because a different ``output_config.format`` misses
    the cache (structured-outputs page; on Bedrock a changed schema alone misses it too). The API's
    20-block lookback before a breakpoint is not modelled: only the marked prefixes are looked up.
    """
    output_format = json.dumps((body.get("output_config") or {}).get("format"), sort_keys=True)
    prefix = f"{body.get('model', '')}\x00{output_format}"
    result: list[tuple[str, int]] = []
    tokens = 0
    for key_text, text, marked in _prompt_blocks(body):
        prefix += "\x00" + key_text
        tokens += token_count(text)
        if marked:
            result.append((hashlib.sha256(prefix.encode()).hexdigest(), max(tokens, 1)))
    return result


@dataclass(frozen=True)
class ApiModel:
    """What the API accepts from one model, as its documentation gives it (not the app's registry)."""

    # The largest max_tokens; None where no page read for this fake gives it.
    max_output: int | None
    # The thinking.type values accepted; a type the model rejects is a 400 invalid_request_error.
    thinking_types: frozenset[str]
    # The 5.x rules: no assistant prefill, no non-default temperature, top_p or top_k.
    strict_turns: bool = False
    # The shortest prefix the prompt cache stores (shorter ones: both cache counts 0, no error).
    min_cache_tokens: int = 4096
    # Whether a request that says nothing about thinking gets it.
    thinks_by_default: bool = False
    # What a thinking block carries when the request sets no ``thinking.display``: "summarized" (the
    # thinking text) or "omitted" (an empty ``thinking``, only the signature).
    default_display: str = "summarized"


# Sources (platform.claude.com/docs, as the search corpus holds it, read 2026-11-27):
# - max output 128K: models/{sonnet,opus,haiku}-5-5/overview, models/sonnet-4-6/overview and
#   models/opus-4-6/overview ("Max output: 128K tokens"); 64K: Haiku 4.5 (the comparison table of
#   models/sonnet-5-5/overview), Sonnet 4.5 and Opus 4.5 (the 4.6 generation's models overview, "Max
#   output 64K tokens").
# - thinking: models/sonnet-5-5/whats-new-sonnet-5-5 ("disabled" is a 400 invalid_request_error that
#   points to between_tools); models/haiku-5-5/whats-new-haiku-5-5 (manual extended thinking, i.e.
#   "enabled" with budget_tokens, returns an error; "disabled" works at low, medium and high effort);
#   Opus 5.5 rejects both "disabled" and "enabled" (models/opus-5-5/migration-guide: "enabled" with
#   budget_tokens "returns a 400 error" on Opus 4.7 and later, and "On Claude Opus 5.5, adaptive
#   thinking is always on"; its section "thinking can't be disabled"; the model comparison tables:
#   "Adaptive (always on)"). The 4.x models take "enabled" and
#   "disabled"; the 4.6 ones also "adaptive" (the registry's thinking-troubleshooting source).
# - strict_turns: whats-new-haiku-5-5, breaking changes: "assistant message prefill returns an error"
#   (end messages with a user turn) and "non-default sampling parameters return an error".
_BUDGET_THINKING = frozenset({"enabled", "disabled"})
API_MODELS: dict[str, ApiModel] = {
    "claude-sonnet-5-5": ApiModel(128_000, frozenset({"adaptive", "between_tools"}), strict_turns=True),
    "claude-opus-5-5": ApiModel(128_000, frozenset({"adaptive"}), strict_turns=True),
    "claude-haiku-5-5": ApiModel(128_000, frozenset({"adaptive", "disabled"}), strict_turns=True),
    "claude-sonnet-4-6": ApiModel(128_000, _BUDGET_THINKING | {"adaptive"}),
    "claude-opus-4-6": ApiModel(128_000, _BUDGET_THINKING | {"adaptive"}),
    "claude-haiku-4-5": ApiModel(64_000, _BUDGET_THINKING),
    "claude-opus-4-5": ApiModel(64_000, _BUDGET_THINKING),
    "claude-sonnet-4-5": ApiModel(64_000, _BUDGET_THINKING),
}
# The fake's own, not the app's registry: a registry that got one wrong must not be echoed back by the
# fake as a cache hit or a thought it would not have had.
# - min_cache_tokens: 4,096 Opus 4.6/4.5 and Haiku 4.5, 1,024 Sonnet 4.6/4.5 (build-with-claude/
#   prompt-caching, as quoted in anthropics/anthropic-sdk-python issue 1194); 512 on Opus, Sonnet and
#   Haiku 5.5 (build-with-claude/prompt-caching, "Cache limitations": "512 tokens for Claude Fable 5.1,
#   Claude Mythos 5.1, Claude Opus 5.5, Claude Opus 5, Claude Sonnet 5.5, Claude Fable 5, Claude Mythos
#   5, and Claude Haiku 5.5", as quoted in public notes of October 2026; models/opus-5-5/migration-guide
#   says the same of Opus 5.5, "down from 1,024 tokens on Claude Opus 4.8").
# - thinks_by_default: the 5.x models think adaptively unless told otherwise (the comparison tables:
#   "Adaptive", "Adaptive (always on)"); the 4.x models only when asked.
# - default_display "omitted" on the 5.5 models: models/sonnet-5-5/migration-guide ("Thinking is on by
#   default", its table's default display column: "omitted") and models/opus-5-5/whats-new-opus-5-5
#   (thinking blocks "under the default display: \"omitted\"" come with an empty thinking field); Haiku
#   5.5 taken to be like them (Opus 5's migration guide says the same of Opus 5), not read on its own
#   page. The 4.x models summarize (anthropics/claude-code issue 49268: "Opus 4.6 and earlier defaulted
#   to summarized"). What "omitted" sends: the SDK's ThinkingConfigAdaptiveParam.display (anthropic
#   2.14 types/thinking_config_adaptive_param.py: "thinking content is redacted but a signature is
#   returned for multi-turn continuity"); on the wire the block opens, one signature_delta comes, and
#   no thinking_delta (agentclientprotocol/claude-agent-acp pull request 766).
for _id in ("claude-sonnet-5-5", "claude-opus-5-5", "claude-haiku-5-5"):
    API_MODELS[_id] = dataclasses.replace(
        API_MODELS[_id], min_cache_tokens=512, thinks_by_default=True, default_display="omitted"
    )
for _id in ("claude-sonnet-4-6", "claude-sonnet-4-5"):
    API_MODELS[_id] = dataclasses.replace(API_MODELS[_id], min_cache_tokens=1024)
_UNKNOWN_MIN_CACHE_TOKENS = 4096
# ThinkingConfigEnabledParam.budget_tokens (anthropic 2.14 types/thinking_config_enabled_param.py):
# "Must be ≥1024 and less than `max_tokens`".
MIN_BUDGET_TOKENS = 1024


def request_refusal(body: dict[str, Any]) -> tuple[int, str, str] | None:
    """(status, error type, message) of the error the API would answer this request with; None if none.

    An unknown model is a 404 not_found_error (platform.claude.com/docs/en/api/errors: 404
    not_found_error, "the requested resource could not be found"); the rest are 400s.
    """
    model_id = str(body.get("model", ""))
    model = API_MODELS.get(model_id)
    if model is None:
        return 404, "not_found_error", f"model: {model_id}"
    problem = _model_problem(body, model) or request_problem(body)
    return (400, "invalid_request_error", problem) if problem else None


def _model_problem(body: dict[str, Any], model: ApiModel) -> str:
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        return "max_tokens: must be a positive integer"
    if model.max_output is not None and max_tokens > model.max_output:
        return (
            f"max_tokens: {max_tokens} > {model.max_output}, which is the maximum allowed number of "
            f"output tokens for {body['model']}"
        )
    thinking = body.get("thinking")
    if isinstance(thinking, dict):
        kind = thinking.get("type")
        if kind not in model.thinking_types:
            return f'thinking.type: "{kind}" is not supported for this model'
        display = thinking.get("display")
        if display is not None and kind not in ("enabled", "adaptive"):
            return "thinking.display: Extra inputs are not permitted"
        if display not in (None, "summarized", "omitted"):
            return "thinking.display: Input should be 'summarized' or 'omitted'"
        budget = thinking.get("budget_tokens")
        if kind == "enabled" and not (isinstance(budget, int) and MIN_BUDGET_TOKENS <= budget < max_tokens):
            return f"thinking.budget_tokens: must be at least {MIN_BUDGET_TOKENS} and less than max_tokens"
    if model.strict_turns:
        messages = body.get("messages") or []
        if messages and messages[-1].get("role") == "assistant":
            return "This model does not support assistant message prefill. The conversation must end with a user message."
        for name, default in (("temperature", 1.0), ("top_p", None), ("top_k", None)):
            if body.get(name) is not None and body.get(name) != default:
                return f"{name}: only the default value is supported for this model"
    return _content_problem(body) or (_thinking_turns_problem(body) if thinking_requested(body) else "")


_DOCS_THINKING = (
    "Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
)


def _thinking_turns_problem(body: dict[str, Any]) -> str:
    """What the API refuses of a request that thinks: sampling changed, or a last assistant turn (a
    prefill, or a tool loop's turn) that does not begin with its thinking.

    - temperature: "`temperature` may only be set to 1 when thinking is enabled. Please consult our
      documentation at ..." (the API's 400 as quoted in MartialBE/one-hub issue 529 and
      egoist/chatwise-releases issue 1348); top_p and top_k: "Thinking isn't compatible with
      `temperature`, `top_p`, or `top_k` modifications" (the extended-thinking page as quoted in
      LostRuins/lite.koboldai.net issue 108), later pages allowing a top_p from 0.95 to 1; the
      wording of the fake's top_p and top_k messages is its own.
    - "messages.N.content.0.type: Expected `thinking` or `redacted_thinking`, but found `text`. When
      `thinking` is enabled, a final `assistant` message must start with a thinking block (preceeding
      the lastmost set of `tool_use` and `tool_result` blocks)." (anthropics/claude-code issue 20705,
      anomalyco/opencode issue 3077): the last assistant turn when the conversation ends on it or on
      tool results. An assistant turn followed by a user's own text is a finished earlier turn, whose
      thinking may be left out (prompt.prompt_continue's source).
    """
    temperature = body.get("temperature")
    if temperature is not None and temperature != 1:
        return f"`temperature` may only be set to 1 when thinking is enabled. {_DOCS_THINKING}"
    if body.get("top_k") is not None:
        return f"`top_k` is not supported when thinking is enabled. {_DOCS_THINKING}"
    top_p = body.get("top_p")
    if top_p is not None and not 0.95 <= top_p <= 1:
        return f"`top_p` must be between 0.95 and 1 when thinking is enabled. {_DOCS_THINKING}"
    messages = body.get("messages") or []
    last = len(messages) - 1
    if last >= 1 and messages[last].get("role") == "user" and _has_tool_result(messages[last]):
        last -= 1
    if last < 0 or messages[last].get("role") != "assistant":
        return ""
    first = _blocks(messages[last])[:1]
    found = first[0].get("type") if first else "nothing"
    if found in _THINKING_TYPES:
        return ""
    return (
        f"messages.{last}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{found}`. "
        "When `thinking` is enabled, a final `assistant` message must start with a thinking block "
        "(preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you include "
        f"thinking blocks from previous turns. To avoid this requirement, disable `thinking`. {_DOCS_THINKING}"
    )


_THINKING_TYPES = ("thinking", "redacted_thinking")


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return [block for block in content or [] if isinstance(block, dict)]


def _has_tool_result(message: dict[str, Any]) -> bool:
    return any(block.get("type") == "tool_result" for block in _blocks(message))


def _content_problem(body: dict[str, Any]) -> str:
    """What the API refuses of the messages' content, whatever the model thinks.

    - "messages.N: all messages must have non-empty content except for the optional final assistant
      message" (anthropics/claude-code issue 6774; tidyverse/ellmer issue 709);
    - "messages: text content blocks must be non-empty" (anthropics/claude-code issue 59812) and
      "messages: text content blocks must contain non-whitespace text" (anthropics/claude-code issue
      23440; home-assistant/core issue 175637: a whitespace-only string content is refused the same);
    - thinking blocks come back exactly as the API sent them: "messages.N.content.M: Invalid
      `signature` in `thinking` block" (anthropics/claude-code issue 10627) when "a thinking /
      redacted_thinking block reaching the API differs in any way from what was originally returned
      (edited or re-serialized thinking/signature text, blocks reordered or merged, or blocks generated
      by a different model replayed into the conversation)" (a maintainer in
      anthropics/anthropic-sdk-python issue 1598); and "messages.N.content.0: If an assistant message
      contains any thinking blocks, the first block must be thinking or redacted_thinking. Found text."
      (anthropics/claude-code issue 20705). The fake's signature is its hash of the model and the
      block's thinking text (``thinking_signature``); a redacted block's data is not checked.
    """
    messages = body.get("messages") or []
    for index, message in enumerate(messages):
        blocks = _blocks(message)
        final_assistant = index == len(messages) - 1 and message.get("role") == "assistant"
        if not blocks and not final_assistant:
            return f"messages.{index}: all messages must have non-empty content except for the optional final assistant message"
        for block in blocks:
            if block.get("type") == "text" and not str(block.get("text", "")).strip():
                if not block.get("text"):
                    return "messages: text content blocks must be non-empty"
                return "messages: text content blocks must contain non-whitespace text"
        kinds = [block.get("type") for block in blocks]
        if any(kind in _THINKING_TYPES for kind in kinds) and kinds[0] not in _THINKING_TYPES:
            return (
                f"messages.{index}.content.0: If an assistant message contains any thinking blocks, the "
                f"first block must be thinking or redacted_thinking. Found {kinds[0]}."
            )
        for position, block in enumerate(blocks):
            if block.get("type") == "thinking" and block.get("signature") != thinking_signature(
                str(body.get("model", "")), str(block.get("thinking", ""))
            ):
                return f"messages.{index}.content.{position}: Invalid `signature` in `thinking` block"
    return ""


def thinking_signature(model: str, thinking: str) -> str:
    """The signature the fake gives a thinking block: tied to its model and to the text it carries."""
    return "fake-signature-" + hashlib.sha256(f"{model}\x00{thinking}".encode()).hexdigest()[:32]


MAX_CACHE_BREAKPOINTS = 4
# Keywords structured outputs reject (https://platform.claude.com/docs/en/build-with-claude/structured-outputs,
# "JSON Schema limitations"): numeric and string-length bounds, maxItems and minItems other than 0 or 1,
# and the applicators beyond anyOf/allOf (the SDK's transform_schema rewrites oneOf as anyOf for this reason).
_UNSUPPORTED_KEYWORDS = frozenset(
    {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "maxLength"}
    | {"maxItems", "uniqueItems", "contains", "prefixItems", "oneOf", "not", "if", "then", "else"}
    | {"patternProperties", "propertyNames", "minProperties", "maxProperties", "dependentRequired"}
)
# Across a request's strict schemas: at most 24 optional properties and 16 using anyOf or a type list.
_MAX_OPTIONAL = 24
_MAX_UNIONS = 16


def request_problem(body: dict[str, Any]) -> str:
    """Why the API would answer 400 to this request's cache markers or output format; "" when it would not."""
    marks = sum(marked for _, _, marked in _prompt_blocks(body))
    if marks > MAX_CACHE_BREAKPOINTS:
        return (
            f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. Found {marks}."
        )
    output_format = (body.get("output_config") or {}).get("format")
    if not output_format:
        return ""
    if output_format.get("type") != "json_schema" or not isinstance(output_format.get("schema"), dict):
        return "output_config.format: only type json_schema with a schema object is supported"
    counts = {"optional": 0, "unions": 0}
    problem = _schema_problem(output_format["schema"], "output_config.format.schema", counts)
    if not problem and counts["optional"] > _MAX_OPTIONAL:
        problem = (
            f"output_config.format.schema: {counts['optional']} optional properties; at most {_MAX_OPTIONAL}"
        )
    if not problem and counts["unions"] > _MAX_UNIONS:
        problem = f"output_config.format.schema: {counts['unions']} anyOf or type-list properties; at most {_MAX_UNIONS}"
    return problem


def _schema_problem(schema: Any, where: str, counts: dict[str, int]) -> str:
    if not isinstance(schema, dict):
        return f"{where}: a schema must be an object"
    unsupported = sorted(_UNSUPPORTED_KEYWORDS & set(schema))
    if unsupported:
        return f"{where}: '{unsupported[0]}' is not supported for structured outputs"
    if schema.get("minItems", 0) not in (0, 1):
        return f"{where}: minItems must be 0 or 1"
    if isinstance(schema.get("$ref"), str) and not schema["$ref"].startswith("#"):
        return f"{where}: external $ref is not supported"
    if "anyOf" in schema or isinstance(schema.get("type"), list):
        counts["unions"] += 1
    if schema.get("type") == "object" or "properties" in schema:
        if schema.get("additionalProperties") is not False:
            return f"{where}: additionalProperties must be set to false for object types"
        required = set(schema.get("required", []))
        counts["optional"] += sum(name not in required for name in schema.get("properties", {}))
    for name, child in _subschemas(schema):
        problem = _schema_problem(child, f"{where}.{name}", counts)
        if problem:
            return problem
    return ""


def _subschemas(schema: dict[str, Any]) -> list[tuple[str, Any]]:
    children: list[tuple[str, Any]] = [
        (f"properties.{k}", v) for k, v in schema.get("properties", {}).items()
    ]
    if "items" in schema:
        children.append(("items", schema["items"]))
    for keyword in ("anyOf", "allOf"):
        children += [(f"{keyword}[{i}]", v) for i, v in enumerate(schema.get(keyword, []))]
    children += [(f"$defs.{k}", v) for k, v in schema.get("$defs", {}).items()]
    return children


def schema_order(value: Any, schema: Any) -> Any:
    """``value`` with its object keys in the order structured outputs write them.

    Required properties come first, then optional ones, each in the schema's property order (the
    structured-outputs page, "property ordering"); keys the schema does not know keep their place last.
    """
    schema = _variant(value, schema)
    if isinstance(value, list):
        return [schema_order(item, schema.get("items", {})) for item in value]
    if not isinstance(value, dict):
        return value
    properties = schema.get("properties", {})
    required = set(schema.get("required", []))
    order = [k for k in properties if k in required] + [k for k in properties if k not in required]
    keys = [k for k in order if k in value] + [k for k in value if k not in properties]
    return {key: schema_order(value[key], properties.get(key, {})) for key in keys}


def _variant(value: Any, schema: Any) -> dict[str, Any]:
    """The anyOf branch a value was written under: the first whose type, and for an object keys, fit."""
    if not isinstance(schema, dict):
        return {}
    variants = schema.get("anyOf")
    if not isinstance(variants, list):
        return schema
    for variant in variants:
        if isinstance(variant, dict) and _fits(value, variant):
            return _variant(value, variant)
    return {}


def _fits(value: Any, schema: dict[str, Any]) -> bool:
    wanted = {dict: "object", list: "array", type(None): "null"}.get(type(value))
    if "anyOf" in schema:
        return True
    if wanted is None:
        return schema.get("type") not in ("object", "array", "null")
    if wanted != "object":
        return schema.get("type") == wanted
    properties = schema.get("properties", {})
    constants = {k: v["const"] for k, v in properties.items() if isinstance(v, dict) and "const" in v}
    return set(value) <= set(properties) and all(value.get(k) == c for k, c in constants.items())


def reply_shaped(reply: Reply, body: dict[str, Any]) -> Reply:
    """The reply as the API would send it: keys in structured-output order, cut at max_tokens if asked."""
    if reply.status != 200:
        return reply
    text, stop_reason = reply.text, reply.stop_reason
    output_format = (body.get("output_config") or {}).get("format") or {}
    if isinstance(output_format.get("schema"), dict):
        try:
            document = json.loads(text)
        except ValueError:
            document = None
        if document is not None:
            indent = 1 if "\n" in text.strip() else None
            text = json.dumps(schema_order(document, output_format["schema"]), indent=indent)
    thinking = reply.thinking_text
    if reply.cut_at_max_tokens:
        # Thinking is output and counts toward max_tokens, before the text: a model that thinks long
        # leaves the text less room, and one that thinks past max_tokens writes no text at all
        # (platform.claude.com/docs/en/build-with-claude/prompt-engineering/prompting-claude-haiku-5-5,
        # "Use effort to control thinking": thinking "counts toward max_tokens"; anthropic 2.14
        # types/thinking_config_enabled_param.py: budget_tokens "less than max_tokens").
        max_tokens = int(body.get("max_tokens", 4096))
        cut_thinking = False
        if thinking_requested(body):
            thinking, cut_thinking = _cut_to_tokens(thinking, max_tokens)
            max_tokens -= token_count(thinking)
        text, cut = ("", bool(text)) if cut_thinking else _cut_to_tokens(text, max_tokens)
        stop_reason = "max_tokens" if cut or cut_thinking else stop_reason
    return dataclasses.replace(reply, text=text, thinking_text=thinking, stop_reason=stop_reason)


def _cut_to_tokens(text: str, max_tokens: int) -> tuple[str, bool]:
    """The longest start of ``text`` within ``max_tokens`` (token_count), and whether it was cut."""
    if token_count(text) <= max_tokens:
        return text, False
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if token_count(text[:middle]) <= max_tokens:
            low = middle
        else:
            high = middle - 1
    return text[:low], True


def screenplay_text(screenplay: dict[str, Any], *, fenced: bool = False) -> str:
    text = json.dumps(screenplay, indent=1)
    return f"```json\n{text}\n```" if fenced else text


def screenplay_reply_for(
    body: dict[str, Any], *, ttft: float = 0.0, tokens_per_second: float | None = None
) -> Reply:
    """A plausible reply to the app's own prompt: the offline model's screenplay for its plot and personas,
    cut at max_tokens like a real model (by the fake), and only the remaining scenes for a continuation."""
    from html import unescape

    from stories.generation.backends.base import Brief, CastMember
    from stories.generation.backends.offline_screenplay import offline_screenplay

    system = "".join(block.get("text", "") for block in body.get("system", []) if isinstance(block, dict))
    first = body["messages"][0]["content"]
    # Parallel mode's scene steps carry the plot in the system prompt, with the outline.
    plot = re.search(r"<plot>\n(.*?)\n</plot>", first, re.S) or re.search(
        r"<plot>\n(.*?)\n</plot>", system, re.S
    )
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
        # A continuation repeats the header (our continuation schema requires it) with the later scenes.
        done = re.search(r"after scene (\d+)", body["messages"][-1]["content"])
        document = {**document, "scenes": document["scenes"][int(done.group(1)) if done else 0 :]}
    return Reply(
        text=json.dumps(document, indent=1),
        cut_at_max_tokens=True,
        ttft=ttft,
        tokens_per_second=tokens_per_second,
    )


def standalone_reply_for(
    body: dict[str, Any], *, ttft: float = 0.0, tokens_per_second: float | None = None
) -> Reply:
    """What the standalone server answers: each of the app's prompts as a model would (a screenplay,
    parallel mode's outline and scenes, all from the offline model's screenplay for the plot and the
    personas), and any other structured-output request (``manage.py claude_check``'s) with the smallest
    object its schema takes."""
    from tests.fake_screenwriter import FakeScreenwriter, first_user_text

    asked = first_user_text(body)
    system = "".join(block.get("text", "") for block in body.get("system", []) if isinstance(block, dict))
    schema = ((body.get("output_config") or {}).get("format") or {}).get("schema")
    if "<plot>" not in asked + system and isinstance(schema, dict):
        return Reply(text=json.dumps(_schema_example(schema)), ttft=ttft, tokens_per_second=tokens_per_second)
    whole = screenplay_reply_for(body, ttft=ttft, tokens_per_second=tokens_per_second)
    if "Step 1: write the outline" not in asked and "Step 2: write scene" not in asked:
        return whole
    writer = FakeScreenwriter(
        json.loads(whole.text), ttft=ttft, tokens_per_second=tokens_per_second, cut_at_max_tokens=True
    )
    return writer(body)


def _schema_example(schema: dict[str, Any]) -> object:
    """The smallest value of a JSON schema's type: its required properties, each the smallest of its own."""
    kind = schema.get("type")
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: _schema_example(properties.get(name) or {}) for name in schema.get("required") or []}
    return {"array": [], "string": "", "integer": 0, "number": 0, "boolean": True}.get(str(kind))


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
        default=lambda body: standalone_reply_for(
            body, ttft=args.ttft, tokens_per_second=args.tokens_per_second
        ),
        prompt_cache=True,
    )
    print(f"fake Anthropic API on {server.base_url} (key {args.key}); Ctrl-C stops it", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.close()


if __name__ == "__main__":
    main()

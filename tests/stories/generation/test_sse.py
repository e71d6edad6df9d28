"""The model's event stream is decoded as the SDK decodes it, however the bytes are framed and cut.

Through the real back-end against the fake server (the real SDK makes the request), with the events
framed in every way the SSE format allows; and the decoder against the SDK's own ``AsyncStream`` over
the same bytes, cut at every byte: the same events, or the same error.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2
import pytest

from stories.errors import GenerationError
from stories.generation.backends.anthropic import AnthropicBackend
from stories.generation.backends.base import Brief, CallFinished, ModelCall, TextDelta, UsageReport
from stories.generation.backends.sse import stream_events
from tests.fake_anthropic import FakeAnthropic, Reply
from tests.stories.generation.conftest import MODEL

TEXT = 'INT. LIGHTHOUSE - NIGHT\nRain lashes the glass. "Who\'s there?" — ¿Quién? 灯台の中で。'
WIRES = {
    "lf": {},
    "crlf": {"sse_newline": "\r\n"},
    "cr": {"sse_newline": "\r"},
    "split inside lines": {"sse_split": True},
    "crlf split": {"sse_newline": "\r\n", "sse_split": True},
    "the whole reply in one part": {"sse_one_part": True},
    "data over several lines": {"sse_multiline_data": True, "sse_split": True},
    "a comment and an unknown event": {"sse_unknown_event": True, "sse_newline": "\r\n"},
}


def _call() -> ModelCall:
    return ModelCall(
        model=MODEL,
        max_tokens=200,
        system=[{"type": "text", "text": "Write."}],
        messages=[{"role": "user", "content": "A lighthouse."}],
        output_schema={"type": "object"},
        brief=Brief(plot="A lighthouse.", title="Light", cast=()),
        max_retries=0,
    )


async def _backend_events() -> list[Any]:
    return [event async for event in AnthropicBackend().stream(_call())]


@pytest.mark.parametrize("wire", WIRES.values(), ids=WIRES.keys())
async def test_the_back_end_reads_the_text_and_usage_however_the_events_are_framed(
    fake_anthropic: FakeAnthropic, wire: dict[str, Any]
) -> None:
    fake_anthropic.script(Reply(text=TEXT, chunk_chars=5, output_tokens=42, **wire))
    events = await _backend_events()
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == TEXT
    finished = events[-1]
    assert isinstance(finished, CallFinished) and finished.stop_reason == "end_turn"
    assert finished.usage.output_tokens == 42
    assert [e.final for e in events if isinstance(e, UsageReport)] == [False, True]


@pytest.mark.parametrize("wire", [{}, {"sse_newline": "\r\n", "sse_split": True}, {"sse_one_part": True}])
async def test_an_error_event_mid_stream_is_the_apis_error_with_its_type_and_request_id(
    fake_anthropic: FakeAnthropic, wire: dict[str, Any]
) -> None:
    fake_anthropic.script(
        Reply(text=TEXT, chunk_chars=5, error_event_after=3, error_event_type="overloaded_error", **wire)
    )
    received: list[str] = []
    with pytest.raises(GenerationError) as raised:
        async for event in AnthropicBackend().stream(_call()):
            if isinstance(event, TextDelta):
                received.append(event.text)
    assert "".join(received) == TEXT[:15]  # the text before the error, not retried after it
    assert raised.value.code == "llm_overloaded"
    assert "status 200" in raised.value.operator_detail
    assert "type overloaded_error" in raised.value.operator_detail
    assert "request-id req_" in raised.value.operator_detail


class _Body(httpx2.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


def _response(chunks: list[bytes]) -> httpx2.Response:
    return httpx2.Response(
        200,
        headers={"content-type": "text/event-stream", "request-id": "req_cut"},
        stream=_Body(chunks),
        request=httpx2.Request("POST", "https://api.anthropic.com/v1/messages"),
    )


async def _outcome(events: AsyncIterator[Any]) -> tuple[list[Any], Any]:
    """The events passed on, then what was raised (its class, message, body and request id), if anything."""
    seen: list[Any] = []
    try:
        async for event in events:
            seen.append(event)
    except anthropic.APIStatusError as error:
        return seen, (type(error), error.message, error.body, error.request_id, error.status_code)
    except ValueError as error:  # data that is not JSON, or not UTF-8: json's error, or the codec's
        return seen, type(error)
    return seen, None


def _cuts(wire: bytes) -> list[list[bytes]]:
    """The bytes whole, a byte at a time, and cut in two at every place."""
    return [[wire], [wire[i : i + 1] for i in range(len(wire))]] + [
        [wire[:i], wire[i:]] for i in range(1, len(wire))
    ]


STREAMS = {
    "several events in one read, a ping, a comment, an unnamed event, empty data": (
        b'event: message_start\ndata: {"type": "message_start", "n": 1}\n\n'
        b'event: ping\ndata: {"type": "ping"}\n\n'
        b": keep-alive\n\n"
        b'data: {"type": "no name"}\n\n'
        b"event: content_block_delta\ndata:\n\n"
        b'event: future_event\nid: 7\nretry: 10\ndata: {"type": "future_event"}\n\n'
        b'event: content_block_delta\ndata:{"text": "no space"}\n\n'
        b'event:  spaced\ndata:  {"text": "two spaces"}\n\n\n\n'
        b'event: message_stop\ndata: {"type": "message_stop"}\n\n'
        b'event: message_stop\ndata: {"type": "never finished"}\n'
    ),
    "crlf and cr line ends, data over several lines, utf-8": (
        b'event: content_block_delta\r\ndata: {"text":\r\ndata:  "\xc3\xa9\xe7\x81\xaf"}\r\n\r\n'
        b'event: message_delta\rdata: {"type": "message_delta"}\r\r'
        b'event: message_stop\r\ndata: {"type": "message_stop"}\n\r\n'
    ),
    "an error event with its body": (
        b'event: content_block_delta\ndata: {"text": "before"}\n\n'
        b'event: error\r\ndata: {"type": "error", "error": {"type": "overloaded_error", '
        b'"message": "Overloaded"}}\r\n\r\n'
        b'event: content_block_delta\ndata: {"text": "never"}\n\n'
    ),
    "a cr line end last": b'event: message_stop\rdata: {"type": "message_stop"}\r\r',
    "an error event whose data is not json": b"event: error\ndata: upstream fell over\n\n",
    "an error event with no data": b"event: ping\ndata: {}\n\nevent: error\n\n",
    # json takes what jiter (the fast path) refuses: a lone surrogate's escape; and a huge number, 1e400.
    "a lone surrogate and huge numbers": (
        b'event: content_block_delta\ndata: {"delta": {"text": "a \\ud800 b"}}\n\n'
        b'event: message_delta\ndata: {"big": 123456789012345678901234567890, "e": 1e400}\n\n'
    ),
    "data that is not json": b'event: content_block_delta\ndata: {"text": "cut\n\n',
    "bytes that are not utf-8": b'event: content_block_delta\ndata: {"text": "\xff"}\n\n',
}


@pytest.mark.parametrize("wire", STREAMS.values(), ids=STREAMS.keys())
async def test_the_decoder_gives_what_the_sdks_stream_gives_wherever_the_reads_cut(wire: bytes) -> None:
    client = anthropic.AsyncAnthropic(api_key="sk-ant-test", max_retries=0)
    expected = await _outcome(
        anthropic.AsyncStream(cast_to=object, response=_response([wire]), client=client)
    )
    assert expected[0] or expected[1]  # the case decodes to something
    for chunks in _cuts(wire):
        assert await _outcome(stream_events(_response(chunks), client)) == expected, chunks


async def test_events_cut_anywhere_come_out_whole_and_in_order() -> None:
    events = [
        {"type": "content_block_delta", "index": 0, "delta": {"text": f"piece {n} é"}} for n in range(50)
    ]
    wire = b"".join(f"event: content_block_delta\r\ndata: {json.dumps(e)}\r\n\r\n".encode() for e in events)
    client = anthropic.AsyncAnthropic(api_key="sk-ant-test", max_retries=0)
    for size in (1, 7, 64, 1000, len(wire)):
        chunks = [wire[i : i + size] for i in range(0, len(wire), size)]
        assert [e async for e in stream_events(_response(chunks), client)] == events

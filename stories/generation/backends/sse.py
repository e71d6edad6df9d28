"""The model's event stream decoded in one pass over the body's bytes: the SDK's rules, less of its cost.

The SDK decodes a stream line by line, through three async generators per event (anthropic 2.14
_streaming.py: ``SSEDecoder._aiter_chunks`` joins lines until a blank one, ``aiter_bytes`` splits them
again and ``decode``s each, ``AsyncStream.__stream__`` filters): about a fifth of daphne's CPU time per
streamed token (bench/results/stream_cpu.md). ``SSEBuffer`` takes each read of the body whole, splits it
at the blank lines that end events (``bytes.split``, in C) and keeps what follows the last one for the
next read; ``stream_events`` gives each event's data, ``json.loads``-ed (by jiter, with json for what
jiter refuses: ``_json``).

What it keeps of the SDK, rule by rule (anthropic 2.14 _streaming.py):

- lines end with ``\\r\\n``, ``\\n`` or ``\\r`` (``SSEDecoder`` splits with ``bytes.splitlines``), also
  when a ``\\r\\n`` is split between two reads; an event ends at an empty line;
- a line starting with ``:`` is a comment; ``field: value`` loses one space after the colon; ``data``
  lines of one event are joined with ``\\n``; fields other than ``event`` and ``data`` change nothing
  here (``id`` and ``retry`` only matter to a client that reconnects, which the SDK does not do);
- ``AsyncStream.__stream__``: an event named ``ping``, or with no ``event`` field, is skipped; one with
  empty data is skipped; ``event: error`` raises (below); every other event's data is ``json.loads``-ed
  and passed on, whatever its name (the caller ignores the types it does not know);
- bytes are decoded as UTF-8, strictly (an event never ends inside a character: ``\\n`` is no part of a
  multi-byte sequence); an event the body ends without an empty line after is not passed on
  (``SSEDecoder.decode`` dispatches an event only at an empty line).

``event: error`` mid-stream is handed to the SDK itself: the event's own bytes, with the response's
status and headers, go through an ``anthropic.AsyncStream``, whose ``__stream__`` raises what it raises
today, ``client._make_status_error(f"{body}", body=body, response=response)``: an APIStatusError (a
subclass chosen by the status, 200 here) whose ``type``, ``error_code`` and ``request_id`` the caller
reads. Errors are rare; building them the SDK's way costs nothing per token.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import anthropic
import httpx2
import jiter

_END = b"\n\n"


class SSEBuffer:
    """The body's bytes in, complete events out: ``feed`` returns the blocks (one event's lines each)."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._rest + chunk if self._rest else chunk
        if b"\r" in data:
            # A lone \r at the end may be the first half of a \r\n: kept raw until the next read.
            held = data.endswith(b"\r")
            data = _lf(data[:-1] if held else data)
            blocks = data.split(_END)
            self._rest = blocks.pop() + (b"\r" if held else b"")
            return blocks
        blocks = data.split(_END)
        self._rest = blocks.pop()
        return blocks

    def flush(self) -> list[bytes]:
        """The blocks the body's end completes (a last \r); what is left after them is no event."""
        blocks, self._rest = _lf(self._rest).split(_END), b""
        blocks.pop()
        return blocks


def _lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def event_parse(block: bytes) -> tuple[str | None, str]:
    """One event's name (None without an ``event`` field) and data (its ``data`` lines joined)."""
    name: str | None = None
    data: list[str] = []
    for raw in block.decode("utf-8").split("\n"):
        if not raw or raw[0] == ":":
            continue  # an empty line (a block may start with extra ones) or a comment
        field, _, value = raw.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value or None  # the SDK's ServerSentEvent: ``event or None``
    return name, "\n".join(data)


async def stream_events(
    response: httpx2.Response, client: anthropic.AsyncAnthropic
) -> AsyncGenerator[dict[str, Any], None]:
    """The data of each event of ``response``'s body that the SDK would pass on, ``json.loads``-ed."""
    buffer = SSEBuffer()
    async for chunk in response.aiter_bytes():
        for block in buffer.feed(chunk):
            if (data := await _block_data(block, response, client)) is not None:
                yield data
    for block in buffer.flush():
        if (data := await _block_data(block, response, client)) is not None:
            yield data


async def _block_data(
    block: bytes, response: httpx2.Response, client: anthropic.AsyncAnthropic
) -> dict[str, Any] | None:
    """One event's data, None for what the SDK skips (pings, events without a name or data);
    an ``error`` event raises what the SDK raises."""
    name, data = _name_and_data(block)
    if name is None or name == "ping":
        return None
    if name == "error":
        await error_raise(response, client, block)
    return _json(data) if data else None


def _json(data: bytes) -> Any:
    """What the SDK makes of an event's data (``ServerSentEvent.json``: ``json.loads(self.data)``, anthropic
    2.14 _streaming.py), through jiter (a quarter of json's CPU time an event); what jiter
    refuses goes through json as before: the escape of a lone surrogate ("\\ud800"), which json takes and
    jiter does not, and what both refuse, with json's error."""
    try:
        return jiter.from_json(data, cache_mode="keys")
    except ValueError:
        return json.loads(data.decode("utf-8"))


def _name_and_data(block: bytes) -> tuple[str | None, bytes]:
    # The usual event, "event: <name>\ndata: <json>", read without the line-by-line parse.
    if block.startswith(b"event: ") and block.count(b"\n") == 1:
        name_line, _, data_line = block.partition(b"\n")
        if data_line.startswith(b"data: "):
            return name_line[7:].decode("utf-8") or None, data_line[6:]
    name, data = event_parse(block)
    return name, data.encode("utf-8")


async def error_raise(response: httpx2.Response, client: anthropic.AsyncAnthropic, block: bytes) -> None:
    """Raise what the SDK raises for this ``event: error`` (its AsyncStream reads the event's bytes)."""
    # The response's headers (request-id, x-should-retry...) without those of its body's encoding.
    headers = [
        (name, value)
        for name, value in response.headers.multi_items()
        if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")
    ]
    echo = httpx2.Response(
        response.status_code, headers=headers, content=block + _END, request=response.request
    )
    async with anthropic.AsyncStream(cast_to=object, response=echo, client=client) as stream:
        async for _ in stream:
            pass
    raise anthropic.APIStatusError(  # not reached: the SDK raises for an error event
        "the model's stream sent an error", response=response, body=None
    )

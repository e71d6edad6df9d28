"""The model's HTTP client on daphne's event loop: the SDK's aiohttp client, its idle-read timer kept lazily.

``anthropic.DefaultAioHttpClient`` (the SDK's ``aiohttp`` extra: anthropic 2.14 _base_client.py,
``_DefaultAioHttpClient``, over _vendor/httpx_aiohttp) reads each model stream through aiohttp's
``ResponseHandler`` protocol. The call's idle-read timeout (``STORY_LLM_READ_TIMEOUT_SECONDS``, the
``read`` of its ``httpx2.Timeout``, which the transport passes on as ``ClientTimeout(sock_read=...)``)
is a timer that aiohttp cancels and schedules again on every network read (aiohttp 3.14
client_proto.py: ``data_received`` calls ``_reschedule_timeout``, which cancels the handle and makes a
new one with ``loop.call_later``). The API sends every few tokens as their own event, so that is a timer
made, pushed onto the loop's heap, cancelled and later swept off it for every few tokens of every
stream: at 20 streams, ``call_later``, ``loop.time`` and the heap's comparisons took about 4.5 % of the
process's samples (bench/results/stream_cpu.md, 2026-11-28 16:51 UTC).

``LazyReadTimeout`` keeps the same timeout with at most one timer per stream per timeout period: a read
moves a deadline (one float); the timer, when it fires, waits out what is left of the deadline if a read
came meanwhile, and times the read out only when none did. The timeout fires exactly as aiohttp's would
(``_on_read_timeout``: the read raises, the SDK maps it to ``APITimeoutError``), never earlier, and at
most one timer-turn later. A shorter timeout for a later request on the same connection replaces a
timer due later.

The protocol class is the connector's ``_factory`` (aiohttp connector.py, ``BaseConnector.__init__``),
a private attribute: if aiohttp renames it, the client is left as the SDK builds it (aiohttp's own
timer, the same behaviour at the old cost), and test_http_transport.py, which checks that the lazy
protocol is in use, fails.
"""

from __future__ import annotations

import asyncio
import functools
import ssl

import aiohttp
import anthropic
import httpx2
from aiohttp.client_proto import ResponseHandler
from anthropic._constants import DEFAULT_CONNECTION_LIMITS
from anthropic._vendor.httpx_aiohttp.transport import AiohttpTransport


class LazyReadTimeout(ResponseHandler):
    """aiohttp's client protocol with its idle-read timer moved lazily (see the module's docstring)."""

    _deadline = 0.0

    def _reschedule_timeout(self) -> None:
        timeout = self._read_timeout
        if not timeout:
            self._drop_timeout()
            return
        loop: asyncio.AbstractEventLoop = self._loop
        self._deadline = deadline = loop.time() + timeout
        handle = self._read_timeout_handle
        if handle is None or handle.when() > deadline:
            if handle is not None:
                handle.cancel()
            self._read_timeout_handle = loop.call_at(deadline, self._read_timeout_due)

    def _read_timeout_due(self) -> None:
        loop: asyncio.AbstractEventLoop = self._loop
        if loop.time() < self._deadline:
            # A read came since this timer was set: wait out the rest of the period from that read.
            self._read_timeout_handle = loop.call_at(self._deadline, self._read_timeout_due)
            return
        self._read_timeout_handle = None
        self._on_read_timeout()


class _Transport(AiohttpTransport):
    """The SDK's aiohttp transport, its session's connections made with ``LazyReadTimeout``."""

    def get_client(self) -> aiohttp.ClientSession:
        session = super().get_client()
        connector = session.connector
        if connector is not None and isinstance(getattr(connector, "_factory", None), functools.partial):
            # partial is invariant in its result for mypy; a LazyReadTimeout is a ResponseHandler.
            connector._factory = functools.partial(LazyReadTimeout, loop=connector._loop)  # type: ignore[assignment]
        return session


class ModelHttpClient(anthropic.DefaultAioHttpClient):
    """``anthropic.DefaultAioHttpClient`` with its defaults (timeout, connection limits, redirects), its
    transport ``_Transport``: the SDK's client makes its transport here (httpx2 ``AsyncClient.__init__``
    passes verify, cert, trust_env, http1, http2, limits and transport by name; the SDK's
    ``Httpx2AiohttpClient._init_transport`` hands them to ``AiohttpTransport``)."""

    def _init_transport(
        self,
        verify: ssl.SSLContext | str | bool = True,
        cert: str | tuple[str, str] | tuple[str, str, str] | None = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx2.Limits = DEFAULT_CONNECTION_LIMITS,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> httpx2.AsyncBaseTransport:
        if transport is not None:
            return transport
        return _Transport(
            verify=verify, cert=cert, trust_env=trust_env, http1=http1, http2=http2, limits=limits
        )

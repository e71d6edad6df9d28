"""The model's connections read through an asyncio protocol: one wake-up and one buffer per read.

httpx2 reads a connection through httpcore2's anyio backend (httpcore2 2.16 _backends/anyio.py, anyio
4.16 ``SocketStream.receive``), which for every read enters a cancel scope (``anyio.fail_after``),
resumes the transport's reading and pauses it again once data came (a selector change, an
``epoll_ctl`` system call, each way): on this project's streams a read is a few model tokens, and
the HTTP client was the largest cost per streamed token left in daphne (bench/results/stream_cpu.md).
``AsyncioBackend`` (an ``httpcore2.AsyncNetworkBackend``, the interface httpcore2's connection pool
takes) keeps the transport reading: the protocol appends what arrives to a buffer and wakes the read
waiting for it, if any; a read takes the whole buffer. Reading pauses only when more than
``_HIGH_WATER`` bytes wait unread. A read's timeout is one timer, armed only when the read must wait.

TLS is asyncio's (``loop.start_tls``, what ``asyncio.open_connection(ssl=...)`` does), with the
client's SSL context and the server's name: certificates are checked as before. The errors are
httpcore2's own (ConnectError, ConnectTimeout, ReadError, ReadTimeout, WriteError, WriteTimeout),
which httpx2 maps to its exceptions, so the SDK and ``backends.anthropic`` see the same errors as
with the anyio backend. ``model_http_client`` builds the SDK's own default client
(``anthropic.DefaultAsyncHttpxClient``: its timeouts, connection limits, redirects and keep-alive
socket options) on an ``httpx2.AsyncHTTPTransport`` whose connection pool uses this backend.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys
from collections.abc import Iterable
from typing import Any

import anthropic
import httpcore2
import httpx2

# Unread bytes past which the transport stops reading from the socket until a read takes them.
_HIGH_WATER = 256 * 1024


class _Reader(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[None] | None = None
        self.eof = False
        self.error: Exception | None = None
        self.paused = False
        self.drained: asyncio.Future[None] | None = None
        self.writing_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


async def _within(future: asyncio.Future[None], timeout: float | None, error: type[Exception]) -> None:
    """Wait for ``future``; past ``timeout`` seconds raise ``error`` (a cancel of this task stays one)."""
    if timeout is None:
        await future
        return
    expired = False

    def expire() -> None:
        nonlocal expired
        if not future.done():
            expired = True
            future.cancel()

    timer = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        await future
    except asyncio.CancelledError:
        if expired:
            task = asyncio.current_task()
            if task is None or not task.cancelling():
                raise error("timed out") from None
        raise
    finally:
        timer.cancel()


class AsyncioStream(httpcore2.AsyncNetworkStream):
    def __init__(self, transport: asyncio.Transport, reader: _Reader) -> None:
        self._transport = transport
        self._reader = reader

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        reader = self._reader
        if not reader.buffer and not reader.eof:
            reader.waiter = asyncio.get_running_loop().create_future()
            try:
                await _within(reader.waiter, timeout, httpcore2.ReadTimeout)
            finally:
                reader.waiter = None
        buffer = reader.buffer
        if buffer:
            if len(buffer) <= max_bytes:
                data = bytes(buffer)
                buffer.clear()
            else:
                data = bytes(buffer[:max_bytes])
                del buffer[:max_bytes]
            if reader.paused and len(buffer) <= _HIGH_WATER // 2:
                reader.paused = False
                self._transport.resume_reading()
            return data
        if reader.error is not None:
            raise httpcore2.ReadError(str(reader.error))
        return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        reader = self._reader
        if self._transport.is_closing():
            raise httpcore2.WriteError("the connection is closed")
        self._transport.write(buffer)
        if reader.writing_paused:
            reader.drained = asyncio.get_running_loop().create_future()
            try:
                await _within(reader.drained, timeout, httpcore2.WriteTimeout)
            finally:
                reader.drained = None
            if reader.error is not None:
                raise httpcore2.WriteError(str(reader.error))

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore2.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(
                    self._transport, self._reader, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError:
            self._transport.close()
            raise httpcore2.ConnectTimeout("TLS handshake timed out") from None
        except (OSError, ssl.SSLError) as error:
            self._transport.close()
            raise httpcore2.ConnectError(str(error)) from error
        assert transport is not None
        self._reader.transport = transport  # type: ignore[assignment]
        return AsyncioStream(transport, self._reader)  # type: ignore[arg-type]

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        if info == "is_readable":
            # An idle connection with something to read has been closed (or sent what it should not).
            reader = self._reader
            return bool(reader.buffer) or reader.eof or self._transport.is_closing()
        return None


class AsyncioBackend(httpcore2.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, reader = await loop.create_connection(
                    _Reader, host, port, local_addr=(local_address, 0) if local_address else None
                )
        except TimeoutError:
            raise httpcore2.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except OSError as error:
            raise httpcore2.ConnectError(str(error)) from error
        sock = transport.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return AsyncioStream(transport, reader)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, reader = await loop.create_unix_connection(_Reader, path)
        except TimeoutError:
            raise httpcore2.ConnectTimeout(f"connecting to {path} timed out") from None
        except OSError as error:
            raise httpcore2.ConnectError(str(error)) from error
        return AsyncioStream(transport, reader)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _keepalive_options() -> list[tuple[int, int, int]]:
    """The SDK's keep-alive socket options (anthropic 2.14 _base_client.py ``_DefaultAsyncHttpxClient``)."""
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPINTVL", 60), ("TCP_KEEPCNT", 5), ("TCP_KEEPIDLE", 60)):
        number = getattr(socket, name, None)
        if number is not None:
            options.append((socket.IPPROTO_TCP, number, value))
    if sys.platform == "darwin" and getattr(socket, "TCP_KEEPINTVL", None) is None:
        options.append((socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPALIVE", 0x10), 60))
    return options


def model_http_client(*, verify: ssl.SSLContext | bool = True) -> httpx2.AsyncClient:
    """The SDK's default client, its connections made and read by ``AsyncioBackend``."""
    transport = httpx2.AsyncHTTPTransport(
        verify=verify, limits=anthropic.DEFAULT_CONNECTION_LIMITS, socket_options=_keepalive_options()
    )
    # httpx2 builds its httpcore2 connection pool itself and takes no backend: the pool's is replaced
    # (httpcore2.AsyncConnectionPool keeps it as ``_network_backend`` and asks it for every new
    # connection; tests/stories/generation/test_network.py checks that it is the one used).
    pool = getattr(transport, "_pool", None)
    if isinstance(pool, httpcore2.AsyncConnectionPool) and hasattr(pool, "_network_backend"):
        pool._network_backend = AsyncioBackend()
    return anthropic.DefaultAsyncHttpxClient(transport=transport)

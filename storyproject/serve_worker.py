"""One server process of ``make serve``: daphne's command line, with a graceful stop.

Started by ``storyproject.serve`` as ``python -m storyproject.serve_worker --endpoint
fd:fileno=N:domain=INET6 [daphne options] storyproject.asgi:application``; it takes every daphne option.
The inherited socket is adopted here with its family (daphne's own ``--fd`` takes every socket for IPv4). Plain daphne stops on SIGTERM at once and
cancels every running application, so a writer's generation would end half-written. Here SIGTERM (or
SIGINT) first closes the listening socket and ends kept-alive HTTP connections (idle ones at once, busy
ones after their response), so the other processes take the new connections and requests, then waits
until this process runs no generation and answers no HTTP request, up to ``SERVE_GRACEFUL_SECONDS``.
The runs still going then are handed to another process (stories.generation.handover: their leases
released, for a surviving process or the next start to resume them under the same id), or cancelled
when they cannot be resumed. The WebSockets still open are then closed with 4503 (a client following a
run attaches to it on another process), and daphne stops. A
draining process resumes no orphaned run itself. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import re
import signal
import socket
import stat
import sys
import threading
import time
import weakref
from types import FrameType
from typing import Any

from daphne.cli import CommandLineInterface
from daphne.http_protocol import WebRequest
from daphne.server import Server
from twisted.internet import defer, reactor, unix
from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.internet.error import ReactorNotRunning
from twisted.web.http import HTTPChannel

logger = logging.getLogger("storyproject.serve")

# How often a draining process looks whether its work is done.
_DRAIN_POLL_SECONDS = 0.2
# How long the hand-over of the runs left at the deadline may take before the process stops anyway.
# (Within the supervisor's margin, storyproject.serve._EXIT_MARGIN_SECONDS, with _EXIT_SECONDS.)
_HAND_OVER_SECONDS = 10.0
# How long a stopping process waits for its WebSocket clients to answer its close frames (within the
# same margin).
_SOCKETS_CLOSE_SECONDS = 1.0
# How often it looks whether the requests it answers at its stop are answered.
_ANSWERED_POLL_SECONDS = 0.02
# How long a stopped process waits for its threads before it exits without them.
_EXIT_SECONDS = 5.0
# prctl(2): the signal this process gets when its parent dies.
_PR_SET_PDEATHSIG = 1
# The supervisor's listening socket, as it names it: descriptor and address family (Twisted's names).
# daphne's own "fd:" endpoint would hand Twisted a string for the family, which it does not take.
_INHERITED = re.compile(r"fd:fileno=(\d+):domain=(INET|INET6|UNIX)")


class DrainingServer(Server):
    """daphne's Server that stops accepting on a signal and stops once its work is done."""

    endpoints: list[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Our handlers, not Twisted's (which stop the reactor at once).
        kwargs["signal_handlers"] = False
        super().__init__(*args, **kwargs)
        self._ports: list[Any] = []
        # Every HTTP connection this process accepted (Twisted's protocol per connection), while it is open.
        self._http_connections: weakref.WeakSet[Any] = weakref.WeakSet()
        self._drain_deadline: float | None = None
        self._inherited = [match for ep in self.endpoints if (match := _INHERITED.fullmatch(str(ep)))]
        self.endpoints = [ep for ep in self.endpoints if not _INHERITED.fullmatch(str(ep))]

    def run(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        reactor.callWhenRunning(self._inherited_listen)
        reactor.callWhenRunning(self._http_connections_track)
        super().run()

    def _http_connections_track(self) -> None:
        """Remember each HTTP connection daphne's factory (made by Server.run) builds."""
        build = self.http_factory.buildProtocol

        def tracked(address: Any) -> Any:
            protocol = build(address)
            if protocol is not None:
                self._http_connections.add(protocol)
            return protocol

        self.http_factory.buildProtocol = tracked

    def _inherited_listen(self) -> None:
        """Listen on the supervisor's sockets, each adopted with its own address family."""
        for match in self._inherited:
            fd, family = int(match[1]), getattr(socket, f"AF_{match[2]}")
            if family == socket.AF_UNIX:
                listening = defer.maybeDeferred(_unix_adopt, fd, self.http_factory)
            else:
                listening = AdoptedStreamServerEndpoint(reactor, fd, family).listen(self.http_factory)
            listening.addCallback(self.listen_success)
            listening.addErrback(self.listen_error)
            self.listeners.append(listening)

    def listen_success(self, port: Any) -> None:
        # Twisted listens on a duplicate of the inherited descriptor and closes the original
        # (AdoptedStreamServerEndpoint.listen), so stopListening releases this process's hold on it.
        self._ports.append(port)
        super().listen_success(port)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        reactor.callFromThread(self._drain_start)

    def _drain_start(self) -> None:
        if self._drain_deadline is not None:
            self.stop()  # A second signal: the operator does not want to wait.
            return
        from django.conf import settings

        from stories.consumers import sockets_idle_close
        from stories.generation.handover import process_stop_begin
        from stories.generation.resume import orphans_watch_stop

        process_stop_begin()
        self._drain_deadline = time.monotonic() + settings.SERVE_GRACEFUL_SECONDS
        for port in self._ports:
            port.stopListening()
        self._keep_alive_end()
        # Its WebSockets too: idle ones are closed, and one that asks for a new run (stories.consumers).
        _keep(asyncio.ensure_future(sockets_idle_close()))
        # A stopping process takes on no orphaned run (it would have to hand it over again).
        _keep(asyncio.ensure_future(orphans_watch_stop()))
        self._drain_check()

    def _keep_alive_end(self) -> None:
        """No new request on a kept-alive connection either: idle ones are closed now, busy ones after
        their response. Otherwise a reverse proxy's kept-alive upstream connections (nginx's `keepalive`)
        would go on bringing new requests, and new generations, to a process that is stopping."""
        for protocol in list(self._http_connections):
            channel = getattr(protocol, "_channel", None)
            if not isinstance(channel, HTTPChannel) or getattr(channel.transport, "disconnected", True):
                continue
            # Asked again for each request on the connection (HTTPChannel.allHeadersReceived).
            channel.checkPersistence = _not_persistent  # type: ignore[method-assign]
            if not channel.requests:
                channel.loseConnection()
                continue
            # A request being answered (or a WebSocket it became): the connection ends with it.
            channel.persistent = False
            request = channel.requests[0]
            if not request.startedWriting:
                request.responseHeaders.setRawHeaders(b"Connection", [b"close"])

    def _drain_check(self) -> None:
        assert self._drain_deadline is not None
        if not self._busy():
            self._sockets_close_then_stop()
        elif time.monotonic() >= self._drain_deadline:
            self._hand_over()
        else:
            reactor.callLater(_DRAIN_POLL_SECONDS, self._drain_check)  # type: ignore[arg-type]

    def _hand_over(self) -> None:
        """Past the graceful period: hand the runs still going to another process, then stop."""
        from stories.generation.handover import runs_hand_over

        handing = asyncio.ensure_future(asyncio.wait_for(runs_hand_over(), _HAND_OVER_SECONDS))
        _keep(handing)
        handing.add_done_callback(self._handed_over)

    def _handed_over(self, handing: asyncio.Future[dict[str, int]]) -> None:
        error = None if handing.cancelled() else handing.exception()
        if handing.cancelled() or error is not None:
            logger.error("the runs could not all be handed over in time", exc_info=error)
        else:
            logger.info("graceful period over; runs still going: %s", handing.result() or "none")
        self._sockets_close_then_stop()

    def _sockets_close_then_stop(self) -> None:
        """Close the WebSockets still open with 4503 (stories.consumers.sockets_close), answer the
        blocking requests still waiting for a run with 503 ``server_stopping`` (stories.runs.follow),
        then stop."""
        from stories.consumers import sockets_close
        from stories.runs.follow import blocking_follows_end

        blocking_follows_end()
        closing = asyncio.ensure_future(
            asyncio.gather(sockets_close(seconds=_SOCKETS_CLOSE_SECONDS), self._requests_answered())
        )
        _keep(closing)
        closing.add_done_callback(lambda _: self.stop())

    async def _requests_answered(self) -> None:
        """Until no HTTP request is being answered, for at most _SOCKETS_CLOSE_SECONDS."""
        deadline = time.monotonic() + _SOCKETS_CLOSE_SECONDS
        while self._http_busy() and time.monotonic() < deadline:
            await asyncio.sleep(_ANSWERED_POLL_SECONDS)

    def stop(self) -> None:
        # Twice is possible: a second signal while the sockets are being closed, then their end.
        with contextlib.suppress(ReactorNotRunning):
            super().stop()

    def _busy(self) -> bool:
        from stories.services import generation_runs_running_here

        return bool(generation_runs_running_here()) or self._http_busy()

    def _http_busy(self) -> bool:
        """An HTTP request still being answered (an open WebSocket with no generation is not work)."""
        return any(
            isinstance(protocol, WebRequest)
            and (instance := details.get("application_instance")) is not None
            and not instance.done()
            for protocol, details in self.connections.items()
        )


def _not_persistent(request: Any, version: bytes) -> bool:
    """HTTPChannel.checkPersistence for a stopping process: every response closes its connection."""
    request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
    return False


def _unix_adopt(fd: int, factory: Any) -> Any:
    """A Unix socket adopted as it is. Twisted's adoption (reactor.adoptStreamPort) makes the socket
    file world-writable (unix.Port's default mode, 0o666); the supervisor chose its mode (0o660)."""
    port = unix.Port._fromListeningDescriptor(reactor, fd, factory)
    with socket.socket(fileno=os.dup(fd)) as inherited:
        port.mode = stat.S_IMODE(os.stat(inherited.getsockname()).st_mode)
    port.startListening()
    return port


# Tasks started from the reactor's callbacks, kept until done: the event loop holds them weakly.
_tasks: set[asyncio.Future[Any]] = set()


def _keep(task: asyncio.Future[Any]) -> None:
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


class DrainingCommandLine(CommandLineInterface):
    server_class = DrainingServer


def _stop_with_the_supervisor() -> None:
    """Ask Linux for a SIGTERM (a graceful stop) when the supervisor dies, even by SIGKILL.

    Without it a killed supervisor leaves its processes serving on, unsupervised, holding the port.
    """
    if not sys.platform.startswith("linux"):
        return
    supervisor = os.getppid()
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before the request was made
        sys.exit(0)


def _exit_even_if_threads_wait() -> None:
    """Exit within _EXIT_SECONDS once daphne has stopped, whatever threads still wait.

    A thread of a blocking view waits on the event loop for a run's events (a run handed over, or
    followed from another process without Redis); with the loop stopped it would wait forever, and
    Python waits for such threads before it exits.
    """
    timer = threading.Timer(_EXIT_SECONDS, os._exit, args=(0,))
    timer.daemon = True
    timer.start()


if __name__ == "__main__":
    _stop_with_the_supervisor()
    DrainingCommandLine().run(sys.argv[1:])
    _exit_even_if_threads_wait()

"""One server process of ``make serve``: daphne's command line, with a graceful stop.

Started by ``storyproject.serve`` as ``python -m storyproject.serve_worker --fd N [daphne options]
storyproject.asgi:application``; it takes every daphne option. Plain daphne stops on SIGTERM at once and
cancels every running application, so a writer's generation would end half-written. Here SIGTERM (or
SIGINT) first closes the listening socket, so the other processes take the new connections, then waits
until this process runs no generation and answers no HTTP request, up to ``SERVE_GRACEFUL_SECONDS``;
only then does daphne stop (and close the sockets that stay open). A second signal stops at once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import time
from types import FrameType
from typing import Any

from daphne.cli import CommandLineInterface
from daphne.http_protocol import WebRequest
from daphne.server import Server
from twisted.internet import reactor

# How often a draining process looks whether its work is done.
_DRAIN_POLL_SECONDS = 0.2
# prctl(2): the signal this process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


class DrainingServer(Server):
    """daphne's Server that stops accepting on a signal and stops once its work is done."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Our handlers, not Twisted's (which stop the reactor at once).
        kwargs["signal_handlers"] = False
        super().__init__(*args, **kwargs)
        self._ports: list[Any] = []
        self._drain_deadline: float | None = None

    def run(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        super().run()

    def listen_success(self, port: Any) -> None:
        # Twisted listens on a duplicate of the inherited descriptor and closes the original
        # (AdoptedStreamServerEndpoint.listen), so stopListening releases this process's hold on it.
        self._ports.append(port)
        super().listen_success(port)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        reactor.callFromThread(self._drain_start)  # type: ignore[attr-defined]

    def _drain_start(self) -> None:
        if self._drain_deadline is not None:
            self.stop()  # A second signal: the operator does not want to wait.
            return
        from django.conf import settings

        self._drain_deadline = time.monotonic() + settings.SERVE_GRACEFUL_SECONDS
        for port in self._ports:
            port.stopListening()
        self._drain_check()

    def _drain_check(self) -> None:
        assert self._drain_deadline is not None
        if not self._busy() or time.monotonic() >= self._drain_deadline:
            self.stop()
            return
        reactor.callLater(_DRAIN_POLL_SECONDS, self._drain_check)  # type: ignore[arg-type]

    def _busy(self) -> bool:
        from stories.services import generation_runs_running_here

        if generation_runs_running_here():
            return True
        # An HTTP request still being answered (an open WebSocket with no generation is not work).
        return any(
            isinstance(protocol, WebRequest)
            and (instance := details.get("application_instance")) is not None
            and not instance.done()
            for protocol, details in self.connections.items()
        )


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


if __name__ == "__main__":
    _stop_with_the_supervisor()
    DrainingCommandLine().run(sys.argv[1:])

"""How many bytes a WebSocket connection holds that its client has not read yet: an ASGI scope extension.

ASGI gives a WebSocket application no flow control: ``send`` never waits, and daphne writes each
message into the connection's Twisted transport at once, which keeps what the client has not read in
memory. A client that stops reading while the application goes on sending (a run's events, or an answer
to each of its own messages: a script that sent thousands of ``attach`` messages for a finished run got
the whole run replayed into that buffer for each one, about 1 MB more of the process's memory a second
until daphne dropped it some 50 s later) grew the process without bound.

daphne hands each application ``send = partial(server.handle_reply, protocol)``; ``unsent_extension_add``
reads the protocol's transport from it and puts a reader of its unsent bytes in the scope under
``UNSENT_BYTES``, which the consumer (``stories.consumers``) asks before it sends. Under another server,
or the tests' ``WebsocketCommunicator``, the extension is absent and ``unsent_reader`` answers 0 always.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

UNSENT_BYTES = "story.unsent_bytes"


def unsent_extension_add(scope: dict[str, Any], send: Any) -> dict[str, Any]:
    """``scope`` with the unsent-bytes reader of daphne's connection behind ``send``, when it is one."""
    transport = _daphne_transport(send)
    if transport is None:
        return scope
    extensions = dict(scope.get("extensions") or {})
    extensions[UNSENT_BYTES] = functools.partial(_transport_unsent, transport)
    return {**scope, "extensions": extensions}


def unsent_reader(scope: dict[str, Any]) -> Callable[[], int]:
    """How many bytes the connection of ``scope`` holds unsent (0 when the server does not say)."""
    reader = (scope.get("extensions") or {}).get(UNSENT_BYTES)
    return reader if callable(reader) else _nothing


def _daphne_transport(send: Any) -> Any:
    if not isinstance(send, functools.partial) or len(send.args) != 1:
        return None
    if getattr(send.func, "__name__", "") != "handle_reply":
        return None
    transport = getattr(send.args[0], "transport", None)
    # twisted.internet.abstract.FileDescriptor's write buffer (a TCP connection; not TLS in Twisted).
    if not all(hasattr(transport, name) for name in ("dataBuffer", "offset", "_tempDataLen")):
        return None
    return transport


def _transport_unsent(transport: Any) -> int:
    # What FileDescriptor.doWrite has yet to hand the kernel: the rest of dataBuffer past offset, and
    # the writes queued since (_tempDataBuffer, counted by _tempDataLen).
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def _nothing() -> int:
    return 0

"""The interpreter's settings for a server process: how threads share the GIL, and when the GC runs.

A daphne process runs every stream on its event loop thread and every database call on the loop's
thread pool (storyproject.db). Under load the loop thread always has work, and a pool thread that
gave the GIL up for a PostgreSQL round trip waits for it again until the loop thread is made to drop
it: after ``sys.getswitchinterval()``, 5 ms by default (Python's "convoy effect", bpo-7946). A
generation makes about ten such calls, each of a few round trips. ``STORY_GIL_SWITCH_INTERVAL_MS`` (1 ms
by default) makes the loop thread hand the GIL over sooner.

The cyclic garbage collector ran about 15 times a second at 200 streams and took 6.5 % of the
process's CPU time (timed with ``gc.callbacks``), most of it scanning objects loaded at start-up
(Django, the SDK, the models) that never become garbage. ``gc.freeze()`` moves every object the
collector tracks into a permanent generation that later collections ignore, and a first-generation
threshold of ``STORY_GC_THRESHOLD`` (50,000 allocations, against Python 3.11's 700) made it run about
once every ten seconds there. Cycles are still collected; a process holds them a little longer.
Figures: bench/results/steady.md (about 5-10 % less CPU per token, within the run-to-run spread).

Twisted's HTTP request parses every POST form body (URL-encoded or multipart) into ``request.args``
when it has arrived, on the event loop thread, before daphne hands the raw body to the application,
and daphne never reads ``args``. So Django parsed each form twice, and any client's large form body
(even one the application then refuses with a 413) held every stream of the process: 20 MB of
``a=1&`` or 11 MB of small multipart parts, about 2 s each. A multipart body Twisted could not parse
was its own bare 400, never seen by the application. ``daphne_form_parsing_off`` turns that parse off.

autobahn, under daphne's WebSocket protocol, pretty-prints its thirty-odd settings with ``pformat`` at
every connection for a debug line, whether or not debug lines are logged (txaio drops the line, not the
work): 0.8-1.5 % of a busy process's Python time with a socket per generation (py-spy,
docs/performance.md). ``autobahn_connection_log_unformatted`` hands the line the list as it is, which
a debug log (if one is ever on) prints on one line.

daphne passes a WebSocket close's code to autobahn and drops its reason (``handle_reply`` calls
``serverClose(code=...)``; django/daphne issue 374), which ASGI's ``websocket.close`` carries and autobahn
sends: the consumer's reasons (docs/protocol.md's close codes: 4429 ``busy`` or ``too_many_messages``)
reached Channels' test communicator and never a client. ``daphne_close_reason_sent`` sends them.

Twisted reads a request's whole body before daphne hands the request to the application, and spools a
body past 100 KB (or of no declared length) to a temporary file whatever its size: the application's
413 past ``HTTP_MAX_BODY_BYTES`` came once it had all arrived, so one client, anonymous (the 401 comes
after the body too), filled the server's disk with one request. ``daphne_request_body_bounded`` keeps
at most ``HTTP_MAX_BODY_BYTES`` + 1 bytes of a body and drops the rest as it arrives; the application
then answers 413 as before (a declared length past the limit at once, a chunked body once it reads one
byte past it). The client still sends its whole body: a front proxy's limit stops it sooner
(docs/operations.md).

daphne writes the status line with Twisted's reason phrases (``twisted.web.http.RESPONSES``), which lack
some the application answers with: a 429 went out as ``429 Unknown Status``. ``daphne_reason_phrases_known``
adds the standard library's (``http.HTTPStatus``) for every status Twisted does not know.

Twisted's HTTP channel reads a request line and each header line of at most 16,384 bytes
(``LineReceiver.MAX_LENGTH``), and at most 16,384 bytes of them all (``HTTPChannel.totalHeadersSize``):
a longer request line (a URL such as ``/api/personas/contexts/?names=`` with 17,000 characters) closed the
connection without a response, which clients report as a dropped connection (an HTTP client retries it,
a browser shows its own error page), and too many header bytes was a bare 400. ``daphne_long_request_refused``
answers 414 URI Too Long for a request line (RFC 9110 section 15.5.15) and 431 Request Header Fields Too
Large for the headers (RFC 6585 section 5; also past Twisted's 500 header fields), with a line of text
that names the limit, then reads and drops what the client still sends until it closes (at most
``_REFUSED_LINGER_SECONDS``): closing with unread bytes in the socket sends a TCP reset, which can
destroy the answer before the client reads it.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import Any

from django.conf import settings


def serving_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` is the one daphne serves on for the life of its process: daphne/server.py creates
    it at import (``twisted_loop``) and runs Twisted's asyncio reactor on it. What is opened on it (the
    model's aiohttp clients, storyproject.loop_db's connections) lives as long as the process."""
    daphne_server = sys.modules.get("daphne.server")
    return daphne_server is not None and getattr(daphne_server, "twisted_loop", None) is loop


def server_runtime_tune() -> None:
    """Apply STORY_GIL_SWITCH_INTERVAL_MS and STORY_GC_THRESHOLD to this process (once start-up is done)."""
    sys.setswitchinterval(settings.STORY_GIL_SWITCH_INTERVAL_MS / 1000)
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(settings.STORY_GC_THRESHOLD, second, third)


def autobahn_connection_log_unformatted() -> None:
    """Make autobahn's per-connection debug line skip ``pformat`` (see the module docstring)."""
    from autobahn.websocket import protocol

    protocol.pformat = _as_it_is  # type: ignore[assignment]


def _as_it_is(value: Any) -> Any:
    return value


def daphne_form_parsing_off() -> None:
    """Make daphne's requests skip Twisted's parse of POST form bodies (see the module docstring)."""
    from daphne.http_protocol import WebRequest

    if getattr(WebRequest, "_form_parsing_off", False):
        return
    init = WebRequest.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        # twisted.web.http.Request reads this in requestReceived (its parsePOSTFormSubmission argument).
        self._parsePOSTFormSubmission = False

    WebRequest.__init__ = __init__
    WebRequest._form_parsing_off = True


def daphne_request_body_bounded() -> None:
    """Make daphne's requests keep at most ``HTTP_MAX_BODY_BYTES`` + 1 bytes of a body (see the module
    docstring)."""
    from daphne.http_protocol import WebRequest

    if getattr(WebRequest, "_body_bounded", False):
        return
    got_length = WebRequest.gotLength

    def gotLength(self: Any, length: int | None) -> None:
        got_length(self, length)
        self._body_room = settings.HTTP_MAX_BODY_BYTES + 1

    def handleContentChunk(self: Any, data: bytes) -> None:
        room = self._body_room
        if room > 0:
            self.content.write(data[:room])
            self._body_room = room - len(data)

    WebRequest.gotLength = gotLength
    WebRequest.handleContentChunk = handleContentChunk
    WebRequest._body_bounded = True


def daphne_reason_phrases_known() -> None:
    """Give daphne's status lines a reason phrase for every standard status (see the module docstring)."""
    from http import HTTPStatus

    from twisted.web import http

    for status in HTTPStatus:
        http.RESPONSES.setdefault(status.value, status.phrase.encode("ascii"))


def daphne_close_reason_sent() -> None:
    """Make daphne send a ``websocket.close``'s reason in the close frame (see the module docstring)."""
    from daphne.ws_protocol import WebSocketProtocol

    if getattr(WebSocketProtocol, "_close_reason_sent", False):
        return
    handle_reply = WebSocketProtocol.handle_reply

    def handle_reply_with_reason(self: Any, message: dict[str, Any]) -> None:
        reason = message.get("reason") if message.get("type") == "websocket.close" else None
        if not reason or self.state == self.STATE_CONNECTING:
            # No reason, or a handshake refused (an HTTP 403, which has no close frame): daphne's own way.
            handle_reply(self, message)
            return
        # daphne's serverClose with the reason; autobahn cuts it to the 123 bytes a close frame holds.
        code = message.get("code")
        self.sendClose(code=1000 if code is None else code, reason=reason)

    WebSocketProtocol.handle_reply = handle_reply_with_reason
    WebSocketProtocol._close_reason_sent = True


# How long a connection answered 414 or 431 stays open, its input read and dropped, for its client to read
# the answer and close first (nginx's lingering_timeout is 5 s).
_REFUSED_LINGER_SECONDS = 5
# RFC 9110's and RFC 6585's phrases (Python before 3.13 says "Request-URI Too Long", RFC 2616's).
_REFUSED_PHRASES = {414: "URI Too Long", 431: "Request Header Fields Too Large"}


def daphne_long_request_refused() -> None:
    """Make daphne answer a request line or header section past Twisted's limits with 414 or 431 (see the
    module docstring)."""
    from twisted.web.http import HTTPChannel

    if getattr(HTTPChannel, "_long_request_refused", False):
        return
    line_received = HTTPChannel.lineReceived
    header_received = HTTPChannel.headerReceived

    def lineLengthExceeded(self: Any, line: bytes) -> None:
        # LineReceiver's own answer was to close the connection, sending nothing.
        _too_long_refuse(self, f"one line is longer than {self.MAX_LENGTH} bytes")

    def lineReceived(self: Any, line: bytes) -> None:
        # HTTPChannel's check, made first: past it, HTTPChannel answered a bare 400.
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            _too_long_refuse(
                self, f"with the request line, they are longer than {self.totalHeadersSize} bytes"
            )
            return
        line_received(self, line)

    def headerReceived(self: Any, line: bytes) -> bool:
        if self._receivedHeaderCount >= self.maxHeaders:
            _request_refuse(self, 431, f"The request has more than {self.maxHeaders} header fields.")
            return False
        return bool(header_received(self, line))

    HTTPChannel.lineLengthExceeded = lineLengthExceeded  # type: ignore[method-assign]
    HTTPChannel.lineReceived = lineReceived  # type: ignore[method-assign]
    HTTPChannel.headerReceived = headerReceived  # type: ignore[method-assign]
    HTTPChannel._long_request_refused = True  # type: ignore[attr-defined]


def _too_long_refuse(channel: Any, why: str) -> None:
    # Still waiting for its first line, the request line is what is too long (the URL, as a rule).
    if channel._HTTPChannel__first_line:
        _request_refuse(channel, 414, f"The request line (its URL) is too long: {why}.")
    else:
        _request_refuse(channel, 431, f"The request's header fields are too long: {why}.")


def _request_refuse(channel: Any, status: int, message: str) -> None:
    """Answer ``status`` with ``message`` and close, reading and dropping the rest of the request."""
    body = f"{message}\n".encode()
    head = (
        f"HTTP/1.1 {status} {_REFUSED_PHRASES[status]}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    channel.transport.write(head.encode("ascii") + body)
    # Nothing more of this connection is parsed (Twisted does the same after a request that closes it).
    channel.dataReceived = channel.lineReceived = _dropped
    channel.clearLineBuffer()
    channel.persistent = False
    # Our side is closed once the answer is written; the client's side when it has read it (then the
    # channel's connectionLost), or after the linger, by the channel's own timeout.
    channel.setTimeout(_REFUSED_LINGER_SECONDS)
    channel.transport.loseWriteConnection()


def _dropped(*args: Any) -> None:
    return None

"""Django's ASGI handler with the whole HTTP stack (middleware and views) run in one thread hop.

Every view here is synchronous, and so is every middleware at heart (Django's own run their hooks in
a worker thread when called asynchronously). Django's own ASGI handler runs its middleware chain in
async mode, which costs a trip between the event loop and a worker thread for
each ``process_request`` and ``process_response`` of every ``MiddlewareMixin`` middleware, and one more
for the view: about a dozen per request (an anonymous 401 through daphne took 2.76 ms with it and
1.54 ms with this handler, medians of 300 on two cores; a static file takes 1.45 ms). This
handler loads the chain in sync mode, as the WSGI handler does, and enters it once, on the request's
thread-sensitive worker thread. Reading the body and sending the response stay asynchronous, and the
WebSocket side (Channels) is untouched.

Request bodies are bounded here too. Django's handler spools the whole body, whatever its size, and
a body sent with ``Transfer-Encoding: chunked`` reaches the app with no Content-Length, which DRF and
Django's multipart parser read as "no body": a chunked JSON request was answered as if it were empty.
This handler reads at most ``HTTP_MAX_BODY_BYTES`` (413 past it, or at once when a Content-Length
says so) and gives a body that came without a Content-Length the one it turned out to have.

Work a view put off with ``storyproject.after_response`` (a cold persona batch's cache write) runs here
once the response is handed to the server, on the request's worker thread.

A streamed response (a run's event stream) that fails after its status line is ended here, the error
logged: raised on, it reached daphne, whose 500 page cannot follow a status line already sent, and the
connection stayed open with its client waiting for ever for the rest of the stream. Ended, the client
sees the stream end (an EventSource reconnects from its last event).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import AsyncIterator, Mapping
from typing import IO, Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestAborted, RequestDataTooBig
from django.core.handlers.asgi import ASGIHandler, ASGIRequest
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse, StreamingHttpResponse
from django.template import loader

from storyproject import after_response

logger = logging.getLogger(__name__)

Scope = Mapping[str, Any]


class SyncStackASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        response = await sync_to_async(self.get_response, thread_sensitive=True)(request)
        if request.method == "HEAD":
            _body_drop(response)
        return response

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        # Work the view put off until its response is sent (storyproject.after_response): the view's
        # thread sees this queue through the context sync_to_async copies.
        with after_response.collected() as queue:
            try:
                if _declared_length(scope) > settings.HTTP_MAX_BODY_BYTES:
                    raise RequestDataTooBig
                await super().handle(scope, receive, send)
            except RequestDataTooBig:
                await self.send_response(_too_large(scope), send)
            finally:
                # Django's handle() returns once the response is handed to the server and closed;
                # awaiting the worker thread lets the event loop write it out meanwhile.
                if queue.pending:
                    await sync_to_async(queue.drain, thread_sensitive=True)()
                else:
                    queue.drain()

    async def send_response(self, response: HttpResponseBase, send: Any) -> None:
        if not response.streaming:
            await super().send_response(response, send)
            return
        started = False

        async def sent(message: Mapping[str, Any]) -> None:
            nonlocal started
            await send(message)
            started = True

        try:
            await super().send_response(response, send=sent)
        except Exception:
            if not started:
                raise
            logger.exception("a streamed response failed after it started; its body is ended here")
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def read_body(self, receive: Any) -> IO[bytes]:
        """Django's ``read_body``, raising ``RequestDataTooBig`` once the body passes the limit."""
        limit = settings.HTTP_MAX_BODY_BYTES
        # Not a context manager: the file outlives this method (the request reads it, then closes it).
        body_file = tempfile.SpooledTemporaryFile(  # noqa: SIM115
            max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b"
        )
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                body_file.close()
                raise RequestAborted
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                body_file.close()
                raise RequestDataTooBig
            body_file.write(chunk)
            if not message.get("more_body", False):
                break
        body_file.seek(0)
        return body_file

    def create_request(
        self, scope: Scope, body_file: IO[bytes]
    ) -> tuple[ASGIRequest, None] | tuple[None, HttpResponseBase]:
        return super().create_request(_with_content_length(scope, body_file), body_file)


def _body_drop(response: HttpResponseBase) -> None:
    """Leave a HEAD's response its status and headers (``Content-Length`` included) and no body.

    daphne drops only the first chunk of a HEAD's body: it calls Twisted's ``Request.write`` unbound,
    past the no-op Twisted puts in place of it once the headers are out. Every later chunk (past 64 KiB,
    or each event of a stream) was written, and the client read it as its next response's status line.
    A stream is not read at all: a HEAD of a run's events followed the run to its end. Its own
    ``close`` (an SSE stream's frees its slot) still runs when the response is closed.
    """
    if isinstance(response, StreamingHttpResponse):
        response.streaming_content = _nothing()
    elif isinstance(response, HttpResponse):
        response.content = b""


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0  # Django reads an unparsable Content-Length as none as well
    return 0


def _with_content_length(scope: Scope, body_file: IO[bytes]) -> Scope:
    """The scope, with a Content-Length header giving the body's size when the client sent none."""
    if any(name.lower() == b"content-length" for name, _ in scope.get("headers", [])):
        return scope
    size = body_file.seek(0, 2)
    body_file.seek(0)
    if not size:
        return scope
    return {**scope, "headers": [*scope.get("headers", []), (b"content-length", str(size).encode())]}


def _too_large(scope: Scope) -> HttpResponse:
    """The 413 for a body past ``HTTP_MAX_BODY_BYTES``: DRF's ``{"detail": ...}`` under /api/ (as for
    a body past ``API_MAX_BODY_BYTES``), the site's page elsewhere. A writer importing a file a few
    megabytes large got a bare line of text ("413 Payload too large: ... 2686976 bytes.") where the
    page says what to do; like the 500 page, it needs no request context.

    It is sent before any middleware runs, so it carries by hand the headers they give every response
    (SecurityMiddleware, XFrameOptionsMiddleware, the project's CSP, stricter here: no script at all).
    """
    response: HttpResponse
    if str(scope.get("path", "")).startswith("/api/"):
        message = f"The request body is larger than {settings.HTTP_MAX_BODY_BYTES} bytes."
        response = JsonResponse({"detail": message}, status=413)
    else:
        limits = {"limit": settings.HTTP_MAX_BODY_BYTES, "import_limit": settings.STORY_IMPORT_MAX_BYTES}
        response = HttpResponse(loader.get_template("too_large.html").render(limits), status=413)
    response["Content-Security-Policy"] = "default-src 'none'; style-src 'self'; frame-ancestors 'none'"
    response["X-Frame-Options"] = "DENY"
    response["X-Content-Type-Options"] = "nosniff"
    if settings.SECURE_REFERRER_POLICY:
        response["Referrer-Policy"] = settings.SECURE_REFERRER_POLICY
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        response["Cross-Origin-Opener-Policy"] = settings.SECURE_CROSS_ORIGIN_OPENER_POLICY
    return response

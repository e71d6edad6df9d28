"""The WebSocket interface of generation: ``/ws/generate/``. Parses messages, runs the pipeline, sends its events.

One generation at a time per connection; it runs as its own task so that ``cancel`` (and a
disconnect) are handled while it streams. The socket's credential is asked again before every message
and every 30 seconds (``stories.ws_sessions``): once it is revoked, a running generation is cancelled
(the run is recorded ``cancelled``), the client gets ``error unauthenticated`` and the socket is closed
with 4401. A user past ``STORY_WS_MAX_SOCKETS_PER_USER`` open sockets gets ``error busy`` and 4429.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing, suppress
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from stories import ws_sessions
from stories.errors import GenerationError
from stories.generation.pipeline import generation_run
from stories.generation.regenerate import scene_regenerate_request_parse, scene_regenerate_run
from stories.generation.requests import generation_request_parse
from stories.ws_sessions import SocketSession, socket_session_check, socket_session_close, socket_session_open

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_TOO_MANY_SOCKETS = 4429
_CLOSE_CODES = {"unauthenticated": CLOSE_UNAUTHENTICATED, "busy": CLOSE_TOO_MANY_SOCKETS}
# How long a disconnect waits for the cancelled generation to record itself.
_CANCEL_WAIT_SECONDS = 5.0


class GenerateConsumer(AsyncWebsocketConsumer):
    # No channel layer: nothing is sent to this consumer from outside its socket, and without one a
    # Redis outage cannot break the socket (Channels would otherwise poll Redis for this channel).
    channel_layer_alias = None  # type: ignore[assignment]
    task: asyncio.Task[None] | None = None
    session: SocketSession | None = None
    # Why the socket was closed; messages still in flight get the same error.
    refusal: GenerationError | None = None
    watch: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        # Accepted first, so that a refused client learns why (a refused handshake carries no reason).
        await self.accept()
        try:
            self.session = await socket_session_open(scope=self.scope)
        except GenerationError as error:
            await self._refuse(error)
            return
        self.watch = asyncio.create_task(self._watch())

    async def disconnect(self, code: int) -> None:
        if self.watch is not None:
            self.watch.cancel()
        await self._stop(wait=True)
        if self.session is not None:
            await socket_session_close(session=self.session)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.refusal is not None or self.session is None:
            await self.send_event((self.refusal or _signed_out_error()).as_event())
            return
        if not await socket_session_check(session=self.session):
            await self._signed_out()
            return
        try:
            message = _message_parse(text_data, bytes_data)
        except GenerationError as error:
            await self.send_event(error.as_event())
            return
        if message["type"] == "cancel":
            await self._cancel()
        else:
            await self._generate(message)

    async def send_event(self, event: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(event, ensure_ascii=False))

    async def _watch(self) -> None:
        """While the socket is open: keep its slot, and close it once its credential no longer holds."""
        assert self.session is not None
        while True:
            await asyncio.sleep(ws_sessions.WATCH_SECONDS)
            try:
                current = await socket_session_check(session=self.session, refresh=True)
            except Exception:
                # The database or cache failing: the next message asks again, and so does the next tick.
                logger.warning("could not check an open socket's credential", exc_info=True)
                continue
            if not current:
                await self._signed_out()
                return

    async def _signed_out(self) -> None:
        # The generation is stopped first, so it is recorded cancelled and nothing is saved for a
        # credential that no longer holds; the client sees `cancelled`, then the error, then the close.
        await self._stop(wait=True)
        await self._refuse(_signed_out_error())

    async def _refuse(self, error: GenerationError) -> None:
        if self.refusal is not None:
            return
        self.refusal = error
        await self.send_event(error.as_event())
        await self.close(code=_CLOSE_CODES[error.code], reason=error.code)

    async def _generate(self, message: dict[str, Any]) -> None:
        if self.task is not None and not self.task.done():
            await self.send_event(
                GenerationError(
                    "busy", "a generation is already running on this connection", retryable=True
                ).as_event()
            )
            return
        fields = {key: value for key, value in message.items() if key != "type"}
        try:
            events = _events_for(message["type"], fields, self.scope["user"])
        except GenerationError as error:
            await self.send_event(error.as_event())
            return
        self.task = asyncio.create_task(self._run(events))

    async def _run(self, stream: AsyncIterator[dict[str, Any]]) -> None:
        try:
            async with aclosing(stream) as events:  # type: ignore[type-var]
                async for event in events:
                    await self.send_event(event)
        except asyncio.CancelledError:
            with suppress(Exception):
                await self.send_event({"type": "cancelled"})
            raise
        except Exception:
            logger.exception("generation on a WebSocket failed")
            error = GenerationError("llm_unavailable", "the generation failed unexpectedly", retryable=True)
            with suppress(Exception):
                await self.send_event(error.as_event())

    async def _cancel(self) -> None:
        if self.task is None or self.task.done():
            await self.send_event(GenerationError("invalid_request", "no generation is running").as_event())
            return
        await self._stop(wait=False)

    async def _stop(self, *, wait: bool) -> None:
        task = self.task
        if task is None or task.done():
            return
        # Cancelling the task closes the upstream request at once; see stories.generation.pipeline.
        task.cancel()
        if wait:
            with suppress(asyncio.CancelledError, asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout=_CANCEL_WAIT_SECONDS)


def _signed_out_error() -> GenerationError:
    return GenerationError(
        "unauthenticated",
        "this connection's sign-in no longer holds (logged out, token revoked or account changed)",
    )


def _message_parse(text_data: str | None, bytes_data: bytes | None) -> dict[str, Any]:
    """The client's message as a dict with a known ``type``, or GenerationError("invalid_request")."""
    if text_data is None:
        raise GenerationError("invalid_request", "send JSON text messages, not binary ones")
    limit = settings.STORY_WS_MAX_MESSAGE_BYTES
    if len(text_data) > limit or len(text_data.encode("utf-8", "surrogatepass")) > limit:
        raise GenerationError("invalid_request", f"messages are limited to {limit} bytes")
    try:
        message = json.loads(text_data, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise GenerationError("invalid_request", "the message is not valid JSON") from None
    if not isinstance(message, dict):
        raise GenerationError("invalid_request", "each message must be a JSON object with a type")
    if message.get("type") not in ("generate", "regenerate_scene", "cancel"):
        raise GenerationError(
            "invalid_request", "the message type must be 'generate', 'regenerate_scene' or 'cancel'"
        )
    return message


def _events_for(kind: str, fields: dict[str, Any], user: Any) -> AsyncIterator[dict[str, Any]]:
    """The events of a generation, or of one scene's rewrite (parallel mode); parsing errors raise."""
    if kind == "regenerate_scene":
        return scene_regenerate_run(request=scene_regenerate_request_parse(fields), user=user)
    return generation_run(request=generation_request_parse(fields), user=user)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")

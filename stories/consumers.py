"""The WebSocket interface of generation: ``/ws/generate/``. Parses messages, starts and follows runs.

A ``generate`` (or ``regenerate_scene``) starts a run that this process drives on its own
(``stories.runs.runner``); the socket only follows the run's event log, so a disconnect leaves the run
to go on and be saved. ``attach`` follows any of the writer's runs from a seq on (a reload, a second
tab, a dropped network); ``cancel`` stops the socket's run, or any of the writer's runs by id, in
whatever process runs it. One run is followed at a time per connection. The socket's credential is
asked again before every message (a ``generate``'s in its admission's own trip to the thread pool),
every 30 seconds, and within about a second of a revocation of its user's credentials
(``stories.ws_sessions``): once it is revoked, the client gets ``error
unauthenticated`` and the socket is closed with 4401. The run the socket follows is cancelled first
(recorded ``cancelled``) when that credential started it (``GenerationRun.started_by``: here, or on
another socket or request signed in with it): it must not go on spending for a signed-out writer. A run
that another credential of the writer started is only no longer followed, as an SSE stream leaves it.
A user past ``STORY_WS_MAX_SOCKETS_PER_USER`` open sockets gets ``error busy`` and 4429. A process that
is stopping (``make serve``'s graceful stop) closes its idle sockets with 4503 and closes a socket that
asks it for a new run the same way, before starting anything: the client reconnects and reaches another
process. When it stops at last (its runs ended, or handed over), every socket still open is closed with
4503 too, one following a run included: its client attaches to the run again on another process.

A client that does not read what it is sent is not sent more than about ``STORY_WS_SEND_BUFFER_BYTES``
(under daphne, which says how much a connection holds unsent: ``storyproject.send_buffer``): the run it
follows waits for it to read, an ``attach`` meanwhile is answered ``busy``, and a socket that holds
``STORY_WS_SEND_BUFFER_MAX_BYTES`` unread (answers to a flood of its own messages) is closed with 4408.

A client that sends more than ``STORY_WS_MESSAGES_PER_SECOND`` messages a second has those over it
dropped before they reach this consumer (``storyproject.ws_inbound``): it is told once (``rate_limited``),
and closed with 4429 if it goes on.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing, suppress
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from stories import ws_sessions
from stories.errors import GenerationError
from stories.generation.handover import process_stopping
from stories.generation.pipeline import generation_run
from stories.generation.regenerate import scene_regenerate_request_parse, scene_regenerate_run
from stories.generation.requests import generation_request_parse
from stories.runs.addresses import attach_parse, cancel_parse
from stories.runs.follow import (
    run_after_past_end,
    run_attached,
    run_events_follow,
    run_owned,
    run_starter,
)
from stories.runs.log import TERMINAL, event_text
from stories.runs.runner import run_cancel, run_start
from stories.ws_auth import SocketCredential, credential_fingerprint, signed_out_error, started_with
from stories.ws_sessions import (
    RevocationListener,
    SocketSession,
    revocations_listen,
    socket_session_check,
    socket_session_close,
    socket_session_current,
    socket_session_open,
)
from storyproject.logs import run_log_context_bind
from storyproject.send_buffer import unsent_reader
from storyproject.untrusted import UntrustedJSONError, json_parse_untrusted

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_TOO_MANY_SOCKETS = 4429
CLOSE_SERVER_STOPPING = 4503
CLOSE_NOT_READING = 4408
# Too many messages, as too many sockets: HTTP's 429 (the reason says which).
CLOSE_TOO_MANY_MESSAGES = 4429
_CLOSE_CODES = {"unauthenticated": CLOSE_UNAUTHENTICATED, "busy": CLOSE_TOO_MANY_SOCKETS}
# How long a signed-out socket waits for its cancelled run's ``cancelled`` before it is closed.
_CANCEL_WAIT_SECONDS = 5.0
# How often a run's follower looks again whether a client that had not read its events has read them.
_DRAIN_POLL_SECONDS = 0.05
_MESSAGE_TYPES = ("generate", "regenerate_scene", "cancel", "attach")
# This process's open sockets, for a stopping process to close the idle ones.
_open: weakref.WeakSet[GenerateConsumer] = weakref.WeakSet()


class GenerateConsumer(AsyncWebsocketConsumer):
    # No channel layer: nothing is sent to this consumer from outside its socket, and without one a
    # Redis outage cannot break the socket (Channels would otherwise poll Redis for this channel).
    channel_layer_alias = None
    # The task following the socket's run (started here, or attached), and that run's id once known.
    task: asyncio.Task[None] | None = None
    run_id: int | None = None
    # A cancel that came while the run was still being admitted: applied once its id is known.
    cancel_pending = False
    # The run followed was attached to (not started here): a new request stops following it.
    attached = False
    # The run followed was started by this socket's credential (here, or elsewhere with the same token
    # or session): a sign-out cancels it. One that another credential started is only let go.
    own = False
    # The digest of this socket's credential, as the runs it starts record it.
    started_by = ""
    # Whether an event of the run followed has been sent (a run started here: its ``accepted``).
    shown = False
    # The socket closed and let go of its slot, watch and following (``_release``): a task that still
    # has a pending cancel to apply sends nothing more.
    released = False
    # Set before the run's last event (or its refusal) is sent: the client may start the next one at
    # once, before the following task has quite finished.
    ended = False
    session: SocketSession | None = None
    # Why the socket was closed (its one error was sent with the close).
    refusal: GenerationError | None = None
    watch: asyncio.Task[None] | None = None
    # Wakes the watch when a credential of the socket's user is revoked (from any process).
    listener: RevocationListener | None = None
    # How many bytes the connection holds that the client has not read (0 when the server cannot say).
    unsent: Callable[[], int]

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels' own dispatch (and websocket_disconnect, below) first awaits aclose_old_connections:
        # a trip to Channels' one thread-sensitive thread for every message (the handshake, each
        # message, the close), which every socket of the process queues for. This consumer never uses
        # that thread: its database work goes through storyproject.db.db_call, which hands its
        # connection back when each call ends.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        # Channels' version, without its group discards (no channel layer here) and the trip above.
        await self.disconnect(message["code"])
        raise StopConsumer()

    async def story_flooded(self, message: dict[str, Any]) -> None:
        """Messages of this socket were dropped, over ``STORY_WS_MESSAGES_PER_SECOND``
        (``storyproject.ws_inbound``): the first time it is told, if it goes on it is closed."""
        if self.refusal is not None or self.session is None:
            return
        rate = message["rate"]
        if not message["closing"]:
            error = GenerationError(
                "rate_limited",
                f"this connection sent more than {rate} messages a second: those over it were dropped "
                "unanswered, and it is closed if it goes on",
                retryable=True,
                retry_after=1,
            )
            await self.send_event(error.as_event())
            return
        self.refusal = GenerationError("rate_limited", f"more than {rate} messages a second")
        logger.warning("closing a WebSocket that went on sending more than %d messages a second", rate)
        await self.close(code=CLOSE_TOO_MANY_MESSAGES, reason="too_many_messages")

    async def connect(self) -> None:
        self.unsent = unsent_reader(self.scope)
        # Accepted first, so that a refused client learns why (a refused handshake carries no reason).
        await self.accept()
        _open.add(self)
        try:
            self.session = await socket_session_open(scope=self.scope)
        except GenerationError as error:
            await self._refuse(error)
            return
        self.started_by = credential_fingerprint(self.session.credential)
        self.listener = revocations_listen(user_id=self.session.credential.user_id)
        self.watch = asyncio.create_task(self._watch())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # daphne cancels an application still running ``application_close_timeout`` (10 s) after
            # its client left (daphne/server.py, application_checker): one still working through the
            # messages a client sent before it went never reads its websocket.disconnect. Its watch
            # would then keep its slot for ever, and the writer would be refused ``busy``.
            if not self.released:
                await asyncio.shield(self._release())

    async def disconnect(self, code: int) -> None:
        await self._release()

    async def _release(self) -> None:
        """Stop watching the credential and following the run, and free the slot: once, at the end."""
        if self.released:
            return
        self.released = True
        _open.discard(self)
        if self.watch is not None:
            self.watch.cancel()
        if self.listener is not None:
            self.listener.close()
        # Only the following stops: the run goes on, and any socket may attach to it again. A cancel the
        # client sent before its run had an id is still applied (the task does, once it is admitted).
        if self.task is not None and not self.cancel_pending:
            self.task.cancel()
        if self.session is not None:
            await socket_session_close(session=self.session)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.refusal is not None or self.session is None:
            # Refused and closed: a message that was on its way meanwhile is dropped. The client has the
            # one error and the close code; sending on a closing socket raised inside daphne (an ERROR
            # traceback for every message a script sent after a refused handshake).
            return
        try:
            message = _message_parse(text_data, bytes_data)
            if message["type"] in ("generate", "regenerate_scene") and self._stopping_idle():
                await self._stopping_close()
                return
            if message["type"] == "generate" and not (self.attached and self.own and self._following()):
                # Its credential is asked in its admission's trip to the thread pool (``_credential_check``):
                # one trip fewer before the model call. A refusal before that is answered after the check.
                # Not while following a run of its own credential that it attached to: the generate
                # stops following it, and a sign-out found only then would leave that run going.
                self._generate(message.pop("type"), message, check=self._credential_check)
                return
        except GenerationError as error:
            if await self._signed_in():
                await self.send_event(error.as_event())
            return
        if not await self._signed_in():
            return
        kind = message.pop("type")
        try:
            await self._handle(kind, message)
        except GenerationError as error:
            await self.send_event(error.as_event())

    async def _signed_in(self) -> bool:
        """Whether the socket's credential still holds; when not, the socket is signed out and closed."""
        assert self.session is not None
        if await socket_session_check(session=self.session):
            return True
        await self._signed_out()
        return False

    def _credential_check(self) -> None:
        """``_signed_in``'s question, asked in a thread-pool trip that is under way (sync); raises."""
        assert self.session is not None
        if not socket_session_current(session=self.session):
            raise signed_out_error()

    async def _handle(self, kind: str, fields: dict[str, Any]) -> None:
        if kind == "cancel":
            await self._cancel(cancel_parse(fields).run_id)
        elif kind == "attach":
            address = attach_parse(fields)
            assert address.run_id is not None
            await self._attach(address.run_id, address.after, confirm=address.confirm)
        else:
            self._generate(kind, fields)

    async def send_event(self, event: dict[str, Any]) -> None:
        if self.unsent() > settings.STORY_WS_SEND_BUFFER_MAX_BYTES:
            # The client has not read what it was sent, and goes on sending messages that are answered:
            # nothing more is kept for it.
            await self._not_reading_close()
            return
        # Straight to daphne: what AsyncWebsocketConsumer.send would build, without its two calls.
        await self.base_send({"type": "websocket.send", "text": event_text(event)})

    async def _not_reading_close(self) -> None:
        """Close a socket whose client has not read ``STORY_WS_SEND_BUFFER_MAX_BYTES`` it was sent. Its
        close frame waits behind them; daphne drops the connection a second later, freeing them."""
        if self.refusal is not None:
            return
        self.refusal = GenerationError("busy", "the client does not read what this connection sends")
        logger.warning("closing a WebSocket whose client has not read %d bytes", self.unsent())
        await self.close(code=CLOSE_NOT_READING, reason="not_reading")

    async def _client_read(self) -> None:
        """Wait while the connection holds more than ``STORY_WS_SEND_BUFFER_BYTES`` the client has not read."""
        while self.unsent() > settings.STORY_WS_SEND_BUFFER_BYTES and self.refusal is None:
            await asyncio.sleep(_DRAIN_POLL_SECONDS)

    async def _watch(self) -> None:
        """While the socket is open: keep its slot, and close it once its credential no longer holds:
        asked every ``WATCH_SECONDS``, and at once (of the database) when a revocation of one of its
        user's credentials is seen, so that a signed-out socket that sends nothing, following a run
        another credential started, does not go on receiving it until the next check."""
        assert self.session is not None and self.listener is not None
        while True:
            revoked = await self.listener.wait(ws_sessions.WATCH_SECONDS)
            try:
                current = await socket_session_check(session=self.session, refresh=True, fresh=revoked)
            except Exception:
                # The database or cache failing: the next message asks again, and so does the next tick.
                logger.warning("could not check an open socket's credential", exc_info=True)
                continue
            if not current:
                await self._signed_out()
                return

    async def _signed_out(self) -> None:
        # A run this credential started is stopped first, so it is recorded cancelled and nothing is
        # saved for a credential that no longer holds; the client sees `cancelled`, then the error, then
        # the close. One that another credential started goes on: a follower does not own it.
        task = self.task
        if task is not None and not task.done():
            if self.own:
                await self._own_run_cancel(task)
            else:
                task.cancel()
        await self._refuse(signed_out_error())

    async def _own_run_cancel(self, task: asyncio.Task[None]) -> None:
        """Cancel the run followed and wait (a while) for its ``cancelled`` to reach the client."""
        with suppress(GenerationError):  # its terminal event is on its way: nothing to cancel
            await self._cancel(None)
        with suppress(asyncio.CancelledError, asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), timeout=_CANCEL_WAIT_SECONDS)

    async def _refuse(self, error: GenerationError) -> None:
        if self.refusal is not None:
            return
        self.refusal = error
        await self.send_event(error.as_event())
        await self.close(code=_CLOSE_CODES[error.code], reason=error.code)

    async def _stopping_close(self) -> None:
        """This process is stopping: the socket is closed, nothing started, so that the client's next
        socket reaches another process (autobahn sends no 1012 Service Restart; 4503 says it)."""
        if self.refusal is None:
            self.refusal = GenerationError(
                "llm_unavailable", "this server process is stopping", retryable=True
            )
            await self.close(code=CLOSE_SERVER_STOPPING, reason="server_stopping")

    async def _stopped_close(self) -> None:
        """This process stops now: the run followed (handed over, or ended) is followed no more here,
        and the socket is closed with 4503 so that the client attaches to it on another process."""
        if self.refusal is not None:
            return
        self.refusal = GenerationError("llm_unavailable", "this server process is stopping", retryable=True)
        if self.task is not None and not self.cancel_pending:
            self.task.cancel()
        await self.close(code=CLOSE_SERVER_STOPPING, reason="server_stopping")

    def _stopping_idle(self) -> bool:
        """The process is stopping and this socket follows no run (one that does is answered ``busy``)."""
        return process_stopping() and not self._following()

    def _following(self) -> bool:
        return self.task is not None and not self.task.done() and not self.ended

    def _following_begin(self, *, run_id: int | None, attached: bool, own: bool) -> None:
        self.run_id, self.attached, self.own = run_id, attached, own
        self.cancel_pending = self.ended = self.shown = False

    def _admitting(self) -> bool:
        """Its own request is being admitted: the client has neither its ``accepted`` nor a refusal yet."""
        return self._following() and not self.attached and not self.shown

    def _generate(self, kind: str, fields: dict[str, Any], check: Callable[[], None] | None = None) -> None:
        if self._following() and not self.attached:
            raise GenerationError(
                "busy", "a generation is already running on this connection", retryable=True
            )
        assert self.session is not None
        events = _events_for(kind, fields, self.scope["user"], check, self.session.credential)
        if self.task is not None:
            # Following a run it attached to (a replay, a watch): it stops following it, as a new
            # ``attach`` does; the run goes on.
            self.task.cancel()
        self._following_begin(run_id=None, attached=False, own=True)
        self.task = asyncio.create_task(self._start(events))

    async def _start(self, events: AsyncGenerator[dict[str, Any], None]) -> None:
        start = await run_start(events)
        if start.run_id is None:
            assert start.refusal is not None
            self.ended = True
            if self.released:
                return
            if start.refusal.get("code") == "unauthenticated":  # ``_credential_check`` refused it
                await self._refuse(signed_out_error())
                return
            await self.send_event(start.refusal)
            return
        self.run_id = start.run_id
        if self.cancel_pending:
            await run_cancel(run_id=start.run_id)
            self.cancel_pending = False
        if not self.released:
            await self._follow(start.run_id, 0)

    async def _attach(self, run_id: int, after: int, *, confirm: bool = False) -> None:
        if self._admitting():
            # Its own generate has no run id yet: following another run now, the client would never
            # learn it (the run would go on, and be saved, unseen).
            raise GenerationError(
                "busy",
                "a generation is being started on this connection; attach once it is accepted",
                retryable=True,
            )
        if self._following():
            # Each attach of a finished run replays it whole: a client that sent them without reading
            # had every replay kept for it, one after the other. A replay that waits for the client to
            # read (``_client_read``) is still being followed, so the next attach is refused here.
            raise GenerationError(
                "busy",
                f"this connection is following run {self.run_id} until its end; attach once it has "
                "ended (read its events), or on another connection",
                retryable=True,
            )
        starter = await run_starter(run_id=run_id, user_id=self.scope["user"].pk)
        if starter is None:
            raise _not_found()
        if past_end := await run_after_past_end(run_id=run_id, after=after):
            raise past_end
        if self.task is not None:
            self.task.cancel()  # a follow that has sent its run's end and is finishing
        self._following_begin(run_id=run_id, attached=True, own=started_with(starter, self.started_by))
        self.task = asyncio.create_task(self._follow(run_id, after, confirm=confirm))

    async def _follow(self, run_id: int, after: int, *, confirm: bool = False) -> None:
        run_log_context_bind(run_id=run_id)  # a task of its own: its lines carry the run's id
        try:
            if confirm:
                # Where the replay ends, before it: the page holds its announcements until then and says
                # where the run stands once, instead of a burst of which only the last is heard.
                await self.send_event(dict(await run_attached(run_id=run_id)))
            async with aclosing(run_events_follow(run_id=run_id, after=after)) as events:
                async for event in events:
                    await self._client_read()
                    if self.refusal is not None:
                        return
                    self.ended = event["type"] in TERMINAL
                    await self.send_event(event)
                    self.shown = True
            # The follow ended without the run's end: say so when the client's ``after`` was past it (the
            # run ended meanwhile), not leave it waiting for an end that never comes.
            if (
                not self.ended
                and self.refusal is None
                and (past_end := await run_after_past_end(run_id=run_id, after=after))
            ):
                self.ended = True
                await self.send_event(past_end.as_event())
        except Exception:
            self.ended = True
            logger.exception("following run %s on a WebSocket failed", run_id)
            error = GenerationError("llm_unavailable", "the run's events could not be read", retryable=True)
            with suppress(Exception):
                await self.send_event(error.as_event())

    async def _cancel(self, run_id: int | None) -> None:
        if run_id is None:
            await self._cancel_own()
            return
        if not await run_owned(run_id=run_id, user_id=self.scope["user"].pk):
            raise _not_found()
        await run_cancel(run_id=run_id)

    async def _cancel_own(self) -> None:
        if not self._following():
            raise GenerationError("invalid_request", "no generation is running")
        if self.run_id is None:
            self.cancel_pending = True  # still being admitted: cancelled as soon as it has an id
            return
        await run_cancel(run_id=self.run_id)


async def sockets_idle_close() -> None:
    """Close this process's open sockets that follow no run (its graceful stop has begun)."""
    for consumer in list(_open):
        if consumer._stopping_idle():
            with suppress(Exception):  # a socket that is closing meanwhile
                await consumer._stopping_close()


async def sockets_close(*, seconds: float) -> None:
    """Close every socket still open on this process, which is about to stop (``make serve``'s graceful
    stop, once its runs have ended or been handed over): with 4503, so that a client following a run
    attaches to it on another process, as the create page does, instead of losing the connection
    (1006, when daphne stops). Waits up to ``seconds`` for the clients to answer the close: daphne's
    stop drops what it has not sent yet."""
    closing = [consumer for consumer in list(_open) if consumer.refusal is None]
    for consumer in closing:
        with suppress(Exception):  # a socket that is closing meanwhile
            await consumer._stopped_close()
    deadline = asyncio.get_running_loop().time() + seconds
    while any(consumer in _open for consumer in closing) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(_DRAIN_POLL_SECONDS)


def _not_found() -> GenerationError:
    return GenerationError("not_found", "no such run among yours")


def _message_parse(text_data: str | None, bytes_data: bytes | None) -> dict[str, Any]:
    """The client's message as a dict with a known ``type``, or GenerationError("invalid_request")."""
    if text_data is None:
        raise GenerationError("invalid_request", "send JSON text messages, not binary ones")
    limit = settings.STORY_WS_MAX_MESSAGE_BYTES
    if len(text_data) > limit or len(text_data.encode("utf-8", "surrogatepass")) > limit:
        raise GenerationError("invalid_request", f"messages are limited to {limit} bytes")
    try:
        # As the API parses its bodies (storyproject.parsers): a key given twice in one object was kept
        # last without a word here, so {"plot": ..., "plot": ...} generated from the second plot.
        message = json_parse_untrusted(text_data, constants_allowed=False)
    except UntrustedJSONError as error:
        raise GenerationError("invalid_request", str(error)) from None
    if not isinstance(message, dict):
        raise GenerationError("invalid_request", "each message must be a JSON object with a type")
    if message.get("type") not in _MESSAGE_TYPES:
        raise GenerationError(
            "invalid_request", "the message type must be 'generate', 'regenerate_scene', 'cancel' or 'attach'"
        )
    return message


def _events_for(
    kind: str,
    fields: dict[str, Any],
    user: Any,
    check: Callable[[], None] | None,
    credential: SocketCredential | None,
) -> AsyncGenerator[dict[str, Any], None]:
    """The events of a generation, or of one scene's rewrite (parallel mode); parsing errors raise.
    ``check``: a generation's admission check (``generation_run``'s ``admission_check``); ``credential``:
    the socket's, which the run records and asks again once recorded."""
    if kind == "regenerate_scene":
        rewrite = scene_regenerate_request_parse(fields)
        return scene_regenerate_run(request=rewrite, user=user, credential=credential)
    request = generation_request_parse(fields)
    return generation_run(request=request, user=user, admission_check=check, credential=credential)

"""A run's events as Server-Sent Events, for ``GET /api/runs/{id}/events/`` (EventSource, ``curl -N``).

Each event is one SSE message: ``id:`` its seq, ``data:`` its JSON (the ``type`` is inside, so an
EventSource's ``onmessage`` sees every event). A browser's EventSource reconnects by itself when the
stream ends or drops and sends the last id as ``Last-Event-ID``; the stream goes on from there. Once
the client has the terminal event, the answer is 204, which tells EventSource to stop reconnecting; a
seq past the end of an ended run is a 400 (and a stream of a run that ends before that seq ends with an
``error`` saying so), as a socket's ``attach`` is refused.
An end rebuilt from the database (its seq unknown) has the id ``end`` on its terminal event, which is
also answered 204; the rebuilt events before it have no id.

The request's credential (its token, or its session) is asked again, as an open WebSocket's is, at
the first event after every ``ws_sessions.WATCH_SECONDS`` (or then, if no event comes), and at once
when a revocation of one of its user's credentials is seen (``ws_sessions.RevocationListener``): once it
no longer holds (a revoked or
replaced token, a logout, a changed password, a deactivated user) the stream ends there, and the
reconnect is refused (401, which stops an EventSource). The run itself goes on (a follower does not own
it) unless that same credential started it (``GenerationRun.started_by``): then, as a WebSocket
follower does, the stream cancels it and ends with its ``cancelled``, so that no run goes on spending
for a credential that no longer holds.

An open stream holds one of its user's connection slots, under the cap that bounds their open sockets
(``ws_sessions``, ``STORY_WS_MAX_SOCKETS_PER_USER``): past it the request is refused with 429 ``busy``.
The slot is kept at that same check, which a silent run's keepalive comment also makes, and freed when
the stream ends or its response is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from redis.exceptions import RedisError
from rest_framework.authtoken.models import Token
from rest_framework.request import Request

from stories import ws_sessions
from stories.errors import GenerationError
from stories.runs.addresses import MAX_ID
from stories.runs.follow import run_after_past_end, run_attached, run_events_follow
from stories.runs.log import TERMINAL, event_text
from stories.runs.runner import run_cancel
from stories.runs.store import run_event_log
from stories.ws_auth import SocketCredential, credential_current, credential_fingerprint, started_with
from stories.ws_sessions import Slot, revocations_listen, slot_free, slot_keep
from storyproject.db import db_call, db_started
from storyproject.untrusted import text_quoted

END_ID = "end"
# How long EventSource waits before reconnecting after a drop.
_RETRY_MS = 2000


def sse_after(*, query: str | None, last_event_id: str | None) -> int | None:
    """The seq to follow from: ``Last-Event-ID`` (a reconnect) wins over ``?after=``; None for ``end``.

    Both are checked first, whichever wins: a bad ``?after=`` passed over because a header came with it
    was a 204 or a replay from elsewhere, where the client's mistake should be said.
    """
    after = _seq(query, "after") if query is not None else 0
    # An empty Last-Event-ID is none (an EventSource whose last event had no id); an empty ?after= is
    # a client's mistake like any other value that is not a seq (it read as 0).
    if last_event_id in (None, ""):
        return after
    if last_event_id == END_ID:
        return None
    return _seq(last_event_id, "Last-Event-ID", or_end=True)


def sse_confirm(query: str | None) -> bool:
    """``?confirm=``: ``true`` asks for ``attached`` first; ``false`` or absent, no such message."""
    if query in (None, "false"):
        return False
    if query == "true":
        return True
    raise GenerationError(
        "invalid_request", f"confirm must be true or false; got {text_quoted(query, limit=24)}"
    )


def _seq(raw: str, name: str, *, or_end: bool = False) -> int:
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or int(raw) > MAX_ID:
        also = f" or {END_ID!r}" if or_end else ""
        raise GenerationError(
            "invalid_request",
            f"{name} must be a seq, a whole number from 0 to {MAX_ID}{also}; got {text_quoted(raw, limit=24)}",
        )
    return int(raw)


async def run_has_more(*, run_id: int, after: int) -> bool:
    """False once the client has the run's terminal event (its log ended at or before ``after``)."""
    log = run_event_log()
    try:
        if not await log.exists(run_id) or not await log.ended(run_id):
            return True
        return await log.last_seq(run_id) > after
    except RedisError:
        return True  # Redis down: the stream says what the database knows (run_events_follow)


def request_credential(request: Request) -> SocketCredential | None:
    """What signed the request in: its API token, or its session; None when neither (a test's forced
    user), then nothing is asked again."""
    user_id = request.user.pk
    if isinstance(request.auth, Token):
        return SocketCredential(user_id=user_id, token_key=request.auth.key)
    session = getattr(request, "session", None)  # DRF's Request passes it on from Django's
    session_key = session.session_key if session is not None else None
    return SocketCredential(user_id=user_id, session_key=session_key) if session_key else None


class SseBody:
    """A stream's body for ``StreamingHttpResponse``: its events, and ``close()``, which Django's handler
    calls once the response is done with, which frees the stream's slot even if the client left before
    the stream's first byte (its generator, never started, has no ``finally`` to run)."""

    def __init__(
        self,
        *,
        run_id: int,
        after: int,
        credential: SocketCredential | None,
        slot: Slot,
        started_by: str = "",
        confirm: bool = False,
    ) -> None:
        self._events = run_sse_stream(
            run_id=run_id,
            after=after,
            credential=credential,
            slot=slot,
            started_by=started_by,
            confirm=confirm,
        )
        self._slot = slot

    def __aiter__(self) -> AsyncGenerator[bytes, None]:
        return self._events

    def close(self) -> None:
        slot_free(self._slot)  # a second free of a slot is nothing: it frees only its own owner's


async def run_sse_stream(
    *,
    run_id: int,
    after: int,
    credential: SocketCredential | None = None,
    slot: Slot | None = None,
    started_by: str = "",
    confirm: bool = False,
) -> AsyncGenerator[bytes, None]:
    """The run's events as SSE messages. Every ``WATCH_SECONDS`` without an event, a comment
    (``: keepalive``) keeps the connection alive through proxies that close a silent one (nginx's
    ``proxy_read_timeout`` is 60 s; a model may think longer than that before writing), and the stream's
    standing is asked then too, so its slot stays held however long the run is silent. ``started_by``:
    the run's (see the module's docstring). ``confirm``: the stream's first event is ``attached``, as a
    socket's ``attach`` with ``confirm`` is answered (``attached_message``)."""
    # Wakes the stream when a credential of its user is revoked (ws_sessions), before its next check.
    listener = None if credential is None else revocations_listen(user_id=credential.user_id)
    try:
        yield f"retry: {_RETRY_MS}\n\n".encode()
        if confirm:
            # Where the replay ends, read before the follow begins, as the socket does.
            yield attached_message(dict(await run_attached(run_id=run_id)))
        checked = time.monotonic()
        async with aclosing(run_events_follow(run_id=run_id, after=after)) as events:
            upcoming: asyncio.Future[dict[str, Any]] | None = None
            wake: asyncio.Future[Any] | None = None
            try:
                while True:
                    if upcoming is None:
                        upcoming = asyncio.ensure_future(anext(events))
                    if listener is not None and wake is None:
                        wake = asyncio.ensure_future(listener.woken.wait())
                    due = checked + ws_sessions.WATCH_SECONDS - time.monotonic()
                    waited = {upcoming} if wake is None else {upcoming, wake}
                    done, _ = await asyncio.wait(
                        waited, timeout=max(due, 0), return_when=asyncio.FIRST_COMPLETED
                    )
                    # A revocation of one of the user's credentials was seen: asked now, of the database.
                    revoked = wake is not None and wake.done()
                    if revoked:
                        assert listener is not None
                        listener.woken.clear()
                        wake = None
                    if revoked or time.monotonic() - checked >= ws_sessions.WATCH_SECONDS:
                        standing = await db_call(_stream_standing)(
                            credential=credential, slot=slot, fresh=revoked
                        )
                        if not standing:
                            if not started_with(started_by, credential_fingerprint(credential)):
                                return  # see the module's docstring: the stream ends, the reconnect is refused
                            # Its own credential started the run: cancelled, and followed to its `cancelled`.
                            await run_cancel(run_id=run_id)
                            credential = None
                        checked = time.monotonic()
                    if upcoming not in done:
                        if not revoked:
                            yield b": keepalive\n\n"
                        continue
                    try:
                        event = upcoming.result()
                    except StopAsyncIteration:
                        # Ended without the run's end: the client's seq was past it (the run ended meanwhile).
                        if past_end := await run_after_past_end(run_id=run_id, after=after):
                            yield past_end_message(past_end)
                        return
                    upcoming = None
                    yield sse_message(event)
            finally:
                if wake is not None:
                    wake.cancel()
                if upcoming is not None and not upcoming.done():
                    # The follower's step in flight is cancelled before the follower is closed.
                    upcoming.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await upcoming
    finally:
        if listener is not None:
            listener.close()
        if slot is not None:
            # Shielded: a client that goes away cancels the stream, and its slot must be freed all the same.
            await asyncio.shield(db_started(slot_free, slot))


def _stream_standing(*, credential: SocketCredential | None, slot: Slot | None, fresh: bool = False) -> bool:
    """Keep the stream's slot; whether its credential still holds (sync); ``fresh``: asked of the
    database, past the cache (a revocation of one of the user's credentials was seen)."""
    if slot is not None:
        slot_keep(slot)
    return credential is None or credential_current(credential=credential, fresh=fresh)


def past_end_message(error: GenerationError) -> bytes:
    """The ``error`` of a stream asked to go on past its run's end, without an ``id:``: the client's
    reconnect keeps its last id, and is answered 400 saying the same, which stops an EventSource."""
    return f"data: {event_text(error.as_event())}\n\n".encode()


def attached_message(event: dict[str, Any]) -> bytes:
    """The ``attached`` answer as a message without an ``id:``: it is no event of the run (no seq), so
    the client's last id, and with it an EventSource's ``Last-Event-ID`` on a reconnect, stays its
    last event's. Without an ``event:`` field, as every message of the stream: ``onmessage`` sees it."""
    return f"data: {event_text(event)}\n\n".encode()


def sse_message(event: dict[str, Any]) -> bytes:
    # JSON never holds a raw newline, so the data is one line.
    data = f"data: {event_text(event)}\n\n"
    seq = event.get("seq")
    if seq is not None:
        return f"id: {seq}\n{data}".encode()
    if event["type"] in TERMINAL:
        return f"id: {END_ID}\n{data}".encode()
    # A rebuilt end's scenes and `saved` (seq null) leave the client's last id as it was: a reconnect
    # before the terminal event gets the whole rebuilt end again, never a 204 that skips `done`.
    return data.encode()

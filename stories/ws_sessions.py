"""The standing of an open ``/ws/generate/`` socket: its credential, asked again, and its place under a cap.

**Credential.** The handshake's token or session (``stories.ws_auth.socket_credential``) is asked again
before every message and every ``WATCH_SECONDS`` while the socket is open; the answer is cached and
forgotten when the credential changes (``accounts.authentication``, ``accounts.session_auth``), so a warm
check costs no query. The consumer closes a socket whose credential no longer holds with 4401.

**Cap.** A user holds at most ``STORY_WS_MAX_SOCKETS_PER_USER`` sockets and run event streams (SSE,
``stories.runs.sse``) open, counted together. Each open socket or stream holds one of its user's
numbered slots, a cache key taken with ``cache.add`` (``SET NX`` on Redis: two sockets
cannot take the same slot), so the count holds across processes when the cache is shared and per process
with the local-memory cache. A slot lives ``SLOT_SECONDS`` past its last refresh (one every
``WATCH_SECONDS`` while the socket is open) and is deleted when the socket closes, so a process that dies
without closing its sockets frees their slots within ``SLOT_SECONDS``. When slots look free but none can
be taken (the cache is down: every look finds them free, and none can be taken), the socket is admitted
without one: the cap bounds cost, not exact accounting, and a cache outage must not lock writers out.
Slots that other sockets took in the same instant are looked for again, and then found held.

**Revocations.** A revocation of a user's credential (a logout, a token revoked, a password changed...)
marks the user in the shared cache (``stories.ws_auth.revocation_mark``). Each event loop with open
sockets or streams looks for their users' marks every ``REVOCATION_POLL_SECONDS``, in one cache read
for all of them, and wakes those whose user has a mark newer than the last they saw
(``RevocationListener``): they ask their credential again then (from the database), not at their next
periodic check, so a signed-out follower stops receiving its run's events within about a second. Once
the cache cannot be read, the periodic check is what is left.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import weakref
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.cache import cache

from stories.errors import GenerationError
from stories.metrics import socket_closed, socket_opened
from stories.ws_auth import (
    SocketCredential,
    credential_current,
    revocation_marks,
    socket_credential,
    socket_user_resolve,
)
from storyproject.db import db_call

logger = logging.getLogger(__name__)

SLOT_SECONDS = 90
WATCH_SECONDS = 30
# How often an event loop's open sockets and streams look for revocations of their users' credentials.
REVOCATION_POLL_SECONDS = 1.0
# How often a new socket looks for a free slot again after losing the ones it saw to other sockets; a
# cache that is down answers every look "all free" and takes nothing, so the socket is then admitted.
_TAKE_ROUNDS = 3


@dataclass(frozen=True)
class Slot:
    """One of a user's connection slots, held by an open socket or run event stream (SSE)."""

    key: str | None  # None: admitted without a slot (see the module's docstring)
    owner: str  # a random value, so a holder frees or refreshes only its own slot


@dataclass(frozen=True)
class SocketSession:
    credential: SocketCredential
    slot: Slot


@db_call
def socket_session_open(*, scope: dict[str, Any]) -> SocketSession:
    """The standing of a new socket; GenerationError "unauthenticated", or "busy" past the cap. The
    handshake's session user is read first, in this same trip (``stories.ws_auth.socket_user_resolve``)."""
    socket_user_resolve(scope)
    credential = socket_credential(scope)
    # Asked once here as well: the answer is then cached (see the module's docstring), so the check
    # before the first message, the writer's click on Generate, is the warm one.
    if credential is None or not credential_current(credential=credential):
        raise GenerationError("unauthenticated", "sign in to generate screenplays")
    slot = slot_take(user_id=credential.user_id)
    socket_opened()
    return SocketSession(credential=credential, slot=slot)


@db_call
def socket_session_check(*, session: SocketSession, refresh: bool = False, fresh: bool = False) -> bool:
    """Whether the socket's credential still holds; with ``refresh``, its slot is kept too; ``fresh``:
    asked of the database, past the cache (after a revocation was seen: ``RevocationListener``)."""
    if refresh:
        slot_keep(session.slot)
    return credential_current(credential=session.credential, fresh=fresh)


def socket_session_current(*, session: SocketSession) -> bool:
    """``socket_session_check`` without its trip to the thread pool, for a caller already in one (sync)."""
    return credential_current(credential=session.credential)


@db_call
def socket_session_close(*, session: SocketSession) -> None:
    """Free the socket's slot."""
    socket_closed()
    slot_free(session.slot)


def slot_take(*, user_id: Any) -> Slot:
    """A slot for a new socket or event stream; GenerationError "busy" when the user holds them all (sync)."""
    owner = secrets.token_hex(8)
    return Slot(key=_slot_key_take(user_id=user_id, owner=owner), owner=owner)


def slot_free(slot: Slot) -> None:
    """Free a slot once its socket or stream has ended (sync)."""
    if slot.key is not None and cache.get(slot.key) == slot.owner:
        cache.delete(slot.key)


def _slot_key_take(*, user_id: Any, owner: str) -> str | None:
    keys = [f"ws-slot:{user_id}:{number}" for number in range(settings.STORY_WS_MAX_SOCKETS_PER_USER)]
    for _ in range(_TAKE_ROUNDS):
        held = cache.get_many(keys)
        free = [key for key in keys if key not in held]
        if not free:
            raise GenerationError(
                "busy",
                f"at most {len(keys)} connections per user may be open at once; close one and try again",
                retryable=True,
            )
        for key in free:
            if cache.add(key, owner, SLOT_SECONDS):
                return key
        # Other sockets took them in the same instant (twenty handshakes at once admitted about half
        # again the cap when this gave up here): look again, and they are held.
    logger.warning("no free socket slot could be taken for user %s; admitted without one", user_id)
    return None


def slot_keep(slot: Slot) -> None:
    """Keep a slot (sync): every ``WATCH_SECONDS`` while its socket or stream is open."""
    if slot.key is None:
        return
    if cache.get(slot.key) == slot.owner:
        cache.touch(slot.key, SLOT_SECONDS)
    else:
        # It expired (a stalled process, a cache restart): take it back unless another holder has.
        cache.add(slot.key, slot.owner, SLOT_SECONDS)


@dataclass(eq=False)
class RevocationListener:
    """An open socket's or stream's ear for revocations of its user's credentials (see the module's
    docstring): ``woken`` is set when one is seen; ``wait`` returns when it is, or after ``seconds``."""

    user_id: Any
    woken: asyncio.Event = field(default_factory=asyncio.Event)
    # The newest mark of the user seen so far (the time it was made): 0 at first, so that a mark made
    # while the socket was opening is looked at too.
    seen: float = 0.0
    # This event loop's listeners (``revocations_listen``), which ``close()`` leaves.
    group: set[RevocationListener] = field(default_factory=set, repr=False)

    async def wait(self, seconds: float) -> bool:
        """Whether a revocation was seen (then cleared), rather than ``seconds`` going by."""
        try:
            await asyncio.wait_for(self.woken.wait(), timeout=seconds)
        except TimeoutError:
            return False
        self.woken.clear()
        return True

    def close(self) -> None:
        self.group.discard(self)


# Per event loop: its listeners, and the task that polls the cache for them while there are any.
_listeners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, set[RevocationListener]] = (
    weakref.WeakKeyDictionary()
)
_pollers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = (
    weakref.WeakKeyDictionary()
)


def revocations_listen(*, user_id: Any) -> RevocationListener:
    """A listener for revocations of ``user_id``'s credentials; ``close()`` it when the socket or stream
    ends."""
    loop = asyncio.get_running_loop()
    listeners = _listeners.setdefault(loop, set())
    listener = RevocationListener(user_id=user_id, group=listeners)
    listeners.add(listener)
    poller = _pollers.get(loop)
    if poller is None or poller.done():
        _pollers[loop] = loop.create_task(_revocations_poll(listeners))
    return listener


async def _revocations_poll(listeners: set[RevocationListener]) -> None:
    """Wake the listeners whose user has a revocation mark newer than the last they saw: one cache
    read every ``REVOCATION_POLL_SECONDS`` for all of this loop's sockets and streams."""
    while listeners:
        await asyncio.sleep(REVOCATION_POLL_SECONDS)
        users = {listener.user_id for listener in listeners}
        if not users:
            break
        try:
            marks = await db_call(revocation_marks)(user_ids=users)
        except Exception:
            # The cache failing: each socket's periodic check still comes.
            logger.debug("could not look for revocations of open sockets' credentials", exc_info=True)
            continue
        for listener in list(listeners):
            mark = marks.get(listener.user_id)
            if mark is not None and mark > listener.seen:
                listener.seen = mark
                listener.woken.set()

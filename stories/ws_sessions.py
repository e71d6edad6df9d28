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
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache

from stories.errors import GenerationError
from stories.metrics import socket_closed, socket_opened
from stories.ws_auth import SocketCredential, credential_current, socket_credential, socket_user_resolve
from storyproject.db import db_call

logger = logging.getLogger(__name__)

SLOT_SECONDS = 90
WATCH_SECONDS = 30
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
def socket_session_check(*, session: SocketSession, refresh: bool = False) -> bool:
    """Whether the socket's credential still holds; with ``refresh``, its slot is kept too."""
    if refresh:
        slot_keep(session.slot)
    return socket_session_current(session=session)


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

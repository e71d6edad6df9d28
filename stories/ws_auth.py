"""WebSocket authentication by DRF token, next to Channels' session authentication.

Scripts cannot send a session cookie conveniently, so the socket also accepts the header
``Authorization: Token <key>``, the same token the REST API takes. A header that is present but
wrong makes the connection anonymous (the consumer then closes it as unauthenticated) instead of
falling back to the cookie: explicit bad credentials must never be silently replaced by others.
Browsers cannot set this header on a WebSocket, so it adds no cross-site risk.

The handshake's credential is kept (``socket_credential``) and asked again while the socket is open
(``credential_current``): a revoked or replaced token, a logged-out session, a changed password or a
deactivated user stops an open socket too, not only new ones.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from channels.auth import AuthMiddleware, UserLazyObject, get_user
from channels.middleware import BaseMiddleware
from channels.sessions import CookieMiddleware, InstanceSessionWrapper, SessionMiddleware
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.core.cache import cache

from accounts.authentication import token_user
from accounts.session_auth import session_user_current
from stories.errors import GenerationError
from stories.ws_origin import SameOriginValidator
from storyproject.db import db_call
from storyproject.middleware import UnstorableTextGuard

_MAX_KEY_CHARS = 64


def token_key_from_headers(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key of an ``Authorization: Token <key>`` header; "" when the header is malformed."""
    for name, value in headers:
        if name.lower() != b"authorization":
            continue
        scheme, _, key = value.decode("latin-1").strip().partition(" ")
        if scheme.lower() != "token":
            return None
        key = key.strip()
        return key if 0 < len(key) <= _MAX_KEY_CHARS and key.isascii() and key.isalnum() else ""
    return None


@db_call
def _user_for_token(key: str) -> AbstractBaseUser | AnonymousUser:
    user = token_user(key)
    if user is None or not user.is_active:
        return AnonymousUser()
    return user


class TokenAuthMiddleware(BaseMiddleware):
    """Replaces ``scope["user"]`` when the handshake carries an Authorization: Token header."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        key = token_key_from_headers(scope.get("headers", []))
        if key is not None:
            user = await _user_for_token(key) if key else AnonymousUser()
            scope = dict(scope, user=user)
        return await super().__call__(scope, receive, send)


@dataclass(frozen=True)
class SocketCredential:
    """What signed a socket in: an API token's key, or the key of the session Channels read."""

    user_id: Any
    token_key: str | None = None
    session_key: str | None = None


def socket_credential(scope: dict[str, Any]) -> SocketCredential | None:
    """The credential that authenticated the handshake; None for an anonymous socket.

    The middleware's rule: a token header, when present, is the credential, whatever the cookie says.
    """
    user = scope.get("user")
    if user is None or not user.is_authenticated:
        return None
    key = token_key_from_headers(scope.get("headers", []))
    if key:
        return SocketCredential(user_id=user.pk, token_key=key)
    session = scope.get("session")
    session_key = session.session_key if session is not None else None
    return SocketCredential(user_id=user.pk, session_key=session_key) if session_key else None


logger = logging.getLogger(__name__)

# How long a revocation's mark stays: far longer than any admission lasts between its credential's
# check and its run's commit.
_REVOCATION_MARK_SECONDS = 300


def _revocation_key(user_id: Any) -> str:
    return f"credential-revoked:{user_id}"


def revocation_mark(*, user_id: Any) -> None:
    """Say, in the shared cache, that a credential of ``user_id`` was just revoked (sync): once the
    revocation has committed, before it looks for the runs to cancel (stories.runs.revoked). The mark
    is the time it was made: open sockets and event streams of the user ask their credential again
    once they see a mark newer than the last they saw (``revocation_marks``, stories.ws_sessions)."""
    try:
        cache.set(_revocation_key(user_id), time.time(), _REVOCATION_MARK_SECONDS)
    except Exception:
        logger.warning(
            "cache unavailable: a revocation of user %s could not be marked", user_id, exc_info=True
        )


def revocation_recent(*, user_id: Any) -> bool:
    """Whether a credential of ``user_id`` may have been revoked in the last minutes (sync): True when
    marked (``revocation_mark``), and whenever the cache cannot say (no shared cache, an outage)."""
    if not settings.STORY_CACHE_TOKEN_USERS:
        return True  # each process's own memory: another process's mark is not seen here
    try:
        return cache.get(_revocation_key(user_id)) is not None
    except Exception:
        return True


def revocation_marks(*, user_ids: Collection[Any]) -> dict[Any, float]:
    """The revocation marks of ``user_ids`` that are in the cache (sync): the time each was made
    (``revocation_mark``), by user id. Raises when the cache cannot be read."""
    keys = {_revocation_key(user_id): user_id for user_id in user_ids}
    return {keys[key]: float(mark) for key, mark in cache.get_many(list(keys)).items()}


def signed_out_error() -> GenerationError:
    """The refusal of a socket's or a request's run whose sign-in stopped holding."""
    return GenerationError(
        "unauthenticated",
        "this connection's sign-in no longer holds (logged out, token revoked or account changed)",
    )


def credential_fingerprint(credential: SocketCredential | None) -> str:
    """What a run records of the credential that started it (``GenerationRun.started_by``): a digest,
    never the key itself, so that the run's row signs nobody in; "" for none (a command, a test)."""
    if credential is None:
        return ""
    kind, key = (
        ("token", credential.token_key) if credential.token_key else ("session", credential.session_key)
    )
    if not key:
        return ""
    return hashlib.sha256(f"{kind}:{key}".encode()).hexdigest()


def started_with(started_by: str, fingerprint: str) -> bool:
    """Whether a run whose ``started_by`` this is was started with the credential of ``fingerprint``
    (``credential_fingerprint``); a run that records none (a command's, an older one's) never was."""
    return bool(started_by) and started_by == fingerprint


def credential_current(*, credential: SocketCredential, fresh: bool = False) -> bool:
    """Whether the credential still signs in its user, active (sync). Warm, from the cache: no query;
    ``fresh``: read from the database, past the cache (whose entry is forgotten only once a revocation
    has committed and run its other hooks)."""
    if credential.token_key is not None:
        user = token_user(credential.token_key, fresh=fresh)
        return user is not None and user.is_active and user.pk == credential.user_id
    if credential.session_key is None:
        return False
    return session_user_current(session_key=credential.session_key, user_id=credential.user_id, fresh=fresh)


class PooledAuthMiddleware(AuthMiddleware):
    """Channels' session authentication, its session and user read in the consumer's first trip to the
    loop's thread pool (``socket_user_resolve``, from ``stories.ws_sessions.socket_session_open``) rather
    than in a trip of its own: one trip fewer for every socket, before the writer's first message.
    (Channels' own ``get_user`` is a thread-sensitive ``database_sync_to_async``, for whose one thread
    every handshake of the process queued; ``__wrapped__`` is the function it wraps.) Until then
    ``scope["user"]`` raises if read, as Channels' unresolved user does."""

    async def resolve_scope(self, scope: dict[str, Any]) -> None:
        scope[_USER_UNRESOLVED] = True


_USER_UNRESOLVED = "story_user_unresolved"


def socket_user_resolve(scope: dict[str, Any]) -> None:
    """Read the session's user into ``scope["user"]`` if the middleware left it to the consumer (sync,
    in a thread-pool trip). A token header, when present, already gave the user (and wins)."""
    if scope.pop(_USER_UNRESOLVED, False) and isinstance(scope["user"], UserLazyObject):
        scope["user"]._wrapped = get_user.__wrapped__(scope)


class SocketSessionMiddleware(SessionMiddleware):
    """Channels' session middleware, without its wrapper on a WebSocket's sends.

    The wrapper's ``send`` saves a modified session and sets its cookie on ``http.response.start``
    alone (``InstanceSessionWrapper.save_message_types``), a message a WebSocket never sends; yet it
    read the lazy session's state on every frame: 3 % of a daphne process's CPU at 200 streams
    (docs/performance.md, "Thirteenth step"). A socket's frames go to daphne's own ``send``."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        wrapper = InstanceSessionWrapper(scope, send)
        await wrapper.resolve_session()
        return await self.inner(
            wrapper.scope, receive, send if scope["type"] == "websocket" else wrapper.send
        )


def TokenOrSessionAuthMiddlewareStack(inner: Any) -> Any:
    """Session cookie authentication (Channels' stack) first; a token header, when present, wins."""
    return CookieMiddleware(SocketSessionMiddleware(PooledAuthMiddleware(TokenAuthMiddleware(inner))))


def websocket_stack(inner: Any) -> Any:
    """What every WebSocket route sits behind: text check, same-origin check, then token or session auth.

    A session's user is read by the consumer, in its first trip to the thread pool
    (``socket_user_resolve``): ``scope["user"]`` raises until then, unless a token header gave it."""
    # The text check first: the session middleware queries the database with the cookie.
    return UnstorableTextGuard(SameOriginValidator(TokenOrSessionAuthMiddlewareStack(inner)))

"""WebSocket authentication by DRF token, next to Channels' session authentication.

Scripts cannot send a session cookie conveniently, so the socket also accepts the header
``Authorization: Token <key>``, the same token the REST API takes. A header that is present but
wrong makes the connection anonymous (the consumer then closes it as unauthenticated) instead of
falling back to the cookie: explicit bad credentials must never be silently replaced by others.
Browsers cannot set this header on a WebSocket, so it adds no cross-site risk.
"""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser

from accounts.authentication import token_user
from stories.ws_origin import SameOriginValidator
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


@database_sync_to_async
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


def TokenOrSessionAuthMiddlewareStack(inner: Any) -> Any:
    """Session cookie authentication (Channels) first; a token header, when present, wins."""
    return AuthMiddlewareStack(TokenAuthMiddleware(inner))


def websocket_stack(inner: Any) -> Any:
    """What every WebSocket route sits behind: text check, same-origin check, then token or session auth."""
    # The text check first: the session middleware queries the database with the cookie.
    return UnstorableTextGuard(SameOriginValidator(TokenOrSessionAuthMiddlewareStack(inner)))

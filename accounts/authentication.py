"""API token authentication with the token's user cached, so a warm API request makes no query for it.

DRF's ``TokenAuthentication`` reads the token and its user from the database on every request: on
the persona contexts endpoint that one query cost more than the cached contexts themselves
(bench/results/personas.md). Here the user behind a token is cached with the stamp scheme of
``storyproject.stamped_cache``: a revoked or replaced token, a deactivated user or any other change to
the user is refused or seen from the moment its transaction commits, never a cache timeout later.

Only with a cache that every process shares (``STORY_CACHE_TOKEN_USERS``, on when ``REDIS_URL`` is
set): a revocation committed by another process must reach this one's cache.

What is cached: the user's fields except the password hash and the last login. The user built from
the cache loads those from the database only if they are read, and saving it writes the loaded
fields only. Nothing is cached while the database is read inside a transaction
(what it sees may yet roll back), and bulk ``update()`` calls, which send no signals, are covered by
the entry timeout only.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection, router, transaction
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication, get_authorization_header
from rest_framework.authtoken.models import Token
from rest_framework.request import Request

from storyproject import stamped_cache

# The 401 of a key sent with the Bearer scheme (CachedTokenAuthentication.authenticate).
BEARER_REFUSED = "Send the API token as 'Authorization: Token <key>': the Bearer scheme is not read."

ENTRY_TIMEOUT = 300
# The password hash never sits in the cache; last_login changes on every session login, which does not
# invalidate (see user_changed): both are loaded from the database only if read.
_UNCACHED_FIELDS = {"password", "last_login"}


def token_user(key: str, *, fresh: bool = False) -> AbstractBaseUser | None:
    """The user whose API token is ``key`` (active or not); None when no token has that key.

    Warm: one cache round trip and no query. Cold: that round trip, one query, one cache write.
    Without STORY_CACHE_TOKEN_USERS (no shared cache), or ``fresh``, one query every time.
    """
    if fresh or not settings.STORY_CACHE_TOKEN_USERS:
        return _token_user_read(key)
    stamp_key, entry_key = _keys(key)
    found = stamped_cache.get_many([stamp_key, entry_key])
    entry = stamped_cache.entry_current(found, stamp_key, entry_key)
    if entry is not None:
        return _user_build(entry["user"]) if entry["user"] is not None else None
    stamp = found.get(stamp_key)
    if stamp is None:
        # Written before the database is read: see storyproject.stamped_cache.
        stamp = stamped_cache.stamps_fresh([stamp_key]).get(stamp_key)
    user = _token_user_read(key)
    if stamp is not None and not connection.in_atomic_block:
        stamped_cache.set_many({entry_key: {"stamp": stamp, "user": _user_fields(user)}}, ENTRY_TIMEOUT)
    return user


def token_users_forget(*, keys: list[str]) -> None:
    """Make the cached users of the tokens ``keys`` unreachable once the current transaction commits."""
    for key in keys:
        transaction.on_commit(partial(stamped_cache.stamp_bump, _keys(key)[0]))


class CachedTokenAuthentication(TokenAuthentication):
    """DRF's ``Authorization: Token <key>`` authentication, answered from the cache when it can be."""

    def authenticate(self, request: Request) -> tuple[AbstractBaseUser, Token] | None:
        # DRF reads only its keyword and takes any other scheme for no credentials at all: a key sent as
        # "Bearer <key>" (most HTTP tools' default) was told "Authentication credentials were not
        # provided.". Said instead; never read as a token, nor left to the session (as a wrong token).
        scheme = get_authorization_header(request).split(maxsplit=1)[:1]
        if scheme and scheme[0].lower() == b"bearer":
            raise exceptions.AuthenticationFailed(BEARER_REFUSED)
        return super().authenticate(request)

    def authenticate_credentials(self, key: str) -> tuple[AbstractBaseUser, Token]:
        user = token_user(key)
        if user is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        # request.auth: the token, as DRF gives it (its user is the one above, not loaded again).
        token = Token(key=key, user_id=user.pk)
        token._state.adding = False
        token._state.fields_cache["user"] = user
        return user, token


def _token_user_read(key: str) -> AbstractBaseUser | None:
    token = Token.objects.select_related("user").filter(key=key).first()
    return token.user if token is not None else None


def _keys(key: str) -> tuple[str, str]:
    digest = stamped_cache.digest(key)
    return f"token-stamp:{digest}", f"token-user:{digest}"


def _user_fields(user: AbstractBaseUser | None) -> dict[str, Any] | None:
    if user is None:
        return None
    return {
        field.attname: getattr(user, field.attname)
        for field in type(user)._meta.concrete_fields
        if field.attname not in _UNCACHED_FIELDS
    }


def _user_build(fields: dict[str, Any]) -> AbstractBaseUser:
    # from_db marks the fields left out (password, last_login) as deferred: loaded only if read.
    model = get_user_model()
    user: AbstractBaseUser = model.from_db(router.db_for_read(model), list(fields), list(fields.values()))
    return user


def user_changed(sender: type, instance: Any, update_fields: Any = None, **kwargs: Any) -> None:
    """Signal handler (``post_save`` of the user model): forget its token's user.

    Deleting a user deletes its token, whose own signal does the rest.
    """
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return  # every session login saves last_login; a token's user does not depend on it
    keys = list(Token.objects.filter(user_id=instance.pk).values_list("key", flat=True))
    token_users_forget(keys=keys)


def token_changed(sender: type, instance: Token, **kwargs: Any) -> None:
    """Signal handler (``post_save``, ``post_delete`` of Token): forget the token's user."""
    token_users_forget(keys=[instance.key])

"""Whether a session still signs its user in, asked again on an open WebSocket, cached like API tokens.

Channels reads a socket's session once, at the handshake, and a socket can stay open for a day. The
generation socket asks again before every message (``stories.ws_auth.credential_current``): the session
must still exist unexpired, name the same user through a configured back-end, and carry that user's
current session auth hash (a password change replaces it), and the user must be active. These are
``django.contrib.auth.get_user``'s checks, without its side effects: it flushes a session whose hash
fails and cycles the key of one signed with a fallback secret, and a cycled key would sign the browser
out, since no HTTP response carries the new cookie.

The answer is cached with the stamp scheme of ``storyproject.stamped_cache``, tagged with two stamps:
the session's (bumped when its row is saved or deleted: logout deletes it) and the user's (bumped when
the user is saved, except for ``last_login`` alone, or deleted), each bump once the transaction commits.
A warm check is one cache round trip and no query. It is cached only with a cache that every process
shares (``STORY_CACHE_TOKEN_USERS``) and a database-backed session engine, whose rows send the signals;
otherwise the session and the user are read every time. Bulk ``update()`` calls send no signals: they,
and a session's natural expiry, are seen once the entry times out (``ENTRY_TIMEOUT``).
"""

from __future__ import annotations

from functools import partial
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import (
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    get_user_model,
    load_backend,
)
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.contrib.sessions.models import Session
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils.crypto import constant_time_compare

from storyproject import stamped_cache

ENTRY_TIMEOUT = 300


def session_user_current(*, session_key: str, user_id: Any, fresh: bool = False) -> bool:
    """Whether the session ``session_key`` still signs in the active user ``user_id``.

    Warm: one cache round trip and no query. Cold: that round trip, two queries, one cache write.
    ``fresh``: the two queries, past the cache.
    """
    if fresh or not _cacheable():
        return _session_user_id(session_key) == user_id
    stamp_keys = [_session_stamp_key(session_key), _user_stamp_key(user_id)]
    entry_key = f"session-user:{stamped_cache.digest(session_key)}:{user_id}"
    found = stamped_cache.get_many([*stamp_keys, entry_key])
    entry = stamped_cache.entry_current_all(found, stamp_keys, entry_key)
    if entry is not None:
        return bool(entry["current"])
    # Written before the database is read: see storyproject.stamped_cache.
    stamps = stamped_cache.stamps_or_fresh(found, stamp_keys)
    current = _session_user_id(session_key) == user_id
    if stamps is not None and not connection.in_atomic_block:
        stamped_cache.set_many({entry_key: {"stamp": stamps, "current": current}}, ENTRY_TIMEOUT)
    return current


def session_changed(sender: type, instance: Any, **kwargs: Any) -> None:
    """Signal handler (``post_save``, ``post_delete`` of the session model): forget that session's checks."""
    transaction.on_commit(partial(stamped_cache.stamp_bump, _session_stamp_key(instance.session_key)))


def user_sessions_changed(sender: type, instance: Any, update_fields: Any = None, **kwargs: Any) -> None:
    """Signal handler (``post_save``, ``post_delete`` of the user model): forget its sessions' checks."""
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return  # every login saves last_login; the session auth hash does not depend on it
    transaction.on_commit(partial(stamped_cache.stamp_bump, _user_stamp_key(instance.pk)))


def _cacheable() -> bool:
    # Only rows of django.contrib.sessions' Session send the signals (accounts/apps.py) that forget a check.
    store = import_module(settings.SESSION_ENGINE).SessionStore
    return (
        bool(settings.STORY_CACHE_TOKEN_USERS)
        and issubclass(store, DatabaseSessionStore)
        and store.get_model_class() is Session
    )


def _session_user_id(session_key: str) -> Any | None:
    """The pk of the active user the session signs in, or None; reads and changes nothing else."""
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key=session_key)
    try:
        user_id = get_user_model()._meta.pk.to_python(session[SESSION_KEY])
        backend_path = session[BACKEND_SESSION_KEY]
    except (KeyError, ValidationError):
        return None
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return None
    user = load_backend(backend_path).get_user(user_id)
    if user is None or not user.is_active or not _hash_verified(user, session.get(HASH_SESSION_KEY)):
        return None
    return user.pk


def _hash_verified(user: AbstractBaseUser, session_hash: str | None) -> bool:
    # As get_user: the current secret's hash, or one made with a secret in SECRET_KEY_FALLBACKS.
    if not session_hash:
        return False
    hashes = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
    return any(constant_time_compare(session_hash, candidate) for candidate in hashes)


def _session_stamp_key(session_key: str) -> str:
    return f"session-stamp:{stamped_cache.digest(session_key)}"


def _user_stamp_key(user_id: Any) -> str:
    return f"session-user-stamp:{user_id}"

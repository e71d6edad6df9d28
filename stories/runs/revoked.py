"""Runs cancelled when the credential that started them stops holding, whether anyone follows them or not.

A run records a digest of the credential that started it (``GenerationRun.started_by``,
``stories.ws_auth.credential_fingerprint``). A socket or an event stream following the run with that
credential cancels it once the credential is revoked, but a run nobody follows (a script's
``"wait": false``) went on spending after its writer had signed out. So the revocation itself cancels:
a logout (the runs that session started), a token revoked or replaced from any interface (the runs it
started), a password change (the runs any session of the writer started: every one of them stops
holding, the one that made the change included, whose key Django replaces; the API token does not
depend on the password, and its runs go on), a deactivated or deleted writer (every run). A story
deleted (by the API, a page or the admin) cancels the runs writing its next version the same way.

The signal handlers in ``stories/apps.py`` call these. Each cancel is asked once the revocation
commits (a rolled-back one cancels nothing), through ``run_cancel``, the cancel endpoint's path: a run of
this process stops at once, one of another process within its watcher's interval (through the run log's
cancel flag, in Redis), an orphaned one is closed at once; each is recorded ``cancelled`` as any
cancelled run is, its followers told, nothing saved.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync
from django.contrib.auth import SESSION_KEY
from django.db import transaction

from stories.runs.runner import run_cancel
from stories.selectors import runs_streaming_of, story_runs_writing
from stories.ws_auth import SocketCredential, credential_fingerprint, revocation_mark

logger = logging.getLogger(__name__)
# Cancels asked from a thread that runs an event loop itself, kept until done (the loop keeps only
# weak references to tasks).
_cancelling: set[asyncio.Task[None]] = set()


def user_loaded(*, user: Any) -> None:
    """Remember the password hash as loaded (``post_init``): the session auth hash derives from it, so
    a save that changes it signs every session of the user out."""
    user._story_loaded_password = user.__dict__.get("password")


def runs_cancel_user_saved(*, user: Any, created: bool, update_fields: Any) -> None:
    """After a save of ``user`` (``post_save``): a deactivation cancels every run of theirs, a new
    password the runs their sessions started."""
    loaded = getattr(user, "_story_loaded_password", None)
    user._story_loaded_password = user.__dict__.get("password")
    if created or (update_fields is not None and set(update_fields) <= {"last_login"}):
        return
    if not user.is_active:
        runs_cancel_user_gone(user_id=user.pk)
    elif loaded is not None and user.__dict__.get("password") not in (None, loaded):
        # Imported here: the token model's module needs the apps loaded (this module is imported by
        # stories.apps only from its handlers, but keep it importable anywhere).
        from rest_framework.authtoken.models import Token

        token_key = Token.objects.filter(user_id=user.pk).values_list("key", flat=True).first()
        runs_cancel_password_changed(user_id=user.pk, token_key=token_key)


def runs_cancel_token_revoked(*, user_id: Any, key: str) -> None:
    """The token ``key`` of ``user_id`` was deleted (revoked, replaced): cancel the runs it started."""
    started_by = credential_fingerprint(SocketCredential(user_id=user_id, token_key=key))
    _on_commit(user_id, lambda: runs_streaming_of(user_id=user_id, started_by=started_by))


def runs_cancel_session_ended(*, user_id: Any, session_key: str) -> None:
    """The session ``session_key`` signed its user out: cancel the runs it started."""
    started_by = credential_fingerprint(SocketCredential(user_id=user_id, session_key=session_key))
    _on_commit(user_id, lambda: runs_streaming_of(user_id=user_id, started_by=started_by))


def runs_cancel_session_deleted(*, session: Any) -> None:
    """A session's row was deleted (``post_delete``): a logout, a login as someone else in that browser
    (Django flushes the session without a logout signal), a key cycled, a row cleared or deleted by
    hand. Cancel the runs it started."""
    user_id = session.get_decoded().get(SESSION_KEY)
    if user_id is not None:
        runs_cancel_session_ended(user_id=user_id, session_key=session.session_key)


def runs_cancel_password_changed(*, user_id: Any, token_key: str | None) -> None:
    """Every session of ``user_id`` stopped holding: cancel the runs any credential started but the
    API token ``token_key`` (one that started none, a command, is not a session either)."""
    sparing: tuple[str, ...] = ("",)
    if token_key:
        sparing += (credential_fingerprint(SocketCredential(user_id=user_id, token_key=token_key)),)
    _on_commit(user_id, lambda: runs_streaming_of(user_id=user_id, sparing=sparing))


def runs_cancel_user_gone(*, user_id: Any, deleted: bool = False) -> None:
    """``user_id`` was deactivated, or is being ``deleted``: cancel every run of theirs. A deletion's
    runs are read now, before the deletion's cascade removes their rows."""
    if deleted:
        run_ids = runs_streaming_of(user_id=user_id)
        _on_commit(user_id, lambda: run_ids)
    else:
        _on_commit(user_id, lambda: runs_streaming_of(user_id=user_id))


def runs_cancel_story_deleted(*, story: Any) -> None:
    """``story`` is being deleted (``pre_delete``): cancel the runs writing its next version, read now,
    before the deletion unlinks them. Their result has nowhere to go: they went on paying the model to
    their end and failed at the save (``forbidden``). Not a revocation: nothing is marked."""
    run_ids = story_runs_writing(story=story)
    if run_ids:
        transaction.on_commit(lambda: _runs_cancel(run_ids))


def _on_commit(user_id: Any, run_ids: Callable[[], list[int]]) -> None:
    transaction.on_commit(lambda: _revoked(user_id, run_ids))


def _revoked(user_id: Any, run_ids: Callable[[], list[int]]) -> None:
    # Marked before the runs are looked for: a run admitted meanwhile, whose commit this look cannot
    # see, sees the mark once it has committed, and asks its credential again (generation.pipeline).
    revocation_mark(user_id=user_id)
    _runs_cancel(run_ids())


def _runs_cancel(run_ids: list[int]) -> None:
    if not run_ids:
        return
    logger.info("runs %s cancelled: their credential no longer holds, or their story was deleted", run_ids)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        # The usual case: a view, the admin or a command, in a thread without a loop of its own. Under
        # daphne the cancel runs on the server's loop, where this process's runs are driven.
        try:
            async_to_sync(_cancel_each)(run_ids)
        except Exception:
            # The revocation has committed and must not fail for this; the runs then end as before,
            # at their followers' next check, or at their end.
            logger.exception("runs %s: their cancel could not be asked", run_ids)
        return
    task = loop.create_task(_cancel_each(run_ids))
    _cancelling.add(task)
    task.add_done_callback(_cancelling.discard)


async def _cancel_each(run_ids: list[int]) -> None:
    for run_id in run_ids:
        await run_cancel(run_id=run_id)

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import post_delete, post_init, post_save, pre_delete


def _token_deleted(sender: type, instance: Any, **kwargs: Any) -> None:
    from stories.runs.revoked import runs_cancel_token_revoked

    runs_cancel_token_revoked(user_id=instance.user_id, key=instance.key)


def _logged_out(sender: type, request: Any, user: Any, **kwargs: Any) -> None:
    from stories.runs.revoked import runs_cancel_session_ended

    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if user is not None and session_key and not _session_rows():
        # A session kept in a row is seen going by _session_deleted, logout or not.
        runs_cancel_session_ended(user_id=user.pk, session_key=session_key)


def _session_rows() -> bool:
    """Whether sessions are rows of django.contrib.sessions' model (the db and cached_db engines)."""
    from importlib import import_module

    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session

    store = import_module(settings.SESSION_ENGINE).SessionStore
    return issubclass(store, SessionStore) and store.get_model_class() is Session


def _session_deleted(sender: type, instance: Any, **kwargs: Any) -> None:
    from stories.runs.revoked import runs_cancel_session_deleted

    runs_cancel_session_deleted(session=instance)


def _user_loaded(sender: type, instance: Any, **kwargs: Any) -> None:
    from stories.runs.revoked import user_loaded

    user_loaded(user=instance)


def _user_saved(sender: type, instance: Any, created: bool, update_fields: Any = None, **kwargs: Any) -> None:
    from stories.runs.revoked import runs_cancel_user_saved

    runs_cancel_user_saved(user=instance, created=created, update_fields=update_fields)


def _story_deleting(sender: type, instance: Any, **kwargs: Any) -> None:
    from stories.runs.revoked import runs_cancel_story_deleted

    runs_cancel_story_deleted(story=instance)


def _user_deleting(sender: type, instance: Any, **kwargs: Any) -> None:
    from stories.runs.revoked import runs_cancel_user_gone

    runs_cancel_user_gone(user_id=instance.pk, deleted=True)


class StoriesConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "stories"
    verbose_name = "Stories"

    def ready(self) -> None:
        from rest_framework.authtoken.models import Token, TokenProxy

        from stories import checks  # noqa: F401  (registers the system checks)

        # A run nobody follows stops when the credential that started it stops holding, however that
        # comes about (stories/runs/revoked.py): a token deleted by any interface (the admin's through
        # DRF's TokenProxy), a logout, a new password, a deactivated or deleted writer.
        for model in (Token, TokenProxy):
            post_delete.connect(
                _token_deleted, sender=model, dispatch_uid=f"runs_token_deleted_{model.__name__}"
            )
        user_logged_out.connect(_logged_out, dispatch_uid="runs_logged_out")
        post_delete.connect(_session_deleted, sender="sessions.Session", dispatch_uid="runs_session_deleted")
        user_model = settings.AUTH_USER_MODEL
        post_init.connect(_user_loaded, sender=user_model, dispatch_uid="runs_user_loaded")
        post_save.connect(_user_saved, sender=user_model, dispatch_uid="runs_user_saved")
        pre_delete.connect(_user_deleting, sender=user_model, dispatch_uid="runs_user_deleting")
        # A story deleted cancels the runs writing its next version (their result has nowhere to go).
        pre_delete.connect(_story_deleting, sender="stories.Story", dispatch_uid="runs_story_deleting")

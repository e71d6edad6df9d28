from __future__ import annotations

from django.apps import AppConfig
from django.conf import settings
from django.db.models.signals import post_delete, post_save


class AccountsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        from django.contrib.sessions.models import Session
        from rest_framework.authtoken.models import Token, TokenProxy

        from accounts.authentication import token_changed, user_changed
        from accounts.session_auth import session_changed, user_sessions_changed

        # Any change to a token or its user, from any interface, reaches the cached token users. The
        # admin edits tokens through DRF's TokenProxy, whose saves signal with the proxy as sender.
        for model in (Token, TokenProxy):
            post_save.connect(token_changed, sender=model, dispatch_uid=f"token_saved_{model.__name__}")
            post_delete.connect(token_changed, sender=model, dispatch_uid=f"token_deleted_{model.__name__}")
        post_save.connect(user_changed, sender=settings.AUTH_USER_MODEL, dispatch_uid="user_saved")
        # Open sockets check their session again before each message (accounts/session_auth.py): a
        # logout (the session deleted), a password change or a deactivation reaches that check's cache.
        post_save.connect(session_changed, sender=Session, dispatch_uid="session_saved")
        post_delete.connect(session_changed, sender=Session, dispatch_uid="session_deleted")
        user_model = settings.AUTH_USER_MODEL
        post_save.connect(user_sessions_changed, sender=user_model, dispatch_uid="user_sessions_saved")
        post_delete.connect(user_sessions_changed, sender=user_model, dispatch_uid="user_sessions_deleted")

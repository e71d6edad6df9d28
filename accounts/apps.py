from __future__ import annotations

from django.apps import AppConfig
from django.conf import settings
from django.db.models.signals import post_delete, post_save


class AccountsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        from rest_framework.authtoken.models import Token

        from accounts.authentication import token_changed, user_changed

        # Any change to a token or its user, from any interface, reaches the cached token users.
        post_save.connect(token_changed, sender=Token, dispatch_uid="token_saved")
        post_delete.connect(token_changed, sender=Token, dispatch_uid="token_deleted")
        post_save.connect(user_changed, sender=settings.AUTH_USER_MODEL, dispatch_uid="user_saved")

"""Writes on a user's API token (DRF's one token per user)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models import F
from rest_framework.authtoken.models import Token


@transaction.atomic
def api_token_create(*, user: AbstractBaseUser) -> Token:
    """A new token for ``user``; any previous token stops working at once.

    Serialized per user by a no-op UPDATE of the user's row (a row lock on PostgreSQL, the write lock on
    SQLite), as an admission is: two replacements at once (a double click, two tabs) each found no
    token to delete, and the second insert broke the one-token-per-user constraint, a 500.
    """
    get_user_model().objects.filter(pk=user.pk).update(last_login=F("last_login"))
    Token.objects.filter(user_id=user.pk).delete()
    return Token.objects.create(user_id=user.pk)


def api_token_revoke(*, user: AbstractBaseUser) -> bool:
    """Delete the user's token; False when there was none."""
    deleted, _ = Token.objects.filter(user_id=user.pk).delete()
    return deleted > 0

"""Writes on a user's API token (DRF's one token per user)."""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from rest_framework.authtoken.models import Token


@transaction.atomic
def api_token_create(*, user: AbstractBaseUser) -> Token:
    """A new token for ``user``; any previous token stops working at once."""
    Token.objects.filter(user_id=user.pk).delete()
    return Token.objects.create(user_id=user.pk)


def api_token_revoke(*, user: AbstractBaseUser) -> bool:
    """Delete the user's token; False when there was none."""
    deleted, _ = Token.objects.filter(user_id=user.pk).delete()
    return deleted > 0

"""API tokens in the admin: whose token, since when, and its last four characters; never the key.

A key is a password for the API. DRF's own ``TokenAdmin`` lists every key, and a token is named by its
key wherever the admin names an object (a change page's title and breadcrumbs, its history, a delete
confirmation, including a user's, which lists the token to be deleted with it, the messages, the
"Recent actions" log): anyone given the view permission on tokens, or the delete permission on users,
could read a writer's key, or a superuser's, and act as them. The key is shown once, to its owner, on
``/account/`` (docs/security.md, "Authentication"); the admin shows what the account page shows.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import Token, TokenProxy


def token_label(token: Token) -> str:
    """How the admin names a token: its user and the last four characters of its key."""
    return f"API token of {token.user} (…{token_key_hint(token)})"


def token_key_hint(token: Token) -> str:
    return token.key[-4:]


# The admin names objects with str(): DRF's Token (listed when a user is deleted) and its admin proxy.
Token.__str__ = token_label  # type: ignore[assignment,method-assign]
TokenProxy.__str__ = token_label  # type: ignore[assignment,method-assign]

admin.site.unregister(TokenProxy)


@admin.register(TokenProxy)
class ApiTokenAdmin(TokenAdmin):
    list_display = ("user", "key_hint", "created")

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> tuple[str, ...]:
        # A token is its user's from its creation: changed here, the key moved to another account, and
        # the client holding it acted as that account without ever signing in as it.
        return ("user",) if obj is not None else ()

    @admin.display(description="Key ends with")
    def key_hint(self, token: TokenProxy) -> str:
        return f"…{token_key_hint(token)}"

"""The admin never filters a list by a secret: an API token's key, a password hash.

The admin takes any lookup on a model's own fields from a list's URL, and one step into a related
model. A staff user allowed only to view tokens (or users) could ask ``?key__startswith=4``, or
``?auth_token__gt=4`` on the users' list, and read whether the list is empty: a key, hex digit by hex
digit, in about 400 requests, a superuser's included, and then act as that user on the API.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from rest_framework.authtoken.models import Token

from storyproject.middleware import lookup_reads_secret


def _staff(user_factory: Any, username: str, *codenames: str) -> Client:
    staff = user_factory(username, is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def root_key(user_factory: Any) -> str:
    root = user_factory("root", is_staff=True, is_superuser=True)
    return str(Token.objects.create(user=root).key)


@pytest.mark.django_db
def test_a_token_viewer_cannot_read_a_key_by_filtering_the_tokens_list(
    user_factory: Any, root_key: str
) -> None:
    client = _staff(user_factory, "viewer", "view_tokenproxy")
    assert client.get("/admin/authtoken/tokenproxy/").status_code == 200
    for lookup in (
        f"key__startswith={root_key[0]}",
        f"key={root_key}",
        f"key__gt={root_key[0]}",
        f"pk__startswith={root_key[0]}",
        f"key__in={root_key}",
        f"user__id__exact=1&key__contains={root_key[:4]}",
    ):
        response = client.get(f"/admin/authtoken/tokenproxy/?{lookup}")
        assert response.status_code == 400, lookup
        assert root_key[:4] not in response.content.decode()
        assert "cannot be filtered by a secret" in response.content.decode()
    # Its ordinary filters still answer.
    assert client.get("/admin/authtoken/tokenproxy/?q=root").status_code == 200
    assert client.get("/admin/authtoken/tokenproxy/?created__year=2026").status_code == 200


@pytest.mark.django_db
def test_a_user_viewer_cannot_read_a_key_or_a_password_through_the_users_list(
    user_factory: Any, root_key: str
) -> None:
    client = _staff(user_factory, "viewer", "view_user")
    for lookup in (
        f"auth_token__key__startswith={root_key[0]}",
        f"auth_token__pk__startswith={root_key[0]}",
        f"auth_token__gt={root_key[0]}",
        f"auth_token={root_key}",
        f"auth_token__in={root_key}",
        "password__startswith=pbkdf2",
    ):
        response = client.get(f"/admin/auth/user/?{lookup}")
        assert response.status_code == 400, lookup
    assert client.get("/admin/auth/user/?is_staff__exact=1").status_code == 200
    assert client.get("/admin/auth/user/?q=root").status_code == 200


def test_what_reads_a_secret() -> None:
    from django.contrib.auth import get_user_model

    from stories.models import GenerationRun, Story

    user = get_user_model()
    assert lookup_reads_secret(Token, "key")
    assert lookup_reads_secret(Token, "pk__gte")
    assert lookup_reads_secret(user, "auth_token")
    assert lookup_reads_secret(user, "auth_token__isnull")  # a lookup on the relation compares keys
    assert lookup_reads_secret(user, "password__startswith")
    assert lookup_reads_secret(Story, "owner__auth_token__key__startswith")
    assert lookup_reads_secret(GenerationRun, "user__password")
    assert not lookup_reads_secret(user, "auth_token__created__year")
    assert not lookup_reads_secret(user, "auth_token__user__username")
    assert not lookup_reads_secret(Token, "user__username__startswith")
    assert not lookup_reads_secret(Token, "created__year")
    assert not lookup_reads_secret(Story, "title__icontains")
    assert not lookup_reads_secret(Story, "q")
    assert not lookup_reads_secret(Story, "owner")

"""API tokens in the admin: staff see whose token it is and its last four characters, never the key."""

from __future__ import annotations

import importlib
import re
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from rest_framework.authtoken.models import Token

from accounts.services import api_token_create

TOKENS = "/admin/authtoken/tokenproxy/"


def _staff(user_factory: Any, username: str, *codenames: str) -> Client:
    user = user_factory(username, is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def _csrf(page: Any) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
    assert match
    return match.group(1)


@pytest.mark.django_db
def test_staff_who_may_view_tokens_see_whose_they_are_but_never_a_key(user_factory: Any, writer: Any) -> None:
    key = api_token_create(user=writer).key
    viewer = _staff(user_factory, "auditor", "view_tokenproxy")
    listed = viewer.get(TOKENS)
    assert listed.status_code == 200
    assert "writer" in listed.content.decode()
    assert f"…{key[-4:]}" in listed.content.decode()
    for path in (
        TOKENS,
        f"{TOKENS}{writer.pk}/change/",
        f"{TOKENS}{writer.pk}/history/",
        f"{TOKENS}?q=writer",
    ):
        page = viewer.get(path)
        assert page.status_code == 200, path
        assert key not in page.content.decode(), path


@pytest.mark.django_db
def test_a_superuser_adding_changing_and_deleting_tokens_is_never_shown_a_key(
    user_factory: Any, writer: Any
) -> None:
    root = user_factory("root", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(root)
    added = client.post(f"{TOKENS}add/", {"user": writer.pk}, follow=True)
    assert added.status_code == 200
    key = writer.auth_token.key
    assert "API token of writer" in added.content.decode()
    pages = [
        added,
        client.get(f"{TOKENS}{writer.pk}/change/"),
        client.get(f"{TOKENS}{writer.pk}/delete/"),
        client.get("/admin/"),  # "Recent actions"
        # The token is listed among what goes with the user.
        client.get(f"/admin/auth/user/{writer.pk}/delete/"),
    ]
    for page in pages:
        assert page.status_code == 200
        assert key not in page.content.decode()
    deleted = client.post(f"{TOKENS}{writer.pk}/delete/", {"post": "yes"}, follow=True)
    assert deleted.status_code == 200
    assert key not in deleted.content.decode()
    assert key not in client.get("/admin/").content.decode()


@pytest.mark.django_db
def test_a_tokens_user_cannot_be_changed_in_the_admin(
    user_factory: Any, writer: Any, other_writer: Any
) -> None:
    # The change form's user picker moved the key to another account: the writer's client, which holds
    # the key, then acted as that account (its stories, its runs) without signing in as it.
    key = api_token_create(user=writer).key
    root = user_factory("root", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(root)
    page = client.get(f"{TOKENS}{writer.pk}/change/")
    assert page.status_code == 200
    assert 'name="user"' not in page.content.decode()
    client.post(f"{TOKENS}{writer.pk}/change/", {"user": other_writer.pk})
    assert Token.objects.get(key=key).user == writer


@pytest.mark.django_db
def test_staff_who_may_delete_users_are_not_shown_the_keys_going_with_them(
    user_factory: Any, writer: Any
) -> None:
    key = api_token_create(user=writer).key
    staff = _staff(user_factory, "moderator", "view_user", "delete_user")
    page = staff.get("/admin/auth/user/")
    action = staff.post(
        "/admin/auth/user/",
        {"action": "delete_selected", "_selected_action": [writer.pk], "csrfmiddlewaretoken": _csrf(page)},
    )
    assert action.status_code == 200
    assert "API token of writer" in action.content.decode()
    assert key not in action.content.decode()


@pytest.mark.django_db
def test_log_entries_written_before_carry_no_key_once_migrated(user_factory: Any, writer: Any) -> None:
    # Entries the admin wrote with DRF's naming (the key) stayed in "Recent actions" and the history.
    from django.apps import apps
    from django.contrib.admin.models import ADDITION, LogEntry
    from django.contrib.contenttypes.models import ContentType
    from rest_framework.authtoken.models import Token, TokenProxy

    migration = importlib.import_module("accounts.migrations.0001_token_log_entries_keys_hidden")
    key = api_token_create(user=writer).key
    admin_user = user_factory("boss", is_staff=True, is_superuser=True)
    for model, object_id in ((TokenProxy, str(writer.pk)), (Token, key)):
        LogEntry.objects.create(
            user=admin_user,
            content_type=ContentType.objects.get_for_model(model, for_concrete_model=False),
            object_id=object_id,
            object_repr=key,
            action_flag=ADDITION,
        )
    migration.token_log_entries_keys_hidden(apps, None)
    entries = list(LogEntry.objects.values_list("object_repr", "object_id").order_by("pk"))
    assert entries == [("API token of writer", str(writer.pk)), ("API token", None)]
    staff = Client()
    staff.force_login(admin_user)
    assert key not in staff.get("/admin/").content.decode()

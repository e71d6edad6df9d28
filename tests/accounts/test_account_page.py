from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token


@pytest.fixture
def logged_in(writer: Any) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(writer)
    return client


def _csrf(client: Client) -> str:
    page = client.get("/account/")
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
    assert match
    return match.group(1)


def test_the_account_page_needs_a_login(db: None) -> None:
    response = Client().get("/account/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_a_writer_creates_a_token_sees_it_once_and_uses_it_on_the_api(logged_in: Client, writer: Any) -> None:
    assert "You have no API token." in logged_in.get("/account/").content.decode()
    created = logged_in.post("/account/token/", {"csrfmiddlewaretoken": _csrf(logged_in)})
    assert created.status_code == 200
    assert "no-store" in created["Cache-Control"]
    key = Token.objects.get(user=writer).key
    assert key in created.content.decode()
    later = logged_in.get("/account/").content.decode()
    assert key not in later
    assert f"…{key[-4:]}" in later
    api = Client().get("/api/stories/", HTTP_AUTHORIZATION=f"Token {key}")
    assert api.status_code == 200


def test_replacing_a_token_invalidates_the_old_one(logged_in: Client, writer: Any) -> None:
    logged_in.post("/account/token/", {"csrfmiddlewaretoken": _csrf(logged_in)})
    old = Token.objects.get(user=writer).key
    logged_in.post("/account/token/", {"csrfmiddlewaretoken": _csrf(logged_in)})
    new = Token.objects.get(user=writer).key
    assert new != old
    assert Client().get("/api/stories/", HTTP_AUTHORIZATION=f"Token {old}").status_code == 401
    assert Client().get("/api/stories/", HTTP_AUTHORIZATION=f"Token {new}").status_code == 200


def test_a_writer_revokes_the_token(logged_in: Client, writer: Any) -> None:
    logged_in.post("/account/token/", {"csrfmiddlewaretoken": _csrf(logged_in)})
    key = Token.objects.get(user=writer).key
    revoked = logged_in.post("/account/token/revoke/", {"csrfmiddlewaretoken": _csrf(logged_in)}, follow=True)
    assert "Your API token was revoked" in revoked.content.decode()
    assert not Token.objects.filter(user=writer).exists()
    assert Client().get("/api/stories/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 401


def test_token_forms_refuse_a_cross_site_post_without_csrf(logged_in: Client, writer: Any) -> None:
    assert logged_in.post("/account/token/").status_code == 403
    Token.objects.create(user=writer)
    assert logged_in.post("/account/token/revoke/").status_code == 403
    assert Token.objects.filter(user=writer).exists()


def test_token_forms_only_accept_post(logged_in: Client, writer: Any) -> None:
    assert logged_in.get("/account/token/").status_code == 405
    assert logged_in.get("/account/token/revoke/").status_code == 405
    assert not Token.objects.filter(user=writer).exists()


def test_one_writers_actions_never_touch_another_writers_token(
    logged_in: Client, other_writer: Any, writer: Any
) -> None:
    theirs = Token.objects.create(user=other_writer)
    logged_in.post("/account/token/", {"csrfmiddlewaretoken": _csrf(logged_in)})
    logged_in.post("/account/token/revoke/", {"csrfmiddlewaretoken": _csrf(logged_in)})
    assert Token.objects.get(user=other_writer).key == theirs.key
    assert theirs.key not in logged_in.get("/account/").content.decode()

from __future__ import annotations

import re
import threading
from typing import Any

import pytest
from django.db import connection
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


def test_a_post_only_address_opened_in_the_browser_is_a_page_saying_so(
    logged_in: Client, writer: Any
) -> None:
    # It was Django's empty 405: a blank page.
    response = logged_in.get("/account/token/revoke/")
    assert response.status_code == 405 and response["Allow"] == "POST"
    page = response.content.decode()
    assert "It takes POST, not GET" in page and "Nothing was done." in page
    assert "Back to your stories" in page
    # The API's 405 stays DRF's JSON.
    key = Token.objects.create(user=writer).key
    api = Client().put("/api/personas/", HTTP_AUTHORIZATION=f"Token {key}")
    assert api.status_code == 405 and api["Content-Type"] == "application/json"


def test_one_writers_actions_never_touch_another_writers_token(
    logged_in: Client, other_writer: Any, writer: Any
) -> None:
    theirs = Token.objects.create(user=other_writer)
    logged_in.post("/account/token/", {"csrfmiddlewaretoken": _csrf(logged_in)})
    logged_in.post("/account/token/revoke/", {"csrfmiddlewaretoken": _csrf(logged_in)})
    assert Token.objects.get(user=other_writer).key == theirs.key
    assert theirs.key not in logged_in.get("/account/").content.decode()


@pytest.mark.django_db(transaction=True)
def test_replacing_the_token_from_two_tabs_at_once_gives_each_a_page_and_leaves_one_working_token(
    user_factory: Any,
) -> None:
    # Each thread has its own database connection, as two requests in two processes would. Both used
    # to find no token to delete, and the second insert broke the one-token-per-user rule: a 500.
    writer = user_factory("writer")
    Token.objects.create(user=writer)
    barrier = threading.Barrier(4)
    pages: list[tuple[int, str]] = []

    def replace() -> None:
        client = Client(raise_request_exception=False)
        client.force_login(writer)
        try:
            barrier.wait(timeout=10)
            response = client.post("/account/token/")
            pages.append((response.status_code, response.content.decode()))
        finally:
            connection.close()

    for _round in range(3):
        threads = [threading.Thread(target=replace) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        barrier.reset()
    assert [status for status, _page in pages] == [200] * 12
    key = Token.objects.get(user=writer).key
    assert sum(key in page for _status, page in pages) == 1  # the last one shown is the one that works
    assert Client().get("/api/stories/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 200


def _password_change(client: Client, old: str, new: str, again: str | None = None) -> Any:
    page = client.get("/account/password/")
    assert page.status_code == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
    assert token
    fields = {"old_password": old, "new_password1": new, "new_password2": new if again is None else again}
    return client.post("/account/password/", {"csrfmiddlewaretoken": token.group(1), **fields})


def test_a_writer_changes_their_password_and_their_other_sessions_are_signed_out(writer: Any) -> None:
    here, elsewhere = Client(enforce_csrf_checks=True), Client()
    assert here.login(username="writer", password="pw-writer")
    assert elsewhere.login(username="writer", password="pw-writer")
    assert "Change my password" in here.get("/account/").content.decode()
    changed = _password_change(here, "pw-writer", "a harbour at low tide 1987")
    assert changed.status_code == 302 and changed["Location"] == "/account/"
    assert "Your password was changed" in here.get("/account/").content.decode()
    # This session stays signed in; the other is signed out; only the new password signs in.
    assert here.get("/account/").status_code == 200
    assert elsewhere.get("/account/").status_code == 302
    assert not Client().login(username="writer", password="pw-writer")
    assert Client().login(username="writer", password="a harbour at low tide 1987")


def test_a_wrong_old_password_or_a_weak_new_one_changes_nothing_and_says_why(writer: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    assert client.login(username="writer", password="pw-writer")
    wrong = _password_change(client, "not-it", "a harbour at low tide 1987")
    assert wrong.status_code == 400
    assert "Your old password was entered incorrectly" in wrong.content.decode()
    weak = _password_change(client, "pw-writer", "12345678")
    assert weak.status_code == 400
    assert "This password is too common." in weak.content.decode()
    mismatch = _password_change(
        client, "pw-writer", "a harbour at low tide 1987", again="a harbour at low tide"
    )
    assert mismatch.status_code == 400
    assert "didn\u2019t match" in mismatch.content.decode()
    assert Client().login(username="writer", password="pw-writer")


def test_the_password_fields_point_screen_readers_at_their_errors_and_help(writer: Any) -> None:
    # Each field named, in aria-describedby, an error and a help text ("id_old_password_error",
    # "id_new_password1_helptext") that had other ids or none: a screen reader read no error at all.
    client = Client()
    assert client.login(username="writer", password="pw-writer")
    page = _password_change(client, "not-it", "a harbour", "a harbour at low tide").content.decode()
    described = {ref for refs in re.findall(r'aria-describedby="([^"]+)"', page) for ref in refs.split()}
    assert {"id_old_password_error", "id_new_password1_helptext", "id_new_password2_error"} <= described
    for ref in described:
        assert f'id="{ref}"' in page, ref


def test_guessing_the_old_password_is_throttled_as_a_login_is(writer: Any, settings: Any) -> None:
    # A session left open elsewhere must not let someone try old passwords without limit.
    settings.LOGIN_FAILURES_PER_ACCOUNT = 3
    client = Client(enforce_csrf_checks=True)
    assert client.login(username="writer", password="pw-writer")
    for guess in ("a", "b", "c"):
        assert _password_change(client, guess, "a harbour at low tide 1987").status_code == 400
    locked = _password_change(client, "pw-writer", "a harbour at low tide 1987")
    assert locked.status_code == 429 and int(locked["Retry-After"]) > 0
    assert not Client().login(username="writer", password="a harbour at low tide 1987")


def test_the_password_page_needs_a_login(db: None) -> None:
    response = Client().get("/account/password/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")

"""The check an open socket makes before each message: cached, forgotten at commit, without side effects."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.sessions.models import Session
from django.test import Client

from accounts import session_auth
from accounts.services import api_token_create, api_token_revoke
from stories.ws_auth import SocketCredential, credential_current
from storyproject import stamped_cache

# The check is cached outside transactions only (what a transaction reads may roll back): these tests
# commit for real, as the server does.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _checks_cached(settings: Any) -> None:
    # On in deployments with Redis; the SQLite pass's local-memory cache is this process's own.
    settings.STORY_CACHE_TOKEN_USERS = True


def _signed_in(user: Any) -> tuple[Client, SocketCredential]:
    client = Client()
    client.force_login(user)
    key = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    return client, SocketCredential(user_id=user.pk, session_key=key)


def test_a_warm_check_makes_no_query_for_a_session_or_a_token(
    writer: Any, django_assert_num_queries: Any
) -> None:
    _, session = _signed_in(writer)
    token = SocketCredential(user_id=writer.pk, token_key=api_token_create(user=writer).key)
    for credential in (session, token):
        assert credential_current(credential=credential)  # cold
        with django_assert_num_queries(0):
            assert credential_current(credential=credential)


def test_without_a_shared_cache_the_session_is_read_every_time(
    writer: Any, settings: Any, django_assert_num_queries: Any
) -> None:
    settings.STORY_CACHE_TOKEN_USERS = False
    client, credential = _signed_in(writer)
    for _ in range(2):
        with django_assert_num_queries(2):  # the session, the user
            assert credential_current(credential=credential)
    client.post("/accounts/logout/")
    assert not credential_current(credential=credential)


def test_logout_password_change_and_deactivation_are_seen_at_once_by_a_warm_check(writer: Any) -> None:
    client, credential = _signed_in(writer)
    assert credential_current(credential=credential)
    client.post("/accounts/logout/")
    assert not credential_current(credential=credential)

    _, credential = _signed_in(writer)
    assert credential_current(credential=credential)
    writer.set_password("a-new-password")
    writer.save(update_fields=["password"])
    assert not credential_current(credential=credential)

    _, credential = _signed_in(writer)
    assert credential_current(credential=credential)
    writer.is_active = False
    writer.save()
    assert not credential_current(credential=credential)


def test_a_session_is_not_valid_for_another_user(writer: Any, other_writer: Any) -> None:
    _, credential = _signed_in(writer)
    assert not credential_current(
        credential=SocketCredential(user_id=other_writer.pk, session_key=credential.session_key)
    )
    assert credential_current(credential=credential)


def test_a_logout_that_commits_during_a_cold_read_is_not_undone_by_it(
    writer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The check reads the session, then the logout commits, then the check writes what it read to
    # the cache: that entry must never be served.
    client, credential = _signed_in(writer)
    write = stamped_cache.set_many

    def logout_then_write(values: dict[str, Any], timeout: int) -> bool:
        if any(key.startswith("session-user:") for key in values):
            client.post("/accounts/logout/")
        return write(values, timeout)

    monkeypatch.setattr(stamped_cache, "set_many", logout_then_write)
    assert credential_current(credential=credential)  # what it read before the logout
    monkeypatch.setattr(stamped_cache, "set_many", write)
    assert not credential_current(credential=credential)


def test_a_session_signed_with_a_fallback_secret_holds_and_stays_as_it_was(
    writer: Any, settings: Any
) -> None:
    # django.contrib.auth.get_user would cycle this session's key, signing the browser out (no HTTP
    # response carries the new cookie to it); the check changes nothing.
    client, credential = _signed_in(writer)
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-rotated-secret-key-for-this-test-only-0123456789"
    assert credential_current(credential=credential)
    assert Session.objects.filter(session_key=credential.session_key).exists()
    assert client.get("/account/").status_code == 200


def test_an_unknown_or_anonymous_session_does_not_hold(writer: Any) -> None:
    anonymous = Client()
    anonymous.get("/accounts/login/")  # a session with a CSRF token at most, no user
    for key in ("0" * 32, anonymous.session.session_key or "x" * 32):
        assert not session_auth.session_user_current(session_key=key, user_id=writer.pk)


def test_a_token_credential_follows_the_token(writer: Any) -> None:
    credential = SocketCredential(user_id=writer.pk, token_key=api_token_create(user=writer).key)
    assert credential_current(credential=credential)
    api_token_revoke(user=writer)
    assert not credential_current(credential=credential)


def test_a_session_engine_without_signals_is_read_every_time(
    writer: Any, settings: Any, django_assert_num_queries: Any
) -> None:
    # The cache session engine keeps no rows, so nothing would forget a cached check at logout.
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.cache"
    client, credential = _signed_in(writer)
    assert credential_current(credential=credential)
    with django_assert_num_queries(1):  # the user; the session is in the cache
        assert credential_current(credential=credential)
    client.post("/accounts/logout/")
    assert not credential_current(credential=credential)

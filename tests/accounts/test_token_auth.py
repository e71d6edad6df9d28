"""API tokens: the token's user is cached, and a revoked token or a deactivated user is refused at once."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client
from rest_framework.authtoken.models import Token, TokenProxy

from accounts import authentication
from accounts.services import api_token_create, api_token_revoke
from personas.models import PersonaConfig
from storyproject import stamped_cache

BATCH = "/api/personas/contexts/"
# The token cache is written outside transactions only (what a transaction reads may roll back):
# these tests commit for real, as the server does.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _token_users_cached(settings: Any) -> None:
    # On in deployments with Redis; the SQLite pass's local-memory cache is this process's own.
    settings.STORY_CACHE_TOKEN_USERS = True


def _get(key: str, path: str = "/api/stories/") -> Any:
    return Client().get(path, HTTP_AUTHORIZATION=f"Token {key}")


def test_a_warm_batch_request_with_a_token_makes_no_query(
    writer: Any, django_assert_num_queries: Any
) -> None:
    key = api_token_create(user=writer).key
    names = [f"p-{i}" for i in range(50)]
    PersonaConfig.objects.bulk_create(
        PersonaConfig(name=name, display_name=name, config_data={"voice": "Plain."}) for name in names
    )
    with django_assert_num_queries(2):  # the token's user, then the personas
        cold = _get(key, f"{BATCH}?names={','.join(names)}")
    with django_assert_num_queries(0):
        warm = _get(key, f"{BATCH}?names={','.join(names)}")
    assert cold.status_code == warm.status_code == 200
    assert warm.json() == cold.json()
    assert [c["name"] for c in warm.json()["contexts"]] == names


def test_a_revoked_token_is_refused_at_once(writer: Any) -> None:
    key = api_token_create(user=writer).key
    assert _get(key).status_code == 200
    assert _get(key).status_code == 200  # from the cache now
    assert api_token_revoke(user=writer)
    refused = _get(key)
    assert refused.status_code == 401
    assert refused.json()["detail"] == "Invalid token."


def test_a_replaced_token_is_refused_and_the_new_one_accepted(writer: Any) -> None:
    old = api_token_create(user=writer).key
    assert _get(old).status_code == 200
    new = api_token_create(user=writer).key
    assert _get(old).status_code == 401
    assert _get(new).status_code == 200


def test_a_deactivated_user_is_refused_at_once(writer: Any) -> None:
    key = api_token_create(user=writer).key
    assert _get(key).status_code == 200
    writer.is_active = False
    writer.save()  # as the admin does
    refused = _get(key)
    assert refused.status_code == 401
    assert refused.json()["detail"] == "User inactive or deleted."


def test_a_deleted_user_is_refused_at_once(writer: Any) -> None:
    key = api_token_create(user=writer).key
    assert _get(key).status_code == 200
    writer.delete()
    assert _get(key).status_code == 401


def test_a_token_given_to_another_user_in_the_admin_authenticates_that_user_at_once(
    writer: Any, other_writer: Any
) -> None:
    key = api_token_create(user=writer).key
    assert _get(key, "/api/stories/").status_code == 200
    assert authentication.token_user(key) == writer  # cached
    token = TokenProxy.objects.get(key=key)  # what DRF's token admin edits
    token.user = other_writer
    token.save()
    assert authentication.token_user(key) == other_writer


def test_without_a_shared_cache_the_token_is_read_from_the_database_every_time(
    writer: Any, settings: Any, django_assert_num_queries: Any
) -> None:
    settings.STORY_CACHE_TOKEN_USERS = False
    key = api_token_create(user=writer).key
    for _ in range(2):
        with django_assert_num_queries(1):
            assert authentication.token_user(key) == writer
    assert cache.get(f"token-user:{stamped_cache.digest(key)}") is None


def test_an_unknown_token_is_refused_warm_and_cold(writer: Any) -> None:
    assert _get("0" * 40).status_code == 401
    assert _get("0" * 40).status_code == 401


def test_a_revocation_that_commits_during_a_cold_read_is_not_undone_by_it(
    writer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reader reads the token from the database, then the revocation commits, then the reader
    # writes what it read to the cache: that entry must never be served.
    key = api_token_create(user=writer).key
    write = stamped_cache.set_many

    def revoke_then_write(values: dict[str, Any], timeout: int) -> bool:
        if any(k.startswith("token-user:") for k in values):
            api_token_revoke(user=writer)
        return write(values, timeout)

    monkeypatch.setattr(stamped_cache, "set_many", revoke_then_write)
    assert authentication.token_user(key) == writer  # what it read before the revocation
    monkeypatch.setattr(stamped_cache, "set_many", write)
    assert authentication.token_user(key) is None
    assert _get(key).status_code == 401


def test_the_cache_holds_no_password_hash_and_the_cached_user_is_complete(writer: Any) -> None:
    key = api_token_create(user=writer).key
    authentication.token_user(key)
    stored = cache.get(f"token-user:{stamped_cache.digest(key)}")
    assert stored["user"]["username"] == "writer"
    assert "password" not in stored["user"]
    assert writer.password not in repr(stored)

    user = authentication.token_user(key)  # from the cache
    assert isinstance(user, User) and user.pk == writer.pk
    assert user.check_password("pw-writer")  # the hash is loaded from the database when read
    user.first_name = "Ada"
    user.save()
    writer.refresh_from_db()
    assert writer.first_name == "Ada"
    assert writer.check_password("pw-writer")


def test_a_token_still_works_while_the_cache_is_down(writer: Any, settings: Any) -> None:
    key = api_token_create(user=writer).key
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    assert _get(key).status_code == 200
    assert Token.objects.filter(key=key).exists()

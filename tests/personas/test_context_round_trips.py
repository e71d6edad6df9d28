"""A cold batch of contexts: stamps and entries in one Redis round trip, and still never a stale context.

Run on the real Redis (Redis runs on every machine of the project; .ci/run starts it) and on the
local-memory cache, which has no script and takes the plain path.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.core.cache import cache
from django.test import override_settings
from redis.connection import Connection
from rest_framework.test import APIClient

from personas import cache as context_cache
from personas.models import PersonaConfig
from personas.selectors import persona_contexts
from storyproject import after_response, stamped_cache

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
BACKENDS = {
    "redis": {
        "BACKEND": "storyproject.cache.FailSoftRedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "rt-test",
    },
    "locmem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "rt-test"},
}


@pytest.fixture(params=list(BACKENDS))
def each_cache(request: pytest.FixtureRequest) -> Iterator[str]:
    with override_settings(CACHES={"default": BACKENDS[request.param]}):
        cache.clear()
        yield request.param
        cache.clear()


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts what redis-py sends: one send per command, or per pipeline (all its commands at once)."""
    sent = [0]
    send = Connection.send_packed_command

    def counted(self: Connection, command: Any, check_health: bool = True) -> None:
        sent[0] += 1
        send(self, command, check_health)

    monkeypatch.setattr(Connection, "send_packed_command", counted)
    return sent


@pytest.fixture
def five(persona_factory: Any, django_capture_on_commit_callbacks: Any) -> list[str]:
    names = [f"rt-{i}" for i in range(5)]
    with django_capture_on_commit_callbacks(execute=True):
        for name in names:
            persona_factory(name)
    return names


@pytest.mark.django_db
def test_a_cold_read_takes_one_round_trip_before_the_query_and_a_warm_one_one_in_all(
    five: list[str], round_trips: list[int], django_assert_num_queries: Any
) -> None:
    with override_settings(CACHES={"default": BACKENDS["redis"]}):
        cache.clear()
        persona_contexts(names=["rt-warm-up"])  # loads the script into this Redis, once
        cache.clear()
        round_trips[0] = 0
        with django_assert_num_queries(1):
            cold = persona_contexts(names=five)
        # The script (stamps made, stamps and entries read), then the entries written.
        assert round_trips[0] == 2
        round_trips[0] = 0
        with django_assert_num_queries(0):
            warm = persona_contexts(names=five)
        assert round_trips[0] == 1
        assert warm == cold and len(cold.contexts) == 5
        cache.clear()


@pytest.mark.django_db
def test_a_lost_stamp_makes_the_old_entry_unreachable(
    each_cache: str, five: list[str], django_assert_num_queries: Any
) -> None:
    persona_contexts(names=five)
    # The row changes behind the cache's back and the stamp is evicted; the old entry stays.
    PersonaConfig.objects.filter(name="rt-2").update(
        config_data={"personality": "Changed.", "voice": "Loud."}
    )
    cache.delete(context_cache.stamp_key("rt-2"))
    with django_assert_num_queries(1):
        contexts = persona_contexts(names=five)
    assert "Changed." in contexts.contexts[2].context
    with django_assert_num_queries(0):
        assert persona_contexts(names=five) == contexts


@pytest.mark.django_db
def test_an_edit_after_the_read_is_seen_by_the_next_read(
    each_cache: str, five: list[str], django_capture_on_commit_callbacks: Any
) -> None:
    persona_contexts(names=five)
    persona = PersonaConfig.objects.get(name="rt-4")
    persona.config_data = {"personality": "Edited.", "voice": "Soft."}
    with django_capture_on_commit_callbacks(execute=True):
        persona.save()  # the signal bumps the stamp after the commit
    assert "Edited." in persona_contexts(names=five).contexts[4].context


def test_a_stamp_another_reader_made_meanwhile_is_kept_not_replaced(each_cache: str) -> None:
    cache.set("rt-stamp:a", 1234, 60)
    found = stamped_cache.get_many_stamped(
        ["rt-stamp:a", "rt-stamp:b", "rt-entry:a"], ["rt-stamp:a", "rt-stamp:b"]
    )
    assert found["rt-stamp:a"] == 1234
    assert isinstance(found["rt-stamp:b"], int)
    assert cache.get("rt-stamp:b") == found["rt-stamp:b"]  # written, so the next reader gets the same
    assert "rt-entry:a" not in found


def test_redis_down_reads_as_an_empty_cache_and_makes_no_stamp() -> None:
    config = {
        **BACKENDS["redis"],
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"socket_connect_timeout": 1},
    }
    with override_settings(CACHES={"default": config}):
        assert stamped_cache.get_many_stamped(["rt-stamp:x", "rt-entry:x"], ["rt-stamp:x"]) == {}


def test_the_stamps_get_their_timeout_on_redis() -> None:
    with override_settings(CACHES={"default": BACKENDS["redis"]}):
        stamped_cache.get_many_stamped(["rt-stamp:ttl"], ["rt-stamp:ttl"])
        ttl = redis.Redis.from_url(REDIS_URL).ttl(cache.make_key("rt-stamp:ttl"))
        cache.delete("rt-stamp:ttl")
    assert stamped_cache.STAMP_TIMEOUT - 60 < ttl <= stamped_cache.STAMP_TIMEOUT


@pytest.mark.django_db
@pytest.mark.parametrize("count", [1, 5, 50])
def test_a_cold_batch_costs_the_same_query_and_round_trips_at_any_size(
    count: int,
    persona_factory: Any,
    django_capture_on_commit_callbacks: Any,
    round_trips: list[int],
    django_assert_num_queries: Any,
    writer: Any,
) -> None:
    names = [f"rt-n-{i}" for i in range(count)]
    with django_capture_on_commit_callbacks(execute=True):
        for name in names:
            persona_factory(name)
    api = APIClient()
    api.force_authenticate(writer)  # no token: the round trips counted are the contexts' own
    with override_settings(CACHES={"default": BACKENDS["redis"]}):
        cache.clear()
        persona_contexts(names=["rt-warm-up"])  # loads both scripts into this Redis, once
        cache.clear()
        round_trips[0] = 0
        with django_assert_num_queries(1):
            cold = api.get("/api/personas/contexts/", {"names": ",".join(names)})
        # The script making the stamps and reading everything, then one command writing every entry.
        assert round_trips[0] == 2
        round_trips[0] = 0
        with django_assert_num_queries(0):
            warm = api.get("/api/personas/contexts/", {"names": ",".join(names)})
        assert round_trips[0] == 1
        cache.clear()
    assert [c["name"] for c in cold.json()["contexts"]] == names
    assert warm.content == cold.content and warm["ETag"] == cold["ETag"]


@pytest.mark.django_db
def test_an_entry_written_late_after_an_edit_is_never_served(
    each_cache: str, five: list[str], django_capture_on_commit_callbacks: Any
) -> None:
    # Under the ASGI handler a cold read writes its entries after the response: an edit can commit
    # (and bump the stamp) before that write lands. The old text must not come back.
    with after_response.collected() as queue:
        assert "rt-3 is brave." in persona_contexts(names=five).contexts[3].context
        persona = PersonaConfig.objects.get(name="rt-3")
        persona.config_data = {"personality": "Edited meanwhile."}
        with django_capture_on_commit_callbacks(execute=True):
            persona.save()
        assert queue.pending  # the first read's entries, built before the edit
        queue.drain()
    assert "Edited meanwhile." in persona_contexts(names=five).contexts[3].context


def test_the_entries_script_sets_values_and_timeouts_like_django() -> None:
    with override_settings(CACHES={"default": BACKENDS["redis"]}):
        cache.set_many({"rt-many:a": {"x": 1}, "rt-many:b": 7}, timeout=120)
        cache.set_many({"rt-many:c": "forever"}, timeout=None)
        client = redis.Redis.from_url(REDIS_URL)
        assert cache.get_many(["rt-many:a", "rt-many:b", "rt-many:c"]) == {
            "rt-many:a": {"x": 1},
            "rt-many:b": 7,
            "rt-many:c": "forever",
        }
        assert 60 < client.ttl(cache.make_key("rt-many:a")) <= 120
        assert client.ttl(cache.make_key("rt-many:c")) == -1  # no expiry
        cache.set_many({"rt-many:a": 1}, timeout=0)  # 0 deletes, as in Django
        assert cache.get("rt-many:a") is None
        cache.delete_many(["rt-many:a", "rt-many:b", "rt-many:c"])

"""A Redis cache that degrades to "no cache" while Redis is unreachable, instead of failing requests.

Everything the app caches (persona contexts, generation settings, paces) can be recomputed from the
database, so a cache outage must cost speed, not generations. Django's RedisCache raises on a refused
connection; this one logs a warning, answers as an empty cache would, and skips Redis for a few
seconds (a small circuit breaker) so a dead server does not add a connect timeout to every call.

Django makes a cache object per thread and per request context, and its Redis client keeps its
connection pool on that object: under ASGI every request opened a new Redis connection (a TCP
handshake, a ``CLIENT SETINFO`` round trip, and redis-py reading its own version from the package
metadata). Here the client, hence its thread-safe pool, and the circuit breaker's state are shared by
every cache object of the process with the same servers and options.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.utils.functional import cached_property
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5.0
_F = TypeVar("_F", bound=Callable[..., Any])


def _fail_soft(fallback: Callable[..., Any]) -> Callable[[_F], _F]:
    """Run the cache operation unless Redis is known to be down; on a connection error, fall back."""

    def decorate(method: _F) -> _F:
        @functools.wraps(method)
        def wrapper(self: FailSoftRedisCache, *args: Any, **kwargs: Any) -> Any:
            if time.monotonic() < self._shared.down_until:
                return fallback(*args, **kwargs)
            try:
                return method(self, *args, **kwargs)
            except (RedisConnectionError, RedisTimeoutError) as error:
                self._shared.down_until = time.monotonic() + RETRY_AFTER_SECONDS
                logger.warning(
                    "cache unavailable, running without it for %ss: %s", RETRY_AFTER_SECONDS, error
                )
                return fallback(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def _default(key: Any, default: Any = None, *args: Any, **kwargs: Any) -> Any:
    return default


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


def _false(*args: Any, **kwargs: Any) -> bool:
    return False


def _empty(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {}


def _no_such_key(key: Any, *args: Any, **kwargs: Any) -> int:
    # incr and decr on an empty cache: Django's own answer for a missing key.
    raise ValueError(f"Key {key!r} not found.")


def _all_failed(data: dict[str, Any], *args: Any, **kwargs: Any) -> list[str]:
    return list(data)


class _ReusingClient(RedisCacheClient):
    """Django's Redis client, with one ``redis.Redis`` per connection pool instead of one per call.

    redis-py 8 fills a table of about two hundred response callbacks in every ``Redis()``; Django built
    one for each cache operation. A ``Redis`` over a pool is safe to share between threads.
    """

    def __init__(self, servers: list[str], **options: Any) -> None:
        super().__init__(servers, **options)
        self._redis_by_pool: dict[int, Any] = {}
        # redis-py's Script: EVALSHA, loading the script once per Redis server when it answers NOSCRIPT.
        self._set_many_script: Any = None

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        pool = self._get_connection_pool(write)  # type: ignore[attr-defined]
        client = self._redis_by_pool.get(id(pool))
        if client is None:
            client = self._redis_by_pool.setdefault(id(pool), redis.Redis(connection_pool=pool))
        return client

    def set_many(self, data: Mapping[Any, Any], timeout: Any) -> None:
        # Django sends MULTI, MSET, one EXPIRE per key and EXEC: for the 50 entries of a cold persona batch,
        # packing and parsing those 53 commands cost more than the round trip. One script does the same
        # (atomically, as the transaction did) in one command. No timeout (None), or 0 (which deletes):
        # Django's way. RedisCache gives this client a number of seconds or None (get_backend_timeout).
        if not isinstance(timeout, int) or timeout <= 0:
            super().set_many(data, timeout)
            return
        client = self.get_client(None, write=True)
        if self._set_many_script is None:
            self._set_many_script = client.register_script(_SET_MANY)
        dumps = self._serializer.dumps  # type: ignore[attr-defined]
        self._set_many_script(
            keys=list(data), args=[timeout, *(dumps(value) for value in data.values())], client=client
        )


# One round trip for a stamped read (storyproject/stamped_cache.py): give each missing stamp its fresh
# value (SET NX: a stamp another reader made meanwhile is kept, never replaced), then read every key.
# KEYS: the stamps, then the other keys. ARGV: the stamps' timeout in seconds, then one value per stamp.
_ADD_THEN_GET = """
for i = 2, #ARGV do
  redis.call('SET', KEYS[i - 1], ARGV[i], 'NX', 'EX', ARGV[1])
end
return redis.call('MGET', unpack(KEYS))
"""


# Each key set to its value with the timeout. KEYS: the keys. ARGV: the timeout in seconds, then one value
# per key.
_SET_MANY = """
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ARGV[1])
end
return #KEYS
"""


@dataclass
class _Shared:
    client: RedisCacheClient
    down_until: float = 0.0  # Redis is skipped until then (time.monotonic())
    # redis-py's Script: EVALSHA, loading the script once per Redis server when it answers NOSCRIPT.
    add_then_get: Any = None


_shared: dict[tuple[tuple[str, ...], str], _Shared] = {}
_shared_lock = threading.Lock()


class FailSoftRedisCache(RedisCache):
    def __init__(self, server: str | list[str], params: dict[str, Any]) -> None:
        super().__init__(server, params)
        # As RedisCache reads its LOCATION and OPTIONS (its own copies are not in django-stubs).
        self._shared_servers = re.split("[;,]", server) if isinstance(server, str) else list(server)
        self._shared_options: dict[str, Any] = params.get("OPTIONS", {})

    @cached_property
    def _shared(self) -> _Shared:
        key = (tuple(self._shared_servers), repr(sorted(self._shared_options.items())))
        with _shared_lock:
            if key not in _shared:
                _shared[key] = _Shared(client=_ReusingClient(self._shared_servers, **self._shared_options))
            return _shared[key]

    @cached_property
    def _cache(self) -> RedisCacheClient:
        return self._shared.client

    def validate_key(self, key: str) -> None:
        # BaseCache warns about keys memcached would refuse, checking every character of every key:
        # a quarter of a cold 50-persona batch read. Redis takes any key, and ours are short digests.
        pass

    @_fail_soft(_empty)
    def add_many_then_get_many(
        self, adds: dict[str, int], keys: list[str], *, timeout: int
    ) -> dict[str, Any]:
        """Set each key of ``adds`` that is missing to its value, then read ``adds`` and ``keys``:
        one round trip (a Lua script), where ``add`` for each and ``get_many`` would take two or more."""
        names = list(adds) + [key for key in keys if key not in adds]
        key_map = {self.make_and_validate_key(name): name for name in names}
        client = self._cache.get_client(None, write=True)
        if self._shared.add_then_get is None:
            self._shared.add_then_get = client.register_script(_ADD_THEN_GET)
        values = self._shared.add_then_get(
            keys=list(key_map), args=[self.get_backend_timeout(timeout), *adds.values()], client=client
        )
        loads = self._cache._serializer.loads  # type: ignore[attr-defined]
        return {
            key_map[key]: loads(value)
            for key, value in zip(key_map, values, strict=True)
            if value is not None
        }

    get = _fail_soft(_default)(RedisCache.get)
    set = _fail_soft(_nothing)(RedisCache.set)
    add = _fail_soft(_false)(RedisCache.add)
    touch = _fail_soft(_false)(RedisCache.touch)
    delete = _fail_soft(_false)(RedisCache.delete)
    has_key = _fail_soft(_false)(RedisCache.has_key)
    incr = _fail_soft(_no_such_key)(RedisCache.incr)
    decr = _fail_soft(_no_such_key)(RedisCache.decr)
    get_many = _fail_soft(_empty)(RedisCache.get_many)
    set_many = _fail_soft(_all_failed)(RedisCache.set_many)
    delete_many = _fail_soft(_nothing)(RedisCache.delete_many)
    clear = _fail_soft(_nothing)(RedisCache.clear)

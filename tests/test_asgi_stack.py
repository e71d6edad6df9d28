"""The ASGI application daphne serves: Django's HTTP stack in one thread hop, Redis connections shared."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
from typing import Any

import httpx
import pytest
import redis
from django.core.cache import caches
from django.test import override_settings

from storyproject.asgi import django_asgi_app
from storyproject.middleware import CSP_HEADER


def _asgi_get(path: str, **headers: str) -> httpx.Response:
    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=django_asgi_app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(get())


def test_the_middleware_chain_runs_in_sync_mode() -> None:
    # In async mode every MiddlewareMixin middleware costs two trips to a worker thread per request.
    assert not asyncio.iscoroutinefunction(django_asgi_app._middleware_chain)  # type: ignore[attr-defined]


@pytest.mark.django_db(transaction=True)
def test_pages_through_the_asgi_app_keep_every_middleware() -> None:
    response, again = _asgi_get("/accounts/login/"), _asgi_get("/accounts/login/")
    assert response.status_code == 200
    assert "Log in" in response.text
    nonces = {re.findall(r"'nonce-([^']+)'", r.headers[CSP_HEADER])[0] for r in (response, again)}
    assert len(nonces) == 2  # CSP middleware: a fresh nonce per request
    assert "csrftoken" in response.cookies  # CSRF middleware
    assert response.headers["X-Frame-Options"] == "DENY"  # clickjacking middleware
    assert response.headers["X-Content-Type-Options"] == "nosniff"  # security middleware


@pytest.mark.django_db(transaction=True)
def test_refusals_through_the_asgi_app_are_answered_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="django.request"):
        refused = _asgi_get("/api/personas/contexts/?names=a")
        missing = _asgi_get("/no-such-page/")
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Token")
    assert missing.status_code in (302, 404)
    assert any("Unauthorized: /api/personas/contexts/" in r.getMessage() for r in caplog.records)


def test_cache_objects_of_every_thread_share_one_redis_client_and_pool() -> None:
    # Redis runs on every machine of the project, CI's included (.ci/run starts it).
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    config = {"default": {"BACKEND": "storyproject.cache.FailSoftRedisCache", "LOCATION": url}}
    server = redis.Redis.from_url(url)
    clients: list[Any] = []

    def use_the_cache(index: int) -> None:
        # Django gives each thread (and each ASGI request) a cache object of its own.
        cache = caches["default"]
        cache.set(f"asgi-stack-test:{index}", index, 30)
        assert cache.get(f"asgi-stack-test:{index}") == index
        clients.append(cache._cache.get_client(write=True))  # type: ignore[attr-defined]

    with override_settings(CACHES=config):
        use_the_cache(0)  # the process's pool exists from here on
        before = server.info("stats")["total_connections_received"]
        for index in range(1, 21):
            thread = threading.Thread(target=use_the_cache, args=(index,))
            thread.start()
            thread.join()
        opened = server.info("stats")["total_connections_received"] - before
    assert len({id(client) for client in clients}) == 1
    assert len({id(client.connection_pool) for client in clients}) == 1
    # Twenty threads, each with a cache object: one connection reused, not twenty opened.
    assert opened <= 1, opened

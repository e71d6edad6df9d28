"""The ASGI application daphne serves: Django's HTTP stack in one thread hop, Redis connections shared."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import httpx
import pytest
import redis
from django.core.cache import caches
from django.db import OperationalError
from django.test import override_settings
from django.utils import timezone
from rest_framework.authtoken.models import Token

from stories import ws_sessions
from stories.models import GenerationRun, Story
from stories.runs import sse
from storyproject.asgi import django_asgi_app
from storyproject.cache import FailSoftRedisCache
from storyproject.middleware import CSP_HEADER


def _asgi_transport() -> httpx.ASGITransport:
    # httpx's send takes a MutableMapping, where django-stubs has ASGIHandler send any Mapping.
    return httpx.ASGITransport(app=django_asgi_app)  # type: ignore[arg-type]


def _asgi_get(path: str, **headers: str) -> httpx.Response:
    async def get() -> httpx.Response:
        transport = _asgi_transport()
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(get())


def test_the_middleware_chain_runs_in_sync_mode() -> None:
    # In async mode every MiddlewareMixin middleware costs two trips to a worker thread per request.
    # _middleware_chain is BaseHandler's private attribute, which django-stubs leaves out.
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
        assert isinstance(cache, FailSoftRedisCache)
        clients.append(cache._cache.get_client(write=True))

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


def _asgi_post(path: str, chunks: list[bytes], token: str) -> httpx.Response:
    """POST through the ASGI app; a list of chunks is sent as daphne passes a chunked body on."""

    async def body() -> Any:
        for chunk in chunks:
            yield chunk

    async def post() -> httpx.Response:
        transport = _asgi_transport()
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
            return await client.post(path, content=body(), headers=headers)

    return asyncio.run(post())


@pytest.fixture
def token(user_factory: Any) -> str:
    return str(Token.objects.create(user=user_factory("chunker")).key)


@pytest.mark.django_db(transaction=True)
def test_a_chunked_json_body_is_read(token: str) -> None:
    # Issue 13 item 7: with no Content-Length the body was read as empty (400: title is required).
    chunks = [b'{"title": "Chunked", ', b'"plot": "A body in ', b'three pieces."}']
    response = _asgi_post("/api/stories/", chunks, token)
    assert response.status_code == 201, response.text
    story = Story.objects.get()
    assert (story.title, story.plot) == ("Chunked", "A body in three pieces.")


@pytest.mark.django_db(transaction=True)
def test_a_chunked_body_past_the_limit_is_refused_with_413(token: str, settings: Any) -> None:
    settings.HTTP_MAX_BODY_BYTES = 4096
    chunks = [b'{"title": "Big", "plot": "', b"p" * 3000, b"p" * 3000, b'"}']
    response = _asgi_post("/api/stories/", chunks, token)
    # DRF's shape, as for a body past API_MAX_BODY_BYTES, with the headers every response has.
    assert (response.status_code, response.json()) == (
        413,
        {"detail": "The request body is larger than 4096 bytes."},
    )
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert not Story.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_json_body_past_the_form_limit_is_a_413_naming_the_api_limit(token: str, settings: Any) -> None:
    # Within HTTP_MAX_BODY_BYTES (read by the handler) but past DATA_UPLOAD_MAX_MEMORY_SIZE: DRF read
    # it through request.body, which Django refused with a 400 "The request could not be understood."
    size = settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 20_000
    assert size < settings.HTTP_MAX_BODY_BYTES
    body = b'{"title": "Big", "plot": "' + b"p" * size + b'"}'
    response = _asgi_post("/api/stories/", [body], token)
    assert (response.status_code, response.json()) == (
        413,
        {"detail": f"The request body is larger than {settings.API_MAX_BODY_BYTES} bytes."},
    )
    assert not Story.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_json_body_within_the_api_limit_is_read_whatever_the_form_limit(token: str, settings: Any) -> None:
    # DJANGO_DATA_UPLOAD_MAX_BYTES bounds forms and uploads; JSON bodies have API_MAX_BODY_BYTES.
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 65_536
    fountain = "Title: Long\n\nINT. HALL - NIGHT\n\n" + "\n\n".join(["The clock ticks on."] * 5_000)
    body = json.dumps({"fountain": fountain}).encode()
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE < len(body) < settings.API_MAX_BODY_BYTES
    response = _asgi_post("/api/stories/import/", [body], token)
    assert response.status_code == 201, response.text
    assert response.json()["story"]["title"] == "Long"


@pytest.mark.django_db(transaction=True)
def test_a_declared_length_past_the_limit_is_refused_before_the_body_is_read(settings: Any) -> None:
    settings.HTTP_MAX_BODY_BYTES = 4096
    received: list[str] = []

    async def receive() -> dict[str, Any]:
        received.append("body")
        return {"type": "http.request", "body": b"x" * 5000, "more_body": False}

    sent: list[Mapping[str, Any]] = []

    async def send(message: Mapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/stories/",
        "query_string": b"",
        "headers": [(b"content-length", b"5000"), (b"content-type", b"application/json")],
    }
    asyncio.run(django_asgi_app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert received == []


@pytest.mark.django_db(transaction=True)
def test_a_page_form_past_the_body_limit_is_the_sites_page_saying_what_to_do(settings: Any) -> None:
    # A writer choosing a 3 MB file to import got "413 Payload too large: The request body is larger
    # than 2686976 bytes." as plain text, where the import page itself says files up to 1 MB.
    settings.HTTP_MAX_BODY_BYTES = 65_536

    async def post() -> httpx.Response:
        transport = _asgi_transport()
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            upload = {"file": ("draft.fdx", b"<FinalDraft>" + b"x" * 100_000)}
            return await client.post("/stories/import/", files=upload)

    response = asyncio.run(post())
    assert response.status_code == 413
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "<title>Too large · Screenplay studio</title>" in response.text
    assert "It is larger than 64.0\xa0KB, the most this site takes in one request" in response.text
    # In bytes too, as the import page gives it and its refusal counts it (1,000,000 is not "1 MB" there).
    assert (
        "a screenplay to import may be at most 976.6\xa0KB (1000000 bytes, as the import page"
        in response.text
    )
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert "script-src" not in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"


@pytest.mark.django_db(transaction=True)
def test_a_streamed_response_that_fails_midway_is_ended_not_left_open(
    token: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # An event stream whose database read failed after its first bytes (its sign-in asked again, with the
    # database refusing): Django's handler raised, daphne could not send its 500 page after the status
    # line (it raised in turn), and the connection stayed open, its client waiting for ever for the rest
    # of the stream (seen with the database down).
    user = Token.objects.get(key=token).user
    run = GenerationRun.objects.create(
        user=user,
        status="streaming",
        model="offline",
        max_tokens=1024,
        lease_owner="other-host:4242:0123456789ab",
        lease_expires_at=timezone.now() + timedelta(seconds=60),
    )

    def database_refuses(**_: Any) -> bool:
        raise OperationalError("terminating connection due to administrator command")

    monkeypatch.setattr(ws_sessions, "WATCH_SECONDS", 0.2)
    monkeypatch.setattr(sse, "_stream_standing", database_refuses)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": f"/api/runs/{run.pk}/events/",
        "raw_path": f"/api/runs/{run.pk}/events/".encode(),
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1"), (b"authorization", f"Token {token}".encode())],
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 5000),
    }
    sent: list[dict[str, Any]] = []

    async def serve() -> None:
        requested = [{"type": "http.request", "body": b"", "more_body": False}]
        never: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        async def receive() -> dict[str, Any]:
            return requested.pop() if requested else await never

        async def send(message: Mapping[str, Any]) -> None:
            sent.append(dict(message))

        await asyncio.wait_for(django_asgi_app(scope, receive, send), timeout=20)

    with caplog.at_level(logging.ERROR, logger="storyproject.handlers"):
        asyncio.run(serve())
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert sent[1]["body"] == b"retry: 2000\n\n"
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert "terminating connection" in caplog.text

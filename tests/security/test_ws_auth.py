"""The WebSocket security stack (origin check, session or token auth) around a tiny consumer.

The generation consumer has its own tests; these pin the stack every WebSocket route sits behind
(stories.ws_auth.websocket_stack, the one storyproject/asgi.py uses).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client
from django.urls import path
from rest_framework.authtoken.models import Token

from stories.ws_auth import socket_user_resolve, token_key_from_headers, websocket_stack
from storyproject.db import db_call

pytestmark = pytest.mark.django_db(transaction=True)


class WhoAmI(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
        # As the generation consumer does, in its first trip to the thread pool (socket_session_open).
        await db_call(socket_user_resolve)(self.scope)
        user = self.scope["user"]
        await self.send_json({"user": user.get_username() if user.is_authenticated else None})


APP = websocket_stack(URLRouter([path("ws/whoami/", WhoAmI.as_asgi())]))


async def _connect(headers: list[tuple[bytes, bytes]]) -> tuple[bool, Any]:
    communicator = WebsocketCommunicator(APP, "/ws/whoami/", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    answer = await communicator.receive_json_from(timeout=5) if connected else None
    await communicator.disconnect()
    return connected, answer


SAME = [(b"host", b"127.0.0.1:8000"), (b"origin", b"http://127.0.0.1:8000")]


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([(b"host", b"127.0.0.1:8000"), (b"origin", b"https://evil.example")], id="foreign"),
        pytest.param([(b"host", b"127.0.0.1:8000")], id="missing"),
        pytest.param([(b"host", b"127.0.0.1:8000"), (b"origin", b"null")], id="null"),
        pytest.param([(b"host", b"127.0.0.1:8000"), (b"origin", b"http://127.0.0.1:9999")], id="other-port"),
        pytest.param([(b"host", b"127.0.0.1:8000"), (b"origin", b"ftp://127.0.0.1:8000")], id="not-http"),
        pytest.param([(b"host", b"127.0.0.1:8000"), (b"origin", b"http://127.0.0.1:99999")], id="bad-port"),
        pytest.param(
            [(b"host", b"127.0.0.1:8000"), (b"origin", b"http://127.0.0.1.evil.example:8000")], id="suffix"
        ),
        pytest.param(
            [(b"host", b"evil.example"), (b"origin", b"http://evil.example")], id="host-not-allowed"
        ),
        pytest.param([(b"origin", b"http://evil.example")], id="foreign-no-host"),
        pytest.param([(b"host", b"127.0.0.1:8000"), (b"origin", b"http://[::1")], id="garbage"),
    ],
)
async def test_a_cross_site_or_originless_handshake_is_refused(headers: list[tuple[bytes, bytes]]) -> None:
    connected, _ = await _connect(headers)
    assert connected is False


async def test_a_refused_handshake_ends_its_application_at_once() -> None:
    # Channels' WebsocketDenier waited for a disconnect a refused handshake never sends (with Redis,
    # on the channel layer too) until daphne killed it 10 s later, for every refused socket.
    headers = [(b"host", b"127.0.0.1:8000"), (b"origin", b"https://evil.example")]
    communicator = WebsocketCommunicator(APP, "/ws/whoami/", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    assert connected is False
    await asyncio.wait_for(asyncio.shield(communicator.future), timeout=1)
    assert communicator.future.exception() is None


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(SAME, id="same-origin"),
        pytest.param([(b"host", b"localhost"), (b"origin", b"http://localhost")], id="default-port"),
        pytest.param(
            [(b"host", b"localhost:80"), (b"origin", b"http://LOCALHOST")], id="explicit-default-port"
        ),
        pytest.param([(b"origin", b"http://127.0.0.1:8000")], id="no-host-allowed-origin"),
    ],
)
async def test_a_same_origin_handshake_is_accepted(headers: list[tuple[bytes, bytes]]) -> None:
    connected, answer = await _connect(headers)
    assert connected is True
    assert answer == {"user": None}


async def test_a_trusted_origin_from_settings_is_accepted(settings: Any) -> None:
    headers = [(b"host", b"internal:8000"), (b"origin", b"https://studio.example")]
    assert (await _connect(headers))[0] is False
    settings.CSRF_TRUSTED_ORIGINS = ["https://studio.example"]
    assert (await _connect(headers))[0] is True


@database_sync_to_async
def _session_cookie(user: Any) -> bytes:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


@database_sync_to_async
def _token(user: Any) -> str:
    return Token.objects.create(user=user).key


async def test_the_session_cookie_authenticates(writer: Any) -> None:
    cookie = await _session_cookie(writer)
    _, answer = await _connect([*SAME, (b"cookie", cookie)])
    assert answer == {"user": "writer"}


async def test_a_token_header_authenticates(writer: Any) -> None:
    key = await _token(writer)
    _, answer = await _connect([*SAME, (b"authorization", f"Token {key}".encode())])
    assert answer == {"user": "writer"}


async def test_a_bad_token_is_anonymous_even_with_a_valid_session_cookie(
    writer: Any, other_writer: Any
) -> None:
    cookie = await _session_cookie(other_writer)
    for value in (
        b"Token 0123456789abcdef0123456789abcdef01234567",
        b"Token ",
        b"Token a;b",
        b"Token " + b"a" * 500,
    ):
        _, answer = await _connect([*SAME, (b"cookie", cookie), (b"authorization", value)])
        assert answer == {"user": None}, value


async def test_a_token_of_a_deactivated_user_is_refused(writer: Any) -> None:
    key = await _token(writer)
    writer.is_active = False
    await database_sync_to_async(writer.save)()
    _, answer = await _connect([*SAME, (b"authorization", f"Token {key}".encode())])
    assert answer == {"user": None}


async def test_a_revoked_token_no_longer_authenticates(writer: Any) -> None:
    key = await _token(writer)
    await database_sync_to_async(Token.objects.filter(key=key).delete)()
    _, answer = await _connect([*SAME, (b"authorization", f"Token {key}".encode())])
    assert answer == {"user": None}


def test_token_header_parsing() -> None:
    assert token_key_from_headers([(b"authorization", b"Token abc123")]) == "abc123"
    assert token_key_from_headers([(b"Authorization", b"token  abc123 ")]) == "abc123"
    assert token_key_from_headers([(b"authorization", b"Bearer abc123")]) is None
    assert token_key_from_headers([(b"cookie", b"x=1")]) is None
    assert token_key_from_headers([(b"authorization", b"Token \xff\xfe")]) == ""

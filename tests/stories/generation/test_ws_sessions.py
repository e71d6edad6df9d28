"""An open /ws/generate/ socket after its credential is revoked, and the cap on open sockets per user.

Runs against the real ASGI application (storyproject.asgi) and the real consumer, with the credential
check cached (STORY_CACHE_TOKEN_USERS on: Redis in the PostgreSQL pass, this process's memory in the
SQLite pass) and not cached.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from accounts.services import api_token_create, api_token_revoke
from stories import consumers, ws_sessions
from stories.consumers import GenerateConsumer
from stories.models import GenerationRun, Story
from stories.ws_auth import SocketCredential, credential_current
from storyproject.asgi import application
from tests.stories.generation.conftest import generate_message, ws_events

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = [(b"host", b"testserver"), (b"origin", b"http://testserver")]


@dataclass
class Signed:
    """A way of signing a socket in, and a change made elsewhere that must end it."""

    headers: list[tuple[bytes, bytes]]
    revoke: Callable[[], Any]


def _session(user: Any) -> tuple[Client, list[tuple[bytes, bytes]]]:
    client = Client()
    client.force_login(user)
    cookie = (
        f"{django_settings.SESSION_COOKIE_NAME}={client.cookies[django_settings.SESSION_COOKIE_NAME].value}"
    )
    return client, [*ORIGIN, (b"cookie", cookie.encode())]


def _token(user: Any) -> list[tuple[bytes, bytes]]:
    return [*ORIGIN, (b"authorization", f"Token {api_token_create(user=user).key}".encode())]


def _deactivate(user: Any) -> None:
    user.is_active = False
    user.save()  # as the admin does


def _password_change(user: Any) -> None:
    user.set_password("a-new-password")
    user.save()


def _signed(how: str, user: Any) -> Signed:
    """Set up in the database thread (the test client and the services are synchronous)."""
    if how.startswith("token"):
        headers = _token(user)
        revoke = {
            "token-revoked": lambda: api_token_revoke(user=user),
            "token-replaced": lambda: api_token_create(user=user),
            "token-user-deactivated": lambda: _deactivate(user),
        }[how]
        return Signed(headers, revoke)
    client, headers = _session(user)
    revoke = {
        "session-logout": lambda: client.post("/accounts/logout/"),
        "session-password-changed": lambda: _password_change(user),
        "session-user-deactivated": lambda: _deactivate(user),
        "session-user-deleted": user.delete,
    }[how]
    return Signed(headers, revoke)


REVOCATIONS = [
    "token-revoked",
    "token-replaced",
    "token-user-deactivated",
    "session-logout",
    "session-password-changed",
    "session-user-deactivated",
    "session-user-deleted",
]


@pytest.fixture(params=[True, False], ids=["cached", "uncached"])
def check_cached(request: pytest.FixtureRequest, settings: Any) -> bool:
    settings.STORY_CACHE_TOKEN_USERS = request.param
    return bool(request.param)


async def _open(headers: list[tuple[bytes, bytes]]) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, "/ws/generate/", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    return communicator


async def _until_closed(
    communicator: WebsocketCommunicator, timeout: float = 10
) -> tuple[list[dict[str, Any]], int]:
    """Every event the server sends, up to its close frame; and the close code."""
    events: list[dict[str, Any]] = []
    while True:
        output = await communicator.receive_output(timeout=timeout)
        if output["type"] == "websocket.close":
            return events, output["code"]
        events.append(json.loads(output["text"]))


@pytest.mark.parametrize("how", REVOCATIONS)
async def test_a_revoked_credential_ends_the_open_socket_at_its_next_message(
    writer: Any, cast: Any, offline: None, check_cached: bool, how: str
) -> None:
    signed = await sync_to_async(_signed)(how, writer)
    communicator = await _open(signed.headers)
    await communicator.send_json_to(generate_message())
    assert (await ws_events(communicator))[-1]["type"] == "done"  # and the check is now cached
    await _signed_out_after(communicator, signed, generate_message())
    assert await GenerationRun.objects.acount() == (0 if how == "session-user-deleted" else 1)


async def _signed_out_after(
    communicator: WebsocketCommunicator, signed: Signed, message: dict[str, Any]
) -> None:
    """Revoke the socket's credential, send ``message``: the server answers unauthenticated and closes."""
    try:
        await sync_to_async(signed.revoke)()
        await communicator.send_json_to(message)
        events, code = await _until_closed(communicator)
    finally:
        await communicator.disconnect()
    assert [(e["type"], e["code"]) for e in events] == [("error", "unauthenticated")]
    assert "no longer holds" in events[0]["message"]
    assert code == 4401


async def test_a_credential_revoked_while_the_runs_last_event_is_on_its_way_still_closes_with_4401(
    writer: Any, cast: Any, offline: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The run has ended (its `done` is being sent) but the task following it has not: the cancel that a
    # sign-out sends first found "no generation is running", which failed the socket (1011).
    sending = asyncio.Event()
    release = asyncio.Event()
    send_event = GenerateConsumer.send_event

    async def held_done(consumer: GenerateConsumer, event: dict[str, Any]) -> None:
        if event["type"] == "done":
            sending.set()
            await release.wait()
        await send_event(consumer, event)

    monkeypatch.setattr(GenerateConsumer, "send_event", held_done)
    signed = await sync_to_async(_signed)("token-revoked", writer)
    communicator = await _open(signed.headers)
    try:
        await communicator.send_json_to(generate_message())
        await asyncio.wait_for(sending.wait(), timeout=10)
        await sync_to_async(signed.revoke)()
        await communicator.send_json_to({"type": "cancel"})
        asyncio.get_running_loop().call_later(0.3, release.set)
        events, code = await _until_closed(communicator)
    finally:
        await communicator.disconnect()
    assert [e["type"] for e in events][-2:] == ["done", "error"]
    assert (events[-1]["code"], code) == ("unauthenticated", 4401)


# Whatever the message (a generate refused for its fields, an unknown type), the credential is asked
# before anything is done.
@pytest.mark.parametrize(
    "message",
    [
        {"type": "generate", "personas": [], "plot": ""},
        {"type": "cancel"},
        {"type": "attach", "run_id": 1},
        {"type": "regenerate_scene", "story_id": 1, "version": 1, "index": 0},
        {"type": "no such type"},
    ],
    ids=["invalid-generate", "cancel", "attach", "regenerate", "unknown"],
)
async def test_every_kind_of_message_on_a_revoked_socket_is_refused_and_closes_it(
    writer: Any, cast: Any, offline: None, message: dict[str, Any]
) -> None:
    signed = await sync_to_async(_signed)("token-revoked", writer)
    communicator = await _open(signed.headers)
    # Answered once the socket's standing is known (the handshake's own check is done).
    await communicator.send_json_to({"type": "attach", "run_id": 999999})
    assert (await communicator.receive_json_from(timeout=5))["code"] == "not_found"
    await _signed_out_after(communicator, signed, message)
    assert await GenerationRun.objects.acount() == 0


async def test_the_socket_keeps_working_while_its_credential_holds(
    writer: Any, other_writer: Any, cast: Any, offline: None, check_cached: bool
) -> None:
    # Changes that do not touch this socket's credential: another writer's logout and token, a
    # new session of the same writer (last_login is saved), an edit of the writer's name.
    signed = await sync_to_async(_signed)("session-logout", writer)
    other = await sync_to_async(_signed)("session-logout", other_writer)
    communicator = await _open(signed.headers)
    try:
        for change in (other.revoke, lambda: api_token_create(user=other_writer), lambda: _session(writer)):
            await sync_to_async(change)()
            await communicator.send_json_to(generate_message())
            assert (await ws_events(communicator))[-1]["type"] == "done"
        writer.first_name = "Ada"
        await sync_to_async(writer.save)()
        await communicator.send_json_to(generate_message())
        assert (await ws_events(communicator))[-1]["type"] == "done"
    finally:
        await communicator.disconnect()
    assert await GenerationRun.objects.filter(status="succeeded").acount() == 4


async def _streaming(signed: Signed, settings: Any) -> WebsocketCommunicator:
    settings.STORY_OFFLINE_TOKENS_PER_SECOND = 20  # slow: still streaming when the credential goes
    communicator = await _open(signed.headers)
    await communicator.send_json_to(generate_message())
    assert json.loads(await communicator.receive_from(timeout=5))["type"] == "accepted"
    return communicator


@pytest.mark.parametrize(
    ("how", "noticed_by"),
    [
        pytest.param("session-logout", "message", id="logout-then-a-message"),
        # No message arrives: the socket's periodic check finds the revocation.
        pytest.param("token-revoked", "watch", id="token-revoked-idle"),
    ],
)
async def test_a_revocation_cancels_the_running_generation_then_closes(
    writer: Any,
    cast: Any,
    offline: None,
    check_cached: bool,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
    noticed_by: str,
) -> None:
    monkeypatch.setattr(ws_sessions, "WATCH_SECONDS", 0.2 if noticed_by == "watch" else 3600)
    signed = await sync_to_async(_signed)(how, writer)
    communicator = await _streaming(signed, settings)
    try:
        await sync_to_async(signed.revoke)()
        if noticed_by == "message":
            await communicator.send_json_to({"type": "cancel"})
        events, code = await _until_closed(communicator, timeout=5)
    finally:
        await communicator.disconnect()
    assert [e["type"] for e in events if e["type"] not in ("delta", "scene", "progress")] == [
        "cancelled",
        "error",
    ]
    assert (events[-1]["code"], code) == ("unauthenticated", 4401)
    assert (await GenerationRun.objects.aget()).status == "cancelled"
    assert await Story.objects.acount() == 0


# --- A follower's sign-out: the run goes on unless its own credential started it ----------------

SIGNED_OUT_MESSAGES = [
    pytest.param({"type": "cancel"}, id="cancel"),
    pytest.param(generate_message(), id="generate"),
    pytest.param({"type": "attach", "run_id": 1}, id="attach"),
    # No message arrives: the socket's periodic check finds the sign-out.
    pytest.param(None, id="watch"),
]


async def _attached(headers: list[tuple[bytes, bytes]], run_id: int) -> WebsocketCommunicator:
    communicator = await _open(headers)
    await communicator.send_json_to({"type": "attach", "run_id": run_id})
    assert json.loads(await communicator.receive_from(timeout=5))["type"] == "accepted"
    return communicator


async def _follower_signed_out(
    follower: WebsocketCommunicator, signed: Signed, message: dict[str, Any] | None
) -> list[str]:
    """Sign the follower's credential out, send ``message``: the types it is sent; it closes with 4401."""
    await sync_to_async(signed.revoke)()
    if message is not None:
        await follower.send_json_to(message)
    events, code = await _until_closed(follower, timeout=5)
    assert (events[-1]["type"], events[-1]["code"], code) == ("error", "unauthenticated", 4401)
    return [e["type"] for e in events if e["type"] not in ("delta", "scene", "progress")]


@pytest.mark.parametrize("message", SIGNED_OUT_MESSAGES)
async def test_a_follower_signed_out_leaves_a_run_another_credential_started_going(
    writer: Any,
    cast: Any,
    offline: None,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    message: dict[str, Any] | None,
) -> None:
    # A script starts a run with the writer's token; the writer watches it from a signed-in page, then
    # logs out there. The page stops following (as an SSE stream does); the script's run goes on.
    monkeypatch.setattr(ws_sessions, "WATCH_SECONDS", 0.2 if message is None else 3600)
    settings.STORY_OFFLINE_TOKENS_PER_SECOND = 600
    starter = await _open(await sync_to_async(_token)(writer))
    page = await sync_to_async(_signed)("session-logout", writer)
    follower = None
    try:
        await starter.send_json_to(generate_message())
        run_id = json.loads(await starter.receive_from(timeout=5))["run_id"]
        follower = await _attached(page.headers, run_id)
        followed = await _follower_signed_out(follower, page, message)
        assert (await GenerationRun.objects.aget()).status == "streaming"
        assert (await ws_events(starter, timeout=30))[-1]["type"] == "done"
    finally:
        await starter.disconnect()
        if follower is not None:
            await follower.disconnect()
    assert followed == ["error"]
    assert (await GenerationRun.objects.aget()).status == "succeeded"
    assert await Story.objects.acount() == 1


@pytest.mark.parametrize("message", SIGNED_OUT_MESSAGES)
@pytest.mark.parametrize(
    ("how", "started_on"),
    [
        # A page reloaded: its first socket started the run, the next one (same session) follows it.
        pytest.param("session-logout", "socket", id="session-reload"),
        pytest.param("token-revoked", "socket", id="token-socket"),
        pytest.param("token-revoked", "rest", id="token-rest-no-wait"),
    ],
)
async def test_a_follower_signed_out_cancels_a_run_its_own_credential_started(
    writer: Any,
    cast: Any,
    offline: None,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
    started_on: str,
    message: dict[str, Any] | None,
) -> None:
    # The run was started with this very token or session (an earlier socket, or a REST request with
    # "wait": false) and is now followed with it: signing it out cancels the run, whoever follows it.
    monkeypatch.setattr(ws_sessions, "WATCH_SECONDS", 0.2 if message is None else 3600)
    settings.STORY_OFFLINE_TOKENS_PER_SECOND = 20  # slow: still streaming when the credential goes
    signed = await sync_to_async(_signed)(how, writer)
    run_id = await _run_started(signed.headers, started_on)
    follower = await _attached(signed.headers, run_id)
    try:
        followed = await _follower_signed_out(follower, signed, message)
    finally:
        await follower.disconnect()
    assert followed == ["cancelled", "error"]
    assert (await GenerationRun.objects.aget()).status == "cancelled"
    assert await Story.objects.acount() == 0


@pytest.mark.parametrize("how", ["session-logout", "session-password-changed", "token-revoked"])
async def test_a_follower_signed_out_stops_receiving_the_run_at_once_not_at_its_next_check(
    writer: Any, cast: Any, offline: None, settings: Any, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    # A page watches a run that a script's token started (or a script watches the page's run); the
    # follower is signed out elsewhere, and sends nothing. It went on receiving the run's events until
    # its periodic check, up to 30 s later; the revocation now reaches it by itself.
    monkeypatch.setattr(ws_sessions, "WATCH_SECONDS", 3600)  # the periodic check never comes here
    settings.STORY_OFFLINE_TOKENS_PER_SECOND = 20  # slow: still streaming when the follower goes
    follower_signed = await sync_to_async(_signed)(how, writer)
    starter_how = "session-logout" if how.startswith("token") else "token-revoked"
    starter = await _open((await sync_to_async(_signed)(starter_how, writer)).headers)
    follower = None
    try:
        await starter.send_json_to(generate_message())
        run_id = json.loads(await starter.receive_from(timeout=5))["run_id"]
        follower = await _attached(follower_signed.headers, run_id)
        await sync_to_async(follower_signed.revoke)()
        events, code = await _until_closed(follower, timeout=10)
        assert (events[-1]["type"], events[-1]["code"], code) == ("error", "unauthenticated", 4401)
        # The run another credential started goes on, for whoever follows it.
        assert (await GenerationRun.objects.aget()).status == "streaming"
    finally:
        if follower is not None:
            await follower.disconnect()
        await starter.send_json_to({"type": "cancel"})
        await ws_events(starter, timeout=10)
        await starter.disconnect()
    assert (await GenerationRun.objects.aget()).status == "cancelled"  # by its starter, at the end


async def _run_started(headers: list[tuple[bytes, bytes]], started_on: str) -> int:
    """A run started with the credential of ``headers``, on a socket since closed or by REST (a token);
    its id."""
    if started_on == "rest":
        client = APIClient(HTTP_AUTHORIZATION=dict(headers)[b"authorization"].decode())
        body = {
            "plot": "A statue, a lie, a fog.",
            "personas": ["noir-detective", "femme-fatale"],
            "wait": False,
        }
        response = await sync_to_async(client.post)("/api/ai/generate-screenplay/", body, format="json")
        assert response.status_code == 202, response.content
        return int(response.json()["run_id"])
    first = await _open(headers)
    try:
        await first.send_json_to(generate_message())
        return int(json.loads(await first.receive_from(timeout=5))["run_id"])
    finally:
        await first.disconnect()  # the run goes on without it


# --- The cap on open sockets per user ----------------------------------------------------------


async def _refusal(headers: list[tuple[bytes, bytes]]) -> tuple[list[dict[str, Any]], int]:
    communicator = await _open(headers)
    try:
        return await _until_closed(communicator, timeout=5)
    finally:
        await communicator.disconnect()


async def _slots_taken(user_id: int, count: int) -> None:
    """Wait until ``count`` sockets of the user hold their places: a socket is accepted first, and
    takes its place (after reading its credential) a moment later."""
    keys = [f"ws-slot:{user_id}:{number}" for number in range(count)]
    for _ in range(100):
        if len(await sync_to_async(cache.get_many)(keys)) == count:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"{count} sockets did not take their places")


async def test_a_socket_past_the_per_user_cap_is_refused_with_busy_and_4429(
    writer: Any, other_writer: Any, cast: Any, offline: None, settings: Any
) -> None:
    settings.STORY_WS_MAX_SOCKETS_PER_USER = 2
    _, session = await sync_to_async(_session)(writer)
    token = await sync_to_async(_token)(writer)
    _, other = await sync_to_async(_session)(other_writer)
    sockets = [await _open(session), await _open(token)]  # a session and a token count alike
    try:
        await _slots_taken(writer.pk, 2)
        events, code = await _refusal(session)
        # Another writer is not held back by this one's sockets.
        others = await _open(other)
        sockets.append(others)
        await others.send_json_to(generate_message())
        assert (await ws_events(others))[-1]["type"] == "done"
        # Closing one frees its place at once.
        await sockets.pop(0).disconnect()
        again = await _open(session)
        sockets.append(again)
        await again.send_json_to(generate_message())
        assert (await ws_events(again))[-1]["type"] == "done"
    finally:
        for communicator in sockets:
            await communicator.disconnect()
    assert [(e["type"], e["code"], e["retryable"]) for e in events] == [("error", "busy", True)]
    assert "at most 2 connections per user" in events[0]["message"]
    assert code == 4429


async def test_sockets_opened_all_at_once_are_held_to_the_cap(writer: Any, settings: Any) -> None:
    # Sockets that saw a place free but lost it to another in the same instant were admitted without
    # one: twenty handshakes at once left eleven or twelve of them open against a cap of eight.
    settings.STORY_WS_MAX_SOCKETS_PER_USER = 2
    token = await sync_to_async(_token)(writer)

    async def admitted() -> WebsocketCommunicator | None:
        communicator = await _open(token)
        if await communicator.receive_nothing(timeout=1):
            return communicator  # open and idle: admitted
        await communicator.disconnect()
        return None

    opened = [c for c in await asyncio.gather(*(admitted() for _ in range(20))) if c is not None]
    for communicator in opened:
        await communicator.disconnect()
    assert len(opened) == 2


async def test_an_open_socket_keeps_its_place_past_the_slot_lifetime(
    writer: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.STORY_WS_MAX_SOCKETS_PER_USER = 1
    monkeypatch.setattr(ws_sessions, "SLOT_SECONDS", 1)
    monkeypatch.setattr(ws_sessions, "WATCH_SECONDS", 0.2)
    _, session = await sync_to_async(_session)(writer)
    first = await _open(session)
    try:
        await asyncio.sleep(1.6)  # past the slot's lifetime: only the refreshes keep it
        events, code = await _refusal(session)
    finally:
        await first.disconnect()
    assert (events[0]["code"], code) == ("busy", 4429)


async def test_places_left_by_a_crashed_process_expire(
    writer: Any, cast: Any, offline: None, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.STORY_WS_MAX_SOCKETS_PER_USER = 1
    monkeypatch.setattr(ws_sessions, "SLOT_SECONDS", 1)
    _, session = await sync_to_async(_session)(writer)
    # A place a socket of a process that died took: nobody frees or refreshes it.
    await sync_to_async(ws_sessions.slot_take)(user_id=writer.pk)
    events, _ = await _refusal(session)
    assert events[0]["code"] == "busy"
    await asyncio.sleep(1.2)
    communicator = await _open(session)
    try:
        await communicator.send_json_to(generate_message())
        assert (await ws_events(communicator))[-1]["type"] == "done"
    finally:
        await communicator.disconnect()


async def test_a_socket_daphne_gives_up_on_frees_its_place_at_once(
    writer: Any, cast: Any, offline: None, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # daphne cancels an application still running 10 s after its client left (one still answering a
    # flood of messages the client sent before it dropped): its disconnect handler never runs. Its
    # watch kept the place, refreshed for as long as the process lived, and the writer was refused.
    settings.STORY_WS_MAX_SOCKETS_PER_USER = 1
    monkeypatch.setattr(ws_sessions, "WATCH_SECONDS", 0.1)
    _, session = await sync_to_async(_session)(writer)
    killed = await _open(session)
    await killed.send_to(text_data="{}")  # answered: the socket is open and idle
    assert json.loads(await killed.receive_from(timeout=5))["code"] == "invalid_request"
    killed.future.cancel()  # what daphne's application_checker does
    with suppress(asyncio.CancelledError):
        await killed.future
    await asyncio.sleep(0.3)  # a few of the watch's ticks, had it been left running
    communicator = await _open(session)
    try:
        await communicator.send_json_to(generate_message())
        assert (await ws_events(communicator))[-1]["type"] == "done"
    finally:
        await communicator.disconnect()
    assert not list(consumers._open)  # nor is its watch left running


async def test_sockets_are_admitted_while_the_cache_is_down(
    writer: Any, cast: Any, offline: None, settings: Any
) -> None:
    settings.STORY_WS_MAX_SOCKETS_PER_USER = 1
    settings.CACHES = {
        "default": {
            "BACKEND": "storyproject.cache.FailSoftRedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    _, session = await sync_to_async(_session)(writer)
    sockets = [await _open(session), await _open(session)]
    try:
        for communicator in sockets:
            await communicator.send_json_to(generate_message())
            assert (await ws_events(communicator))[-1]["type"] == "done"
    finally:
        for communicator in sockets:
            await communicator.disconnect()


def _credential_of(headers: list[tuple[bytes, bytes]], user: Any) -> SocketCredential:
    named = dict(headers)
    if b"authorization" in named:
        return SocketCredential(user_id=user.pk, token_key=named[b"authorization"].decode().split()[1])
    return SocketCredential(user_id=user.pk, session_key=named[b"cookie"].decode().partition("=")[2])


def _checked_without_query(credential: SocketCredential) -> bool:
    with CaptureQueriesContext(connection) as queries:
        current = credential_current(credential=credential)
    return current and not queries.captured_queries


@pytest.mark.parametrize("how", ["token", "session"])
async def test_the_handshake_warms_the_check_so_the_first_message_makes_no_query(
    writer: Any, settings: Any, how: str
) -> None:
    # The first message is the writer's click on Generate: its credential check is the cached one.
    settings.STORY_CACHE_TOKEN_USERS = True
    headers = await sync_to_async(_token if how == "token" else lambda user: _session(user)[1])(writer)
    communicator = await _open(headers)
    credential = _credential_of(headers, writer)
    try:
        # Wait, with no message, until the socket holds its place (taken once the credential was
        # read), then check once.
        await _slots_taken(writer.pk, 1)
        assert await sync_to_async(_checked_without_query)(credential)
    finally:
        await communicator.disconnect()


@pytest.mark.parametrize("how", ["session", "token"])
async def test_a_socket_signs_in_and_generates_while_channels_one_thread_is_busy(
    writer: Any, cast: Any, offline: None, how: str
) -> None:
    # Channels runs its session authentication, and closes old connections before every message, on
    # one thread-sensitive thread, for which every socket of the process queued: a burst of
    # handshakes waited there one after another. The socket's work now runs on the loop's thread pool.
    headers = await sync_to_async(_token if how == "token" else lambda user: _session(user)[1])(writer)
    release = threading.Event()
    busy = asyncio.ensure_future(sync_to_async(release.wait)(30))  # Channels' one thread, taken
    try:
        communicator = await _open(headers)
        try:
            await communicator.send_json_to(generate_message())
            events = await ws_events(communicator, timeout=5)
        finally:
            await communicator.disconnect(timeout=5)
        assert [event["type"] for event in events][-2:] == ["saved", "done"]
        assert not busy.done()
    finally:
        release.set()
        await busy


async def test_a_generate_asks_its_credential_in_its_admissions_trip_not_one_of_its_own(
    writer: Any, cast: Any, offline: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before the model call every trip to the thread pool waits for the event loop twice, which a busy
    # process makes long. A revoked credential is still refused (the revocation tests above).
    trips: list[bool] = []
    check = consumers.socket_session_check

    async def counted(**kwargs: Any) -> bool:
        trips.append(kwargs.get("refresh", False))
        return await check(**kwargs)

    monkeypatch.setattr(consumers, "socket_session_check", counted)
    communicator = await _open(await sync_to_async(_token)(writer))
    try:
        await communicator.send_json_to(generate_message())
        assert (await ws_events(communicator))[-1]["type"] == "done"
        assert trips == []
        await communicator.send_json_to({"type": "attach", "run_id": 999999})
        assert (await communicator.receive_json_from(timeout=5))["code"] == "not_found"
        assert trips == [False]  # any other message: a check of its own, first
    finally:
        await communicator.disconnect()

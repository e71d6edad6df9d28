"""The generation WebSocket as an attacker and a careless client meet it: origin, auth and limits.

Runs against the real ASGI application (storyproject.asgi) and the real consumer at /ws/generate/.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from stories.models import GenerationRun, ScreenplayVersion, Story
from storyproject.asgi import application
from tests.stories.generation.conftest import generate_message, screenplay, ws_events

pytestmark = pytest.mark.django_db(transaction=True)

HOST = (b"host", b"testserver")


def _cookie(user: Any) -> bytes:
    client = Client()
    client.force_login(user)
    return f"{django_settings.SESSION_COOKIE_NAME}={client.cookies[django_settings.SESSION_COOKIE_NAME].value}".encode()


async def _open(headers: list[tuple[bytes, bytes]]) -> tuple[bool, WebsocketCommunicator]:
    communicator = WebsocketCommunicator(application, "/ws/generate/", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    return connected, communicator


@pytest.mark.parametrize(
    "origin",
    [
        pytest.param(b"https://evil.example", id="foreign"),
        pytest.param(None, id="missing"),
        pytest.param(b"null", id="null"),
        pytest.param(b"http://testserver:8081", id="other-port"),
        pytest.param(b"http://testserver.evil.example", id="lookalike"),
    ],
)
async def test_a_cross_site_handshake_is_refused_even_with_a_valid_session(
    writer: Any, origin: bytes | None
) -> None:
    headers = [HOST, (b"cookie", await sync_to_async(_cookie)(writer))]
    if origin is not None:
        headers.append((b"origin", origin))
    connected, communicator = await _open(headers)
    await communicator.disconnect()
    assert connected is False


@pytest.mark.parametrize("where", ["/ws/generate", "/ws/generate/x", "/ws/", "/"])
async def test_a_handshake_to_any_other_path_is_refused_and_ends_cleanly(writer: Any, where: str) -> None:
    # Channels' router raised "No route found for path": daphne answered 500 and logged an ERROR with
    # its traceback for every such handshake (a mistyped URL, a scanner).
    headers = [HOST, (b"origin", b"http://testserver"), (b"cookie", await sync_to_async(_cookie)(writer))]
    communicator = WebsocketCommunicator(application, where, headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    assert connected is False
    await communicator.wait(timeout=1)  # the application ended, and without an exception


async def test_a_same_origin_handshake_with_a_session_can_generate(
    writer: Any, cast: Any, offline: None
) -> None:
    headers = [HOST, (b"origin", b"http://testserver"), (b"cookie", await sync_to_async(_cookie)(writer))]
    connected, communicator = await _open(headers)
    try:
        assert connected
        await communicator.send_json_to(generate_message())
        assert (await ws_events(communicator))[-1]["type"] == "done"
    finally:
        await communicator.disconnect()


async def test_a_script_with_a_token_header_can_generate(writer: Any, cast: Any, offline: None) -> None:
    key = (await Token.objects.acreate(user=writer)).key
    headers = [HOST, (b"origin", b"http://testserver"), (b"authorization", f"Token {key}".encode())]
    connected, communicator = await _open(headers)
    try:
        assert connected
        await communicator.send_json_to(generate_message())
        events = await ws_events(communicator)
    finally:
        await communicator.disconnect()
    assert events[-1]["type"] == "done"
    assert await GenerationRun.objects.filter(user=writer, status="succeeded").acount() == 1


@pytest.mark.parametrize(
    "authorization", [b"Token 0000000000000000000000000000000000000000", b"Token ", b"Bearer x"]
)
async def test_a_wrong_token_is_closed_as_unauthenticated(db: None, authorization: bytes) -> None:
    headers = [HOST, (b"origin", b"http://testserver"), (b"authorization", authorization)]
    _, communicator = await _open(headers)
    try:
        event = json.loads(await communicator.receive_from(timeout=5))
        closed = await communicator.receive_output(timeout=5)
    finally:
        await communicator.disconnect()
    assert (event["type"], event["code"]) == ("error", "unauthenticated")
    assert closed["type"] == "websocket.close" and closed["code"] == 4401


async def test_messages_sent_after_the_refusal_get_nothing_more(writer: Any) -> None:
    # A script with a wrong or revoked token sends its generate right after connecting: the server had
    # refused the socket already, and answered each such message with the error again, on a socket it
    # had closed. Under daphne that send raised ("Attempt to send on a closed protocol"): an ERROR with
    # its traceback in the log for every message; the client gets one error and the close.
    headers = [HOST, (b"origin", b"http://testserver"), (b"authorization", b"Token " + b"0" * 40)]
    _, communicator = await _open(headers)
    try:
        event = json.loads(await communicator.receive_from(timeout=5))
        closed = await communicator.receive_output(timeout=5)
        for message in (generate_message(), {"type": "cancel"}, {"type": "attach", "run_id": 1}):
            await communicator.send_json_to(message)
        assert await communicator.receive_nothing(timeout=0.5)
    finally:
        await communicator.disconnect()
    assert (event["code"], closed["code"]) == ("unauthenticated", 4401)
    assert await GenerationRun.objects.acount() == 0


async def _session_socket(user: Any) -> WebsocketCommunicator:
    headers = [HOST, (b"origin", b"http://testserver"), (b"cookie", await sync_to_async(_cookie)(user))]
    connected, communicator = await _open(headers)
    assert connected
    return communicator


async def test_two_generations_per_user_across_sockets_then_busy(
    writer: Any, other_writer: Any, cast: Any, offline: None, settings: Any
) -> None:
    settings.STORY_MAX_ACTIVE_PER_USER = 2
    settings.STORY_OFFLINE_TOKENS_PER_SECOND = 20  # slow enough that the first two are still streaming
    sockets = [await _session_socket(writer) for _ in range(3)]
    other = await _session_socket(other_writer)
    try:
        for communicator in sockets[:2]:
            await communicator.send_json_to(generate_message())
            assert json.loads(await communicator.receive_from(timeout=5))["type"] == "accepted"
        await sockets[2].send_json_to(generate_message())
        refused = (await ws_events(sockets[2]))[-1]
        # Another writer is not held back by this one's generations.
        await other.send_json_to(generate_message())
        assert json.loads(await other.receive_from(timeout=5))["type"] == "accepted"
    finally:
        for communicator in [*sockets, other]:
            await communicator.disconnect()
    assert (refused["type"], refused["code"], refused["retryable"]) == ("error", "busy", True)
    assert "at most 2 at a time" in refused["message"]
    assert await GenerationRun.objects.filter(user=writer).acount() == 2


async def test_the_hourly_limit_refuses_with_when_to_retry(
    writer: Any, cast: Any, offline: None, settings: Any
) -> None:
    settings.STORY_GENERATIONS_PER_HOUR = 2
    communicator = await _session_socket(writer)
    try:
        for _ in range(2):
            await communicator.send_json_to(generate_message())
            assert (await ws_events(communicator))[-1]["type"] == "done"
        await communicator.send_json_to(generate_message())
        refused = (await ws_events(communicator))[-1]
    finally:
        await communicator.disconnect()
    assert (refused["code"], refused["retryable"]) == ("rate_limited", True)
    assert "Try again in 60 minutes" in refused["message"]
    assert await GenerationRun.objects.filter(user=writer).acount() == 2


@pytest.mark.parametrize(
    "frame",
    [
        '{"type": "generate", "\\ud800": 1, "plot": "x", "personas": ["noir-detective"]}',
        '{"type": "generate", "bad\\u0000key\\n": 1, "plot": "x", "personas": ["noir-detective"]}',
        '{"type": "attach", "run_id": 1, "\\ud800": 1}',
        '{"type": "cancel", "\\udfff": 1}',
        '{"type": "regenerate_scene", "story_id": 1, "version": 1, "index": 0, "\\ud800": 1}',
    ],
    ids=[
        "surrogate-key",
        "control-key",
        "attach-surrogate-key",
        "cancel-surrogate-key",
        "rewrite-surrogate-key",
    ],
)
async def test_a_hostile_field_name_gets_invalid_request_and_the_socket_stays_usable(
    writer: Any, cast: Any, offline: None, frame: str
) -> None:
    # Found by the hypothesis test: the error named the unknown key verbatim, and a lone surrogate in
    # it made the error frame itself unencodable.
    communicator = await _session_socket(writer)
    try:
        await communicator.send_to(text_data=frame)
        raw = await communicator.receive_from(timeout=5)
        # daphne encodes every text frame as UTF-8; the in-memory communicator does not, so check here.
        raw.encode("utf-8")
        event = json.loads(raw)
        assert (event["type"], event["code"]) == ("error", "invalid_request")
        assert "unknown fields" in event["message"]
        await communicator.send_json_to(generate_message())
        assert (await ws_events(communicator))[-1]["type"] == "done"
    finally:
        await communicator.disconnect()


@pytest.mark.parametrize("kind", ["generate", "attach", "cancel", "regenerate_scene"])
async def test_many_long_unknown_fields_are_answered_in_a_few_hundred_bytes(writer: Any, kind: str) -> None:
    # Each of the 500 was named (40 characters of each): a 20 KB answer to a 55 KB message, 40 KB to
    # 1,000 shorter ones.
    fields = {f"field-{number:04}-{'x' * 90}": 0 for number in range(500)}
    communicator = await _session_socket(writer)
    try:
        await communicator.send_json_to({"type": kind, **fields})
        raw = await communicator.receive_from(timeout=5)
    finally:
        await communicator.disconnect()
    event = json.loads(raw)
    assert (event["type"], event["code"]) == ("error", "invalid_request")
    assert event["message"].startswith("unknown fields: 'field-0000-xxxx")
    assert event["message"].count("(101 characters)") == 5
    assert event["message"].endswith(" and 495 more (500 in all)")
    assert len(raw) < 600


def test_the_api_answers_unknown_fields_in_a_few_hundred_bytes(writer: Any) -> None:
    client = APIClient()
    client.force_authenticate(writer)
    fields = {f"field-{number:04}-{'x' * 100}": 0 for number in range(1000)}
    body = {"plot": "x", "personas": ["noir-detective"], **fields}
    response = client.post("/api/ai/generate-screenplay/", body, format="json")
    assert response.status_code == 400
    assert response.json()["message"].endswith(" and 995 more (1000 in all)")
    assert len(response.content) < 600


def _own_story_with_version(user: Any) -> int:
    story = Story.objects.create(owner=user, title="Mine", plot="A plot.", latest_version_number=1)
    ScreenplayVersion.objects.create(story=story, number=1, content=screenplay(scenes=2), model="offline")
    return story.pk


def test_rewriting_a_scene_is_a_generation_under_the_same_hourly_limit(
    writer: Any, cast: Any, offline: None, settings: Any
) -> None:
    settings.STORY_GENERATIONS_PER_HOUR = 1
    story_id = _own_story_with_version(writer)
    GenerationRun.objects.create(user=writer, status="succeeded", model="offline", max_tokens=1024)
    client = APIClient()
    client.force_authenticate(writer)
    response = client.post(f"/api/stories/{story_id}/versions/1/scenes/0/regenerate/", {}, format="json")
    assert response.status_code == 429
    assert response.json()["code"] == "rate_limited"
    assert "Try again in" in response.json()["message"]
    assert ScreenplayVersion.objects.filter(story_id=story_id).count() == 1


def test_the_rewrite_form_of_another_writers_story_is_not_found(
    writer: Any, other_writer: Any, cast: Any
) -> None:
    story_id = _own_story_with_version(writer)
    url = f"/stories/{story_id}/versions/1/scenes/0/regenerate/"
    intruder = Client()
    intruder.force_login(other_writer)
    assert intruder.post(url, {"instructions": "make it mine"}).status_code == 404
    anonymous = Client().post(url, {"instructions": "x"})
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")
    assert ScreenplayVersion.objects.filter(story_id=story_id).count() == 1
    assert GenerationRun.objects.count() == 0


async def test_a_flooding_socket_is_told_once_then_closed_4429(writer: Any, settings: Any) -> None:
    # daphne queued every message a client sent, with no bound: 2,000 a second grew the process by
    # about 100 MB in 1.5 s. Now a socket's messages over STORY_WS_MESSAGES_PER_SECOND are dropped.
    settings.STORY_WS_MESSAGES_PER_SECOND = 5
    communicator = await _session_socket(writer)
    try:
        for _ in range(200):
            await communicator.send_json_to({"type": "cancel"})
        answers = []
        while (output := await communicator.receive_output(timeout=5))["type"] == "websocket.send":
            answers.append(json.loads(output["text"]))
    finally:
        await communicator.disconnect()
    assert output == {"type": "websocket.close", "code": 4429, "reason": "too_many_messages"}
    # The first five answered, the flood told once, then nothing more: 193 were never answered.
    assert [answer["code"] for answer in answers] == ["invalid_request"] * 5 + ["rate_limited"]
    told = answers[-1]
    assert (told["retryable"], told["retry_after"]) == (True, 1)
    assert told["message"].startswith("this connection sent more than 5 messages a second")


async def test_a_socket_that_slows_down_after_being_told_stays_open(writer: Any, settings: Any) -> None:
    settings.STORY_WS_MESSAGES_PER_SECOND = 5
    communicator = await _session_socket(writer)
    try:
        for _ in range(8):
            await communicator.send_json_to({"type": "cancel"})
        codes = [(await communicator.receive_json_from(timeout=5))["code"] for _ in range(6)]
        assert codes == ["invalid_request"] * 5 + ["rate_limited"]
        assert await communicator.receive_nothing(timeout=0.5)
        # A second later the bucket has refilled: answered as before.
        await communicator.send_json_to({"type": "cancel"})
        assert (await communicator.receive_json_from(timeout=5))["code"] == "invalid_request"
    finally:
        await communicator.disconnect()


async def test_a_client_at_the_create_pages_pace_is_never_refused(
    writer: Any, cast: Any, offline: None
) -> None:
    # The create page sends a generate, perhaps a cancel, and an attach after each reconnect: a few
    # messages a second at most. Here four at once, then one every 0.1 s, with the default limit.
    communicator = await _session_socket(writer)
    try:
        for _ in range(4):
            await communicator.send_json_to({"type": "cancel"})
        for _ in range(30):
            await asyncio.sleep(0.1)
            await communicator.send_json_to({"type": "cancel"})
        answers = [await communicator.receive_json_from(timeout=5) for _ in range(34)]
        await communicator.send_json_to(generate_message())
        events = await ws_events(communicator)
    finally:
        await communicator.disconnect()
    assert {answer["code"] for answer in answers} == {"invalid_request"}
    assert events[-1]["type"] == "done"

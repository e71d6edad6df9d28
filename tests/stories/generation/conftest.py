from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.db.models.signals import post_save
from django.test import Client

from stories.generation.backends import anthropic as anthropic_backend
from stories.generation.models_registry import DEFAULT_MODEL
from stories.models import ScreenplayVersion
from storyproject.asgi import application
from tests.fake_anthropic import FakeAnthropic, Reply

MODEL = DEFAULT_MODEL
TERMINAL = {"done", "error", "cancelled"}


@pytest.fixture
def fake_anthropic(settings: Any) -> Iterator[FakeAnthropic]:
    """A fake Anthropic server, with the app pointed at it through the Anthropic back-end."""
    server = FakeAnthropic()
    settings.ANTHROPIC_API_KEY = server.api_key
    settings.ANTHROPIC_BASE_URL = server.base_url
    settings.STORY_BACKEND = "stories.generation.backends.anthropic.AnthropicBackend"
    settings.STORY_MODEL = MODEL
    settings.STORY_MODELS = [MODEL, "claude-haiku-5-5"]
    settings.STORY_LLM_READ_TIMEOUT_SECONDS = 1
    settings.STORY_LLM_CONNECT_TIMEOUT_SECONDS = 2
    yield server
    server.close()


@pytest.fixture(params=["httpx", "aiohttp"])
async def model_transport(request: Any, monkeypatch: Any) -> Any:
    """The model client's HTTP transport, each in turn: httpx2 (the SDK's default: commands, blocking
    calls) and aiohttp (the SDK's DefaultAioHttpClient: what daphne's event loop reads the model through;
    here the test's loop stands in for daphne's). The loop's clients are closed at the end."""
    if request.param == "aiohttp":
        monkeypatch.setattr(anthropic_backend, "_serving_loop", lambda loop: True)
    yield request.param
    await anthropic_backend.clients_close()


@pytest.fixture
def offline(settings: Any) -> None:
    settings.ANTHROPIC_API_KEY = ""
    settings.STORY_MODEL = settings.OFFLINE_MODEL
    settings.STORY_MODELS = []
    settings.STORY_OFFLINE_TOKENS_PER_SECOND = 0


class SaveHold:
    """Holds each screenplay save inside its transaction, in its worker thread, until released."""

    def __init__(self) -> None:
        self.in_save = threading.Event()
        self.released = threading.Event()

    def hold(self, sender: Any, **kwargs: Any) -> None:
        self.in_save.set()
        self.released.wait(5)

    async def reached(self, timeout: float = 10) -> bool:
        return await sync_to_async(self.in_save.wait, thread_sensitive=False)(timeout)

    def release(self) -> None:
        self.released.set()


@pytest.fixture
def save_hold() -> Iterator[SaveHold]:
    """A SaveHold on every ScreenplayVersion save: what a cancel or a disconnect lands on meanwhile."""
    held = SaveHold()
    post_save.connect(held.hold, sender=ScreenplayVersion, weak=False)
    yield held
    post_save.disconnect(held.hold, sender=ScreenplayVersion)
    held.release()


@pytest.fixture
def cast(persona_factory: Any) -> list[Any]:
    return [
        persona_factory(
            "noir-detective", "Sam Spade", personality="World-weary private eye.", voice="Clipped."
        ),
        persona_factory("femme-fatale", "Brigid", personality="Charming liar.", voice="Velvet."),
    ]


def screenplay(scenes: int = 3, *, speakers: tuple[str, str] = ("SAM SPADE", "BRIGID")) -> dict[str, Any]:
    return {
        "title": "The Falcon",
        "logline": "A detective and a liar chase a statue.",
        "characters": [
            {"name": "SAM SPADE", "persona": "noir-detective", "description": "A detective."},
            {"name": "BRIGID", "persona": "femme-fatale"},
        ],
        "scenes": [
            {
                "heading": f"INT. OFFICE {n} - NIGHT",
                "elements": [
                    {"type": "action", "text": f"Rain on the window, take {n}."},
                    {"type": "dialogue", "character": speakers[0], "text": f"Line {n}."},
                    # In the order structured outputs write it: the optional parenthetical last.
                    {
                        "type": "dialogue",
                        "character": speakers[1],
                        "text": f"Reply {n}.",
                        "parenthetical": "softly",
                    },
                ],
            }
            for n in range(1, scenes + 1)
        ],
    }


def generate_message(**fields: Any) -> dict[str, Any]:
    return {
        "type": "generate",
        "plot": "A statue, a lie, a fog.",
        "personas": ["noir-detective", "femme-fatale"],
        **fields,
    }


def _session_cookie(user: Any) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[django_settings.SESSION_COOKIE_NAME].value


async def ws_connect(user: Any | None) -> WebsocketCommunicator:
    headers = [(b"origin", b"http://testserver")]
    if user is not None:
        cookie = await sync_to_async(_session_cookie)(user)
        headers.append((b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    communicator = WebsocketCommunicator(application, "/ws/generate/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def ws_generate(user: Any, *, timeout: float = 10, **fields: Any) -> list[dict[str, Any]]:
    """Connect as ``user``, send one generate message (generate_message with ``fields``), return its events."""
    communicator = await ws_connect(user)
    try:
        await communicator.send_json_to(generate_message(**fields))
        return await ws_events(communicator, timeout=timeout)
    finally:
        await communicator.disconnect()


async def ws_events(communicator: WebsocketCommunicator, timeout: float = 10) -> list[dict[str, Any]]:
    """Every event up to and including the one that ends a generation."""
    events = []
    while True:
        event = json.loads(await communicator.receive_from(timeout=timeout))
        events.append(event)
        if event["type"] in TERMINAL:
            return events


def unaddressed(event: dict[str, Any]) -> dict[str, Any]:
    """An event without the address the run's log gives it (``seq``, and ``run_id`` where only it adds one)."""
    kept = {key: value for key, value in event.items() if key != "seq"}
    if event["type"] not in ("accepted", "saved", "done"):
        kept.pop("run_id", None)
    return kept


def continuing_writer(expected: dict[str, Any], *, thought: str | None = None) -> Any:
    """A model that writes ``expected``, every reply cut at max_tokens; a continuation fills what its
    schema requires and the scenes after the one it is asked to go on from. ``thought``: the thinking
    of its first reply (the fake's own otherwise)."""

    def reply(body: dict[str, Any]) -> Reply:
        ask = body["messages"][-1]["content"]
        done = re.search(r"after scene (\d+)", ask) if len(body["messages"]) > 1 else None
        if done is None:
            if thought is None:
                return Reply(text=json.dumps(expected), cut_at_max_tokens=True)
            return Reply(text=json.dumps(expected), cut_at_max_tokens=True, thinking_text=thought)
        required = body["output_config"]["format"]["schema"]["required"]
        document = {key: value for key, value in expected.items() if key in required}
        document["scenes"] = expected["scenes"][int(done.group(1)) :]
        return Reply(text=json.dumps(document), cut_at_max_tokens=True)

    return reply

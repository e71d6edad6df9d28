"""The protocol as code (stories.generation.events): its one reader keeps no streamed text."""

from __future__ import annotations

import json
import re
import tracemalloc
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from stories import consumers
from stories.errors import ERROR_CODES, GenerationCancelled, GenerationError
from stories.exception_handlers import GENERATION_ERROR_STATUS
from stories.generation.events import ADDRESS_KEYS, EVENT_TYPES, events_fold
from stories.generation.regenerate import scene_regenerate_request_parse
from stories.generation.requests import generation_request_parse
from stories.models import ScreenplayVersion
from stories.runs.addresses import attach_parse, cancel_parse
from stories.serializers import GenerationResultSerializer
from storyproject.untrusted import json_parse_untrusted
from tests.fake_anthropic import FakeAnthropic, Reply, screenplay_text
from tests.fake_screenwriter import FakeScreenwriter
from tests.stories.generation.conftest import generate_message, screenplay, ws_generate

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/ai/generate-screenplay/"
# A kept delta event costs about 270 bytes (a dict of three keys and its text) whatever its size;
# what a run needs besides does not grow with the number of deltas (measured: under 30 bytes each).
_BYTES_PER_KEPT_DELTA = 100


def _body() -> dict[str, Any]:
    return {key: value for key, value in generate_message(mode="parallel").items() if key != "type"}


def _long_screenplay(scenes: int) -> dict[str, Any]:
    content = screenplay(scenes=scenes)
    for number, scene in enumerate(content["scenes"], start=1):
        scene["elements"][0]["text"] = f"Rain on the window of office {number}, " + "drip " * 40
    return content


def _traced_peak(api: APIClient, fake: FakeAnthropic, expected: dict[str, Any], chunk_chars: int) -> int:
    """The peak memory, over what was in use before, of one blocking parallel generation."""
    fake.default = FakeScreenwriter(expected, chunk_chars=chunk_chars, indent=None)
    body = _body()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        response = api.post(URL, body, format="json")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 201, response.content
    assert (
        ScreenplayVersion.objects.latest("id").content["scenes"]
        == response.json()["version"]["content"]["scenes"]
    )
    return peak - before


def test_a_blocking_30_scene_parallel_run_keeps_no_streamed_deltas(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    api = APIClient()
    api.force_authenticate(writer)
    # The run's event log keeps events for replay, up to this bound per run: what is measured here is
    # what the blocking endpoint keeps beyond that (nothing). The log is this process's: with Redis,
    # while a batch of events is written, the fake (streaming 30 scenes as fast as loopback allows)
    # fills the fan-out's queue meanwhile, which measures the fake's speed, not what the fold keeps.
    settings.STORY_RUN_EVENTS_MAX = 500
    settings.REDIS_URL = ""
    # A first run imports and warms up what every run needs (the SDK, its HTTP client), untraced.
    fake_anthropic.default = FakeScreenwriter(screenplay(scenes=1))
    assert api.post(URL, _body(), format="json").status_code == 201
    expected = _long_screenplay(30)
    # The same 30-scene screenplay streamed in coarse deltas, then in about ten times as many.
    coarse = _traced_peak(api, fake_anthropic, expected, chunk_chars=24)
    fine = _traced_peak(api, fake_anthropic, expected, chunk_chars=2)
    # The scene calls alone stream at least the screenplay's JSON.
    streamed = len(json.dumps(expected))
    more_deltas = streamed // 2 - streamed // 24
    assert more_deltas > 5000
    # Had the endpoint kept its deltas, the finer stream would cost over a megabyte more.
    assert fine - coarse < more_deltas * _BYTES_PER_KEPT_DELTA, (coarse, fine, more_deltas)


# --- The TypedDicts are the protocol: what the pipeline sends, what docs/protocol.md lists ---------


def _check_shape(event: dict[str, Any]) -> None:
    shape: Any = EVENT_TYPES[event["type"]]
    # Every event of a run has its address; a refusal before any run has none.
    assert "seq" in event or event["type"] == "error", event
    shape_keys = shape.__required_keys__ | shape.__optional_keys__
    keys = set(event) - (ADDRESS_KEYS - shape_keys)
    assert shape.__required_keys__ <= keys <= shape_keys, event
    if event["type"] in ("error", "scene_retry"):
        assert event["code"] in ERROR_CODES


async def test_every_event_the_runs_send_has_the_shape_of_its_typed_dict(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    expected = screenplay(scenes=3)
    fake_anthropic.script(Reply(text=screenplay_text(expected), chunk_chars=40))
    single = await ws_generate(writer, mode="single")
    writer_fake = FakeScreenwriter(expected, chunk_chars=40)
    writer_fake.fail_scene(1, Reply(status=500, error_type="api_error", headers={"retry-after-ms": "1"}))
    fake_anthropic.default = writer_fake
    parallel = await ws_generate(writer, mode="parallel", timeout=20)
    refused = await ws_generate(writer, personas=["nobody"])
    events = [*single, *parallel, *refused]
    for event in events:
        _check_shape(event)
    # Every event but `cancelled` (the socket's own, see test_consumer), `resumed` (a resumed run's,
    # see test_resume) and `attached` (an attach's answer, see test_ws_runs) was seen and checked.
    assert {event["type"] for event in events} == set(EVENT_TYPES) - {"cancelled", "resumed", "attached"}


def test_the_protocol_page_lists_every_event_and_every_code_with_its_rest_status() -> None:
    page = (Path(settings.BASE_DIR) / "docs" / "protocol.md").read_text()
    server_to_client = page.split("## Server to client")[1].split("\n## ")[0]
    assert re.findall(r"^### `(\w+)`", server_to_client, re.M) == list(EVENT_TYPES)
    codes = page.split("## Error codes")[1].split("\n## ")[0]
    rows = re.findall(r"^\| `(\w+)` \|.*\| (\d{3})[^|]* \|$", codes, re.M)
    assert dict(rows) == {code: str(status) for code, status in GENERATION_ERROR_STATUS.items()}
    assert set(GENERATION_ERROR_STATUS) == ERROR_CODES


# --- The page's JSON examples: each one parses, and is what the server takes or sends ---------------


def _json_examples(section: str) -> list[dict[str, Any]]:
    """The objects of every ```json block under the protocol page's ``## section`` (a block may hold one
    object a line). ``[...]`` and ``{...}`` stand for elided content: read as empty."""
    page = (Path(settings.BASE_DIR) / "docs" / "protocol.md").read_text()
    part = page.split(f"\n## {section}\n")[1].split("\n## ")[0]
    examples = []
    for block in re.findall(r"```json\n(.*?)```", part, re.S):
        text = block.replace("[...]", "[]").replace("{...}", "{}")
        try:
            examples.append(json.loads(text))
        except json.JSONDecodeError:
            examples.extend(json.loads(line) for line in text.splitlines() if line.strip())
    return examples


def test_every_client_message_the_page_shows_is_one_the_server_takes() -> None:
    examples = _json_examples("Client to server")
    assert {example["type"] for example in examples} == {"generate", "regenerate_scene", "cancel", "attach"}
    for example in examples:
        # As the consumer reads a message: its JSON, then the fields of its type.
        message: Any = json_parse_untrusted(json.dumps(example), constants_allowed=False)
        fields = {key: value for key, value in message.items() if key != "type"}
        parse = {
            "generate": generation_request_parse,
            "regenerate_scene": scene_regenerate_request_parse,
            "cancel": cancel_parse,
            "attach": attach_parse,
        }[message["type"]]
        parse(fields)


def test_every_event_the_page_shows_has_the_shape_the_server_sends() -> None:
    examples = [
        *_json_examples("Runs and their addresses"),
        *_json_examples("Server to client"),
        *_json_examples("The two modes, message by message"),
    ]
    shown = set()
    for example in examples:
        shape: Any = EVENT_TYPES[example["type"]]
        keys = set(example) - ADDRESS_KEYS | (
            set(example) & (shape.__required_keys__ | shape.__optional_keys__)
        )
        assert shape.__required_keys__ <= keys <= shape.__required_keys__ | shape.__optional_keys__, example
        if example["type"] in ("error", "scene_retry"):
            assert example["code"] in ERROR_CODES, example
        shown.add(example["type"])
    assert shown == set(EVENT_TYPES)


def test_the_blocking_answer_the_page_shows_has_the_fields_the_server_sends() -> None:
    (example,) = _json_examples("REST: the same runs, blocking")
    fields = GenerationResultSerializer().fields
    assert set(example) == set(fields)
    for name in ("story", "version", "timings", "usage"):
        assert set(example[name]) == set(fields[name].fields), name  # type: ignore[attr-defined]


def test_the_close_codes_the_page_lists_are_the_ones_the_consumer_closes_with() -> None:
    page = (Path(settings.BASE_DIR) / "docs" / "protocol.md").read_text()
    table = page.split("\n## Close codes\n")[1].split("\n### ")[0]
    rows = dict(re.findall(r"^\| (4\d{3}) \| server \| (.*) \|$", table, re.M))
    assert set(rows) == {
        str(code)
        for name, code in vars(consumers).items()
        if name.startswith("CLOSE_") and isinstance(code, int)
    }
    # Each reason the consumer closes with (stories/consumers.py), in the row of its code.
    reasons = {
        consumers.CLOSE_UNAUTHENTICATED: "unauthenticated",
        consumers.CLOSE_TOO_MANY_SOCKETS: "busy",
        consumers.CLOSE_TOO_MANY_MESSAGES: "too_many_messages",
        consumers.CLOSE_NOT_READING: "not_reading",
        consumers.CLOSE_SERVER_STOPPING: "server_stopping",
    }
    for code, reason in reasons.items():
        assert f"reason `{reason}`" in rows[str(code)], (code, reason)


# --- events_fold ---------------------------------------------------------------------------------


async def _stream(*events: dict[str, Any], read_to_end: list[bool]) -> AsyncGenerator[dict[str, Any], None]:
    for event in events:
        yield event
    read_to_end.append(True)


_DONE = {"type": "done", "run_id": 7, "timings": {}, "usage": {}}
_SAVED = {"type": "saved", "run_id": 7, "story_id": 3, "version": 2, "url": "/stories/3/", "cast_dropped": []}


async def test_the_fold_returns_how_the_run_ended_after_reading_it_to_the_end() -> None:
    # Leaving the pipeline at `done` would close it there, and it would record the run as cancelled.
    read_to_end: list[bool] = []
    seen: list[str] = []
    stream = _stream({"type": "delta", "text": "{"}, _SAVED, _DONE, read_to_end=read_to_end)
    outcome = await events_fold(stream, on_event=lambda event: seen.append(event["type"]))
    assert (outcome.saved, outcome.done, outcome.run_id) == (_SAVED, _DONE, 7)
    assert seen == ["delta", "saved", "done"] and read_to_end == [True]


async def test_the_fold_raises_the_runs_error_with_its_retry_after() -> None:
    error = {"type": "error", "code": "busy", "message": "wait", "retryable": True, "retry_after": 5}
    with pytest.raises(GenerationError) as raised:
        await events_fold(_stream({"type": "accepted"}, error, read_to_end=[]))
    assert raised.value.as_event() == error


async def test_a_run_without_an_ending_or_cancelled_is_not_taken_for_a_success() -> None:
    with pytest.raises(GenerationError) as raised:
        await events_fold(_stream({"type": "delta", "text": "{"}, read_to_end=[]))
    assert raised.value.code == "llm_unavailable"
    with pytest.raises(GenerationCancelled):
        await events_fold(_stream({"type": "cancelled"}, read_to_end=[]))
    # A run that saved nothing (`--no-save`) ends well, but has no saved version to show.
    outcome = await events_fold(_stream(_DONE, read_to_end=[]))
    with pytest.raises(GenerationError, match="save_failed"):
        outcome.saved_event()

"""The fake Anthropic server keeps the API's rules the app depends on, checked through the real SDK."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from anthropic.types import TextBlockParam

from stories.generation.backends.anthropic import api_schema
from stories.generation.outline import parallel_step_schema
from stories.generation.prompt import model_screenplay_schema
from tests.fake_anthropic import FakeAnthropic, Reply, request_problem, token_count
from tests.live_server import free_port

ROOT = Path(__file__).resolve().parent.parent

MODEL = "claude-sonnet-4-6"
_LONG = " ".join(
    f"Rule {n}: the detective never trusts the client, and the rain never stops." for n in range(100)
)


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic(prompt_cache=True, default=lambda body: Reply(text='{"b": 1, "a": 2}'))
    yield server
    server.close()


def _send(fake: FakeAnthropic, **params: Any) -> tuple[str, dict[str, int]]:
    client = anthropic.Anthropic(api_key=fake.api_key, base_url=fake.base_url, max_retries=0)
    body = {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": "Go."}], **params}
    text, usage = "", {}
    with client.messages.create(**body, stream=True) as stream:
        for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                text += event.delta.text
            elif event.type == "message_delta":
                usage = event.usage.model_dump()
    return text, usage


def _cached_system(text: str = _LONG) -> list[TextBlockParam]:
    return [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]


def _format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"format": {"type": "json_schema", "schema": schema}}


_AB = {
    "type": "object",
    "additionalProperties": False,
    "required": ["a"],
    "properties": {"b": {"type": "integer"}, "a": {"type": "integer"}},
}


def test_a_structured_reply_comes_required_properties_first(fake: FakeAnthropic) -> None:
    text, _ = _send(fake, output_config=_format(_AB))
    assert list(json.loads(text)) == ["a", "b"]
    text, _ = _send(fake)
    assert list(json.loads(text)) == ["b", "a"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"additionalProperties": True}, "additionalProperties must be set to false"),
        ({"properties": {"a": {"type": "string", "minLength": 1}}}, "'minLength' is not supported"),
        ({"properties": {"a": {"type": "array", "minItems": 2}}}, "minItems must be 0 or 1"),
    ],
)
def test_a_schema_structured_outputs_reject_gets_a_400(
    fake: FakeAnthropic, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(anthropic.BadRequestError, match=message):
        _send(fake, output_config=_format({**_AB, **change}))


def test_the_schemas_the_app_sends_are_accepted() -> None:
    for schema in (model_screenplay_schema(), parallel_step_schema()):
        body = {"output_config": _format(api_schema(schema))}
        assert request_problem(body) == ""
    # The storage contract itself would not be: it has bounds structured outputs reject.
    assert "not supported" in request_problem({"output_config": _format(model_screenplay_schema())})


def test_more_than_four_cache_breakpoints_get_a_400(fake: FakeAnthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="A maximum of 4 blocks"):
        _send(fake, system=_cached_system() * 5)


def test_a_prefix_is_read_for_five_minutes_after_its_last_use(fake: FakeAnthropic) -> None:
    now = [1000.0]
    fake.clock = lambda: now[0]
    _, usage = _send(fake, system=_cached_system())
    written = usage["cache_creation_input_tokens"]
    assert written > 1024 and usage["cache_read_input_tokens"] == 0
    for _ in range(2):
        now[0] += 299  # each read renews the five minutes
        _, usage = _send(fake, system=_cached_system())
        assert (usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"]) == (written, 0)
    now[0] += 301
    _, usage = _send(fake, system=_cached_system())
    assert (usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"]) == (0, written)


def test_a_different_output_format_or_a_prefix_under_the_minimum_is_not_read(fake: FakeAnthropic) -> None:
    _send(fake, system=_cached_system(), output_config=_format(_AB))
    _, usage = _send(fake, system=_cached_system())
    assert usage["cache_read_input_tokens"] == 0
    short = _LONG[:2000]  # about 500 tokens: under Sonnet's 1,024
    for _ in range(2):
        _, usage = _send(fake, system=_cached_system(short))
    assert (usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"]) == (0, 0)
    assert usage["input_tokens"] == token_count(short) + token_count("Go.")


def test_tokens_are_counted_from_words_and_punctuation_not_characters() -> None:
    prose = "The detective walked slowly through the rain, thinking about the statue and the lie."
    assert abs(token_count(prose) - len(prose) / 4) <= 0.25 * len(prose) / 4
    # JSON costs more per character than prose, as it does with the real tokenizer.
    data = json.dumps({"a": [1, 2, 3], "b": {"c": None}})
    assert token_count(data) > len(data) / 4


def _thinking_stream(fake: FakeAnthropic, max_tokens: int) -> tuple[list[str], str, str | None]:
    """Block types, text and stop reason of one streamed reply with adaptive thinking asked for."""
    client = anthropic.Anthropic(api_key=fake.api_key, base_url=fake.base_url, max_retries=0)
    with client.messages.stream(
        model=MODEL,
        max_tokens=max_tokens,
        messages=[{"role": "user", "content": "Go."}],
        thinking={"type": "adaptive"},
    ) as stream:
        message = stream.get_final_message()
    text = "".join(block.text for block in message.content if block.type == "text")
    return [block.type for block in message.content], text, message.stop_reason


def test_thinking_counts_toward_max_tokens_before_the_text() -> None:
    thought = "Weigh the client's every lie before writing a word. " * 20
    reply = Reply(text="one two three four five " * 40, thinking_text=thought, cut_at_max_tokens=True)
    server = FakeAnthropic(default=lambda body: reply)
    try:
        blocks, text, stop = _thinking_stream(server, token_count(thought) + 10)
        assert (blocks, stop) == (["thinking", "text"], "max_tokens")
        assert token_count(text) <= 10 and text
        # Thinking past max_tokens: no text block at all.
        blocks, text, stop = _thinking_stream(server, token_count(thought) // 2)
        assert (blocks, text, stop) == (["thinking"], "", "max_tokens")
        blocks, text, stop = _thinking_stream(server, 4096)
        assert (blocks, text, stop) == (["thinking", "text"], reply.text, "end_turn")
    finally:
        server.close()


@pytest.mark.parametrize(
    ("params", "error", "words"),
    [
        ({"model": "claude-nonesuch"}, anthropic.NotFoundError, "model: claude-nonesuch"),
        (
            {"model": "claude-sonnet-5-5", "thinking": {"type": "disabled"}},
            anthropic.BadRequestError,
            "thinking",
        ),
        (
            {"model": "claude-opus-5-5", "thinking": {"type": "disabled"}},
            anthropic.BadRequestError,
            "thinking",
        ),
        (
            {"model": "claude-haiku-5-5", "thinking": {"type": "enabled", "budget_tokens": 1024}},
            anthropic.BadRequestError,
            "thinking",
        ),
        (
            {
                "model": "claude-haiku-4-5",
                "max_tokens": 2000,
                "thinking": {"type": "enabled", "budget_tokens": 2000},
            },
            anthropic.BadRequestError,
            "budget_tokens",
        ),
        ({"model": "claude-haiku-4-5", "max_tokens": 64_001}, anthropic.BadRequestError, "max_tokens"),
        (
            {"model": "claude-sonnet-5-5", "extra_body": {"temperature": 0.2}},
            anthropic.BadRequestError,
            "temperature",
        ),
        (
            {
                "model": "claude-sonnet-5-5",
                "messages": [
                    {"role": "user", "content": "Go."},
                    {"role": "assistant", "content": '{"title":'},
                ],
            },
            anthropic.BadRequestError,
            "prefill",
        ),
    ],
)
def test_what_the_api_rejects_is_rejected_before_any_reply_is_used(
    fake: FakeAnthropic, params: dict[str, Any], error: type[Exception], words: str
) -> None:
    fake.script(Reply(text="{}"))
    with pytest.raises(error, match=words):
        _send(fake, **params)
    assert len(fake.replies) == 1
    # An assistant turn before the last user turn is no prefill; the 4.x models still take a prefill.
    _send(
        fake,
        model="claude-sonnet-4-6",
        messages=[{"role": "user", "content": "Go."}, {"role": "assistant", "content": "{"}],
    )


def test_the_fakes_cache_minimum_and_default_thinking_are_the_apis_not_the_apps_registry(
    fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Was: the fake read both from the app's registry, so a registry that under-stated a minimum (or
    # said a model thinks unasked) was echoed back as a cache hit (or a thought) the API would not give.
    from dataclasses import replace

    from stories.generation import models_registry

    wrong = replace(models_registry.MODELS[MODEL], min_cache_tokens=256, thinks_by_default=True)
    monkeypatch.setitem(models_registry.MODELS, MODEL, wrong)
    short = _LONG[:2000]  # about 500 tokens: over the wrong 256, under Sonnet 4.6's 1,024
    for _ in range(2):
        _, usage = _send(fake, system=_cached_system(short))
    assert (usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"]) == (0, 0)
    assert usage["output_tokens"] == token_count('{"b": 1, "a": 2}')  # no thinking billed


def test_message_start_reports_the_cache_write_by_ttl(fake: FakeAnthropic) -> None:
    client = anthropic.Anthropic(api_key=fake.api_key, base_url=fake.base_url, max_retries=0)
    with client.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=[{"role": "user", "content": "Go."}],
        system=_cached_system(),
        stream=True,
    ) as stream:
        start = next(event for event in stream if event.type == "message_start")
        for _ in stream:
            pass
    usage = start.message.usage
    assert usage.cache_creation is not None and usage.cache_creation_input_tokens
    assert usage.cache_creation.ephemeral_5m_input_tokens == usage.cache_creation_input_tokens
    assert usage.cache_creation.ephemeral_1h_input_tokens == 0


def test_the_sdks_own_stream_reads_a_redacted_thinking_block_between_the_thinking_and_the_text() -> None:
    reply = Reply(text="FADE IN.", thinking_text="Rain first.", redacted_thinking="EmwKAhgBEgy3va3p")
    server = FakeAnthropic(default=lambda body: reply)
    try:
        client = anthropic.Anthropic(api_key=server.api_key, base_url=server.base_url, max_retries=0)
        with client.messages.stream(
            model=MODEL,
            max_tokens=100,
            messages=[{"role": "user", "content": "Go."}],
            thinking={"type": "adaptive"},
        ) as stream:
            message = stream.get_final_message()
    finally:
        server.close()
    assert [block.type for block in message.content] == ["thinking", "redacted_thinking", "text"]
    thinking, redacted, text = message.content
    assert thinking.type == "thinking" and thinking.thinking == "Rain first." and thinking.signature
    assert redacted.type == "redacted_thinking" and redacted.data == "EmwKAhgBEgy3va3p"
    assert text.type == "text" and text.text == "FADE IN."
    # No detail to a plain end (types/message.py, stop_details: "null when the stop_reason has no
    # additional detail to report").
    assert (message.stop_reason, message.stop_details) == ("end_turn", None)


def _final_message(server: FakeAnthropic, **params: Any) -> anthropic.types.Message:
    client = anthropic.Anthropic(api_key=server.api_key, base_url=server.base_url, max_retries=0)
    with client.messages.stream(
        max_tokens=4000, messages=[{"role": "user", "content": "Go."}], **params
    ) as stream:
        return stream.get_final_message()


def test_a_55_models_thinking_comes_omitted_by_default_a_signature_and_no_text() -> None:
    # Was: every model streamed its thinking text; the 5.5 models' default display is "omitted" (the
    # sources at API_MODELS): the block has an empty thinking and a signature, its tokens still billed.
    reply = Reply(text="FADE IN.", thinking_text="Rain first, then the lie.")
    server = FakeAnthropic(default=lambda body: reply)
    try:
        omitted = _final_message(server, model="claude-sonnet-5-5")
        summarized = _final_message(
            server, model="claude-sonnet-5-5", thinking={"type": "adaptive", "display": "summarized"}
        )
        older = _final_message(server, model=MODEL, thinking={"type": "adaptive"})
    finally:
        server.close()
    thinking, text = omitted.content
    assert thinking.type == "thinking" and thinking.thinking == "" and thinking.signature
    assert text.type == "text" and text.text == "FADE IN."
    assert omitted.usage.output_tokens == token_count("FADE IN.") + token_count("Rain first, then the lie.")
    for message in (summarized, older):
        shown = message.content[0]
        assert shown.type == "thinking" and shown.thinking == "Rain first, then the lie."


@pytest.mark.parametrize(
    ("thinking", "problem"),
    [
        ({"type": "adaptive", "display": "full"}, "thinking.display: Input should be"),
        ({"type": "between_tools", "display": "omitted"}, "thinking.display: Extra inputs"),
    ],
)
def test_a_thinking_display_the_api_does_not_take_is_a_400(
    fake: FakeAnthropic, thinking: Any, problem: str
) -> None:
    client = anthropic.Anthropic(api_key=fake.api_key, base_url=fake.base_url, max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(
            model="claude-sonnet-5-5",
            max_tokens=100,
            messages=[{"role": "user", "content": "Go."}],
            thinking=thinking,
        )
    assert problem in str(raised.value)


def test_the_standalone_fakes_screenplay_answers_a_prompt_that_names_no_persona() -> None:
    # Was: ZeroDivisionError in the offline model's scene writer (no cast to take turns), so
    # `python -m tests.fake_anthropic` dropped claude_check's requests (docs/generation.md).
    from tests.fake_anthropic import screenplay_reply_for

    body = {"model": "claude-sonnet-5-5", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi."}]}
    reply = screenplay_reply_for(body)
    written = json.loads(reply.text)
    assert written["characters"] == []
    assert written["scenes"] and all(
        element["type"] in ("action", "transition")
        for scene in written["scenes"]
        for element in scene["elements"]
    )


def test_the_standalone_server_answers_claude_check_and_both_modes_as_docs_generation_md_says(
    tmp_path: Path,
) -> None:
    # docs/generation.md, "Trying the Anthropic back-end without a key". Was: every prompt answered with
    # a whole screenplay, so parallel mode (the default) failed on its outline ("invalid_output"), and
    # claude_check reported its structured output and the prompt cache failed.
    port = free_port()
    fake = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fake_anthropic",
            "--port",
            str(port),
            "--ttft",
            "0",
            "--tokens-per-second",
            "0",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert fake.stdout is not None and "fake Anthropic API on" in fake.stdout.readline()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "STORY_", "REDIS_"))},
            "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
            "ANTHROPIC_API_KEY": "sk-ant-fake-local",
            "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}",
            "STORY_MODEL": "claude-sonnet-5-5",
        }

        def manage(*arguments: str) -> subprocess.CompletedProcess[str]:
            command = [sys.executable, "manage.py", *arguments]
            return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

        check = manage("claude_check")
        assert check.returncode == 0, check.stdout + check.stderr
        assert check.stdout.startswith("claude-sonnet-5-5  OK")
        assert manage("migrate", "--noinput").returncode == 0
        assert manage("load_demo").returncode == 0
        for mode in ("parallel", "single"):
            written = manage(
                "generate_screenplay",
                "--plot",
                "A lighthouse keeper reads a storm. The ferry is late.",
                "--persona",
                "noir-detective",
                "--persona",
                "starship-captain",
                "--mode",
                mode,
                "--format",
                "json",
            )
            assert written.returncode == 0, written.stderr[-500:]
            names = {c["persona"] for c in json.loads(written.stdout)["characters"]}
            assert names == {"noir-detective", "starship-captain"}
    finally:
        fake.terminate()
        fake.wait(10)


def test_a_request_sent_before_a_429s_retry_after_has_passed_is_refused_again() -> None:
    # Was: the fake answered the next scripted reply whenever it came, so a client that retried before
    # the wait a 429 asked for succeeded; the API refuses it ("Earlier retries will fail", api/rate-limits).
    server = FakeAnthropic(default=lambda body: Reply(text="ok"))
    try:
        server.script(Reply(status=429, error_type="rate_limit_error", headers={"retry-after": "2"}))
        for _ in range(2):
            with pytest.raises(anthropic.RateLimitError) as raised:
                _send(server)
        assert raised.value.response.headers["retry-after"] in ("1", "2")
        assert raised.value.type == "rate_limit_error" and len(server.requests) == 2
        server.rate_limited_until = 0.0  # as if the two seconds had passed
        assert _send(server)[0] == "ok"
    finally:
        server.close()


def test_a_spend_limit_429_or_one_without_a_wait_starts_no_wait() -> None:
    server = FakeAnthropic(default=lambda body: Reply(text="ok"))
    try:
        server.script(
            Reply(status=429, error_type="rate_limit_error", error_code="enforced_spend_limit_reached"),
            Reply(status=429, error_type="rate_limit_error", headers={"retry-after": "0"}),
        )
        for _ in range(2):
            with pytest.raises(anthropic.RateLimitError):
                _send(server)
        assert _send(server)[0] == "ok"
    finally:
        server.close()


def test_error_bodies_have_the_apis_shape_details_null_and_no_request_id_mid_stream() -> None:
    # Was: the fake's errors had no ``details`` at all and its mid-stream error said "fault injected".
    # The API writes ``"details": null`` when it has no error code, in an HTTP error's body
    # ({"type":"error","error":{"details":null,"type":"overloaded_error","message":"Overloaded"},
    # "request_id":"req_..."}, gotgenes/pi-anthropic-auth issue 73, 2026-09) and in an ``error`` event
    # mid-stream, whose data has no request_id (the SDK's APIStatusError printed as its body,
    # {'type': 'error', 'error': {'details': None, 'type': 'overloaded_error', 'message': 'Overloaded'}}:
    # anthropics/anthropic-sdk-python issue 688, pipecat-ai/pipecat issue 2161).
    server = FakeAnthropic()
    server.script(Reply(status=529), Reply(text="FADE IN. " * 10, chunk_chars=5, error_event_after=1))
    client = anthropic.Anthropic(api_key=server.api_key, base_url=server.base_url, max_retries=0)
    ask: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Go."}],
    }
    try:
        with pytest.raises(anthropic.APIStatusError) as http:
            client.messages.create(**ask)
        with (
            pytest.raises(anthropic.APIStatusError) as event,
            client.messages.create(**ask, stream=True) as stream,
        ):
            for _ in stream:
                pass
    finally:
        server.close()
    assert http.value.status_code == 529 and http.value.body == {
        "type": "error",
        "error": {"details": None, "type": "overloaded_error", "message": "Overloaded"},
        "request_id": "req_fake_000001",
    }
    assert http.value.request_id == "req_fake_000001" and http.value.error_code is None
    assert event.value.status_code == 200 and event.value.body == {
        "type": "error",
        "error": {"details": None, "type": "overloaded_error", "message": "Overloaded"},
    }
    # The request id of a mid-stream error is the response's header (APIStatusError.request_id).
    assert event.value.request_id == "req_fake_000002" and event.value.type == "overloaded_error"


_THINKS: dict[str, Any] = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 4000,
    "thinking": {"type": "enabled", "budget_tokens": 1024},
}


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"extra_body": {"temperature": 0.2}}, "`temperature` may only be set to 1 when thinking is enabled"),
        ({"extra_body": {"top_k": 5}}, "`top_k`"),
        ({"extra_body": {"top_p": 0.5}}, "`top_p`"),
        (
            {"messages": [{"role": "user", "content": "Go."}, {"role": "assistant", "content": '{"title":'}]},
            "a final `assistant` message must start with a thinking block",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "Go."},
                    {"role": "assistant", "content": ""},
                    {"role": "user", "content": "On."},
                ]
            },
            "messages.1: all messages must have non-empty content",
        ),
        (
            {"messages": [{"role": "user", "content": " \n"}]},
            "text content blocks must contain non-whitespace text",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]},
            "text content blocks must be non-empty",
        ),
    ],
)
def test_what_the_api_refuses_of_a_thinking_request_or_of_empty_content_is_a_400(
    fake: FakeAnthropic, params: dict[str, Any], words: str
) -> None:
    # Was: the fake took all of these (a 4.x model thinking at temperature 0.2, a prefill while
    # thinking, an empty or blank turn) and answered them; the API refuses each with a 400
    # (the sources at fake_anthropic._thinking_turns_problem and _content_problem).
    client = anthropic.Anthropic(api_key=fake.api_key, base_url=fake.base_url, max_retries=0)
    ask = {"messages": [{"role": "user", "content": "Go."}], **_THINKS, **params}
    with pytest.raises(anthropic.BadRequestError, match=words):
        client.messages.create(**ask)
    # Without thinking, the same sampling and prefill are taken (the 4.x models).
    if "extra_body" in params or "must start" in words:
        _send(fake, **params)


def test_a_thinking_block_goes_back_only_as_the_api_sent_it() -> None:
    # Multi-turn: a thinking block passed back must be the one the API returned, its signature intact
    # (anthropics/anthropic-sdk-python issue 1598); one edited, or from another model, is a 400.
    server = FakeAnthropic(default=lambda body: Reply(text="FADE IN.", thinking_text="Rain first."))
    client = anthropic.Anthropic(api_key=server.api_key, base_url=server.base_url, max_retries=0)
    try:
        first = _final_message(server, model=_THINKS["model"], thinking=_THINKS["thinking"])
        thinking, text = first.content
        assert thinking.type == "thinking" and text.type == "text"

        def again(block: dict[str, Any], model: str = "claude-sonnet-4-6") -> None:
            turns = [
                {"role": "user", "content": "Go."},
                {"role": "assistant", "content": [block, {"type": "text", "text": text.text}]},
                {"role": "user", "content": "On."},
            ]
            ask: dict[str, Any] = {**_THINKS, "model": model, "messages": turns}
            client.messages.create(**ask)

        returned = thinking.model_dump(exclude_none=True)
        again(returned)
        with pytest.raises(anthropic.BadRequestError, match="Invalid `signature` in `thinking` block"):
            again({**returned, "thinking": "Rain first, and a lie."})
        with pytest.raises(anthropic.BadRequestError, match="Invalid `signature` in `thinking` block"):
            again(returned, model="claude-haiku-4-5")
        # An earlier turn's thinking may be left out, not put after its text.
        after: dict[str, Any] = {
            **_THINKS,
            "messages": [
                {"role": "user", "content": "Go."},
                {"role": "assistant", "content": [{"type": "text", "text": text.text}, returned]},
                {"role": "user", "content": "On."},
            ],
        }
        client.messages.create(**after)
    except anthropic.BadRequestError as error:
        assert "the first block must be thinking or redacted_thinking. Found text." in str(error)
    else:
        raise AssertionError("a thinking block after the text was taken")
    finally:
        server.close()


@pytest.mark.parametrize(
    ("where", "before"),
    [("start", ["message_start"]), ("thinking", ["message_start", "content_block_start"])],
)
def test_an_error_event_can_come_before_any_text_right_after_message_start_or_while_thinking(
    where: str, before: list[str]
) -> None:
    # Was: the fake could send its error event only once the text block had opened; the API may send
    # one anywhere in the stream (fake_anthropic.Reply.error_event_at).
    reply = Reply(text="FADE IN.", error_event_after=0, error_event_at=where)
    server = FakeAnthropic(default=lambda body: reply)
    client = anthropic.Anthropic(api_key=server.api_key, base_url=server.base_url, max_retries=0)
    seen: list[str] = []
    try:
        with (
            pytest.raises(anthropic.APIStatusError) as raised,
            client.messages.create(
                **_THINKS, messages=[{"role": "user", "content": "Go."}], stream=True
            ) as stream,
        ):
            seen.extend(event.type for event in stream)
    finally:
        server.close()
    assert seen == before and raised.value.type == "overloaded_error" and raised.value.status_code == 200

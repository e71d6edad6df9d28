"""manage.py claude_check against the fake API, as an operator with a key runs it."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from stories.generation.claude_check import _check_call
from stories.generation.models_registry import MODELS
from tests.fake_anthropic import FakeAnthropic, Reply

OK = '{"ok": true}'


def _check(*args: str) -> str:
    out = io.StringIO()
    call_command("claude_check", *args, stdout=out, no_color=True)
    return out.getvalue()


@pytest.fixture
def cached_fake(fake_anthropic: FakeAnthropic) -> FakeAnthropic:
    # Like the API: a prefix marked cache_control is written once, then read.
    fake_anthropic.prompt_cache = True
    fake_anthropic.cache_min_tokens = 512
    return fake_anthropic


def test_each_configured_model_gets_a_streamed_structured_cached_request_pair(
    cached_fake: FakeAnthropic,
) -> None:
    cached_fake.script(*[Reply(text=OK) for _ in range(4)])
    lines = _check().splitlines()
    assert [line.split()[:2] for line in lines] == [["claude-sonnet-5-5", "OK"], ["claude-haiku-5-5", "OK"]]
    assert all("cache write" in line and "cache read" in line and " ms" in line for line in lines)
    bodies = [request.body for request in cached_fake.requests]
    assert [body["model"] for body in bodies] == ["claude-sonnet-5-5"] * 2 + ["claude-haiku-5-5"] * 2
    assert all(body["stream"] and body["output_config"]["format"]["type"] == "json_schema" for body in bodies)
    assert all(body["system"][0]["cache_control"] == {"type": "ephemeral"} for body in bodies)
    # The second request of each pair repeats the first, so that it reads what the first wrote.
    assert json.dumps(bodies[0]["system"]) == json.dumps(bodies[1]["system"])
    assert "cache read 0 tokens" not in lines[0] and "cache write 0 tokens" not in lines[0]


def test_a_failing_model_gets_a_clear_line_and_the_command_fails(cached_fake: FakeAnthropic) -> None:
    cached_fake.script(
        Reply(status=404, error_type="not_found_error", error_message="model: claude-haiku-5-5"),
        Reply(text=OK),
        Reply(text=OK),
    )
    out = io.StringIO()
    with pytest.raises(CommandError, match="1 of 2 model"):
        call_command("claude_check", stdout=out, no_color=True)
    sonnet, haiku = out.getvalue().splitlines()
    assert sonnet.startswith("claude-sonnet-5-5  FAILED  llm_config: the configured model is not available")
    assert "status 404" in sonnet and "request-id req_fake_000001" in sonnet
    assert haiku.startswith("claude-haiku-5-5  OK")
    # Not retried: one request for the failed model, two for the other.
    assert len(cached_fake.requests) == 3


def test_a_model_whose_cache_is_not_read_is_reported(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script(*[Reply(text=OK) for _ in range(2)])
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("claude_check", "--model", "claude-sonnet-5-5", stdout=out, no_color=True)
    assert "FAILED  prompt cache: the first request wrote nothing" in out.getvalue()


def test_without_a_key_or_with_a_retired_model_nothing_is_sent(
    fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    with pytest.raises(CommandError, match="retires on 2026-11-30"):
        _check("--model", "claude-sonnet-4-5")
    settings.ANTHROPIC_API_KEY = ""
    with pytest.raises(CommandError, match="ANTHROPIC_API_KEY is not set"):
        _check()
    assert fake_anthropic.requests == []


def test_an_unknown_model_of_5000_characters_is_quoted_short(fake_anthropic: FakeAnthropic) -> None:
    # The whole name was echoed back: 5,000 characters of error line.
    with pytest.raises(CommandError) as failure:
        _check("--model", "x" * 5000)
    message = str(failure.value)
    assert message.startswith("'" + "x" * 80 + "…' (5000 characters) is not a known Claude model (known: ")
    assert len(message) < 400
    assert fake_anthropic.requests == []


@pytest.mark.parametrize("model", list(MODELS))
def test_the_checks_cached_prefix_reaches_the_models_minimum_even_at_one_token_a_word(model: str) -> None:
    # The fake counts 1.3 tokens a word and cached the padding; a Claude BPE counts a common English word
    # as one token (971 tokens for Sonnet 4.6's 1,024 minimum by the anthropic-tokenizer package), and the
    # API caches nothing under the minimum: the check failed a healthy model. Here a token per word and per
    # full stop, a floor for what the API counts of this padding.
    text = _check_call(model).system[0]["text"]
    floor = len(re.findall(r"[A-Za-z0-9]+|\.", text))
    assert floor >= MODELS[model].min_cache_tokens * 1.2

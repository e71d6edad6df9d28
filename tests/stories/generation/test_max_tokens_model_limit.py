"""A writer's own max_tokens above what the chosen model can write is refused, naming the limit."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from stories.models import GenerationRun
from tests.fake_anthropic import FakeAnthropic, Reply, screenplay_text
from tests.stories.generation.conftest import screenplay, ws_generate

pytestmark = pytest.mark.django_db(transaction=True)

_REFUSED = "max_tokens must be at most 64000 for claude-haiku-4-5"


@pytest.fixture
def haiku_allowed(settings: Any, fake_anthropic: FakeAnthropic) -> FakeAnthropic:
    # Haiku 4.5 writes at most 64,000 tokens; the writer's bound allows more.
    settings.STORY_MODELS = ["claude-sonnet-5-5", "claude-haiku-4-5"]
    settings.STORY_MAX_MAX_TOKENS = 100_000
    settings.STORY_THINKING_BUDGET_TOKENS = 0
    return fake_anthropic


async def test_a_socket_asking_a_model_for_more_than_it_can_write_is_told_its_limit(
    writer: Any, cast: Any, haiku_allowed: FakeAnthropic
) -> None:
    # Was: accepted with max_tokens 70000, each call cut to 64000 without a word.
    events = await ws_generate(writer, model="claude-haiku-4-5", max_tokens=70_000)
    assert [event["type"] for event in events] == ["error"]
    assert events[0]["code"] == "invalid_request" and _REFUSED in events[0]["message"]
    assert haiku_allowed.requests == [] and not await GenerationRun.objects.aexists()


async def test_the_default_models_limit_holds_for_a_writer_who_names_no_model(
    writer: Any, cast: Any, haiku_allowed: FakeAnthropic, settings: Any
) -> None:
    settings.STORY_MODEL = "claude-haiku-4-5"
    events = await ws_generate(writer, max_tokens=64_001)
    assert events[-1]["type"] == "error" and _REFUSED in events[-1]["message"]
    assert haiku_allowed.requests == []


async def test_a_max_tokens_within_the_models_limit_is_accepted(
    writer: Any, cast: Any, haiku_allowed: FakeAnthropic
) -> None:
    haiku_allowed.script(Reply(text=screenplay_text(screenplay(scenes=2))))
    events = await ws_generate(writer, model="claude-haiku-4-5", max_tokens=64_000)
    assert events[0]["type"] == "accepted" and events[0]["max_tokens"] == 64_000
    assert events[-1]["type"] == "done"


def test_the_rest_api_refuses_it_with_a_400_naming_the_limit(
    writer: Any, cast: Any, haiku_allowed: FakeAnthropic
) -> None:
    client = APIClient()
    client.force_authenticate(writer)
    response = client.post(
        "/api/ai/generate-screenplay/",
        {
            "plot": "A lighthouse keeper lies.",
            "personas": [persona.name for persona in cast],
            "model": "claude-haiku-4-5",
            "max_tokens": 70_000,
        },
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request" and _REFUSED in response.json()["message"]
    assert haiku_allowed.requests == []


def test_the_command_refuses_it_with_status_2(writer: Any, cast: Any, haiku_allowed: FakeAnthropic) -> None:
    args = [
        "--plot",
        "Fog.",
        "--persona",
        "noir-detective",
        "--model",
        "claude-haiku-4-5",
        "--max-tokens",
        "70000",
    ]
    with pytest.raises(CommandError, match=f"invalid_request: {_REFUSED}") as failure:
        call_command("generate_screenplay", *args, stdout=io.StringIO(), stderr=io.StringIO())
    assert failure.value.returncode == 2
    assert haiku_allowed.requests == [] and not GenerationRun.objects.exists()

"""The API key never leaves the process: not in a page, an API response, the admin, the logs or a
debug page; and the SDK's debug logging cannot be switched on from the environment."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client, RequestFactory, override_settings
from django.views.debug import technical_500_response

from stories.models import GenerationRun, ScreenplayVersion, Story

CANARY = "sk-ant-api03-CANARY-7f3a9c-never-show-me"
ROOT = Path(__file__).resolve().parents[2]
SCREENPLAY = {
    "title": "Canary",
    "characters": [{"name": "ANA"}],
    "scenes": [
        {"heading": "INT. LAB - DAY", "elements": [{"type": "dialogue", "character": "ANA", "text": "Hi."}]}
    ],
}


@pytest.fixture
def world(user_factory: Any, persona_factory: Any) -> dict[str, Any]:
    admin = user_factory("root", is_staff=True, is_superuser=True)
    writer = user_factory("writer")
    persona = persona_factory("hero")
    story = Story.objects.create(owner=writer, title="Canary", plot="A plot.")
    run = GenerationRun.objects.create(
        user=writer,
        story=story,
        status="failed",
        model="offline",
        max_tokens=1024,
        error_code="llm_unavailable",
        error_message="upstream said no",
    )
    ScreenplayVersion.objects.create(story=story, number=1, content=SCREENPLAY, model="offline", run=run)
    Story.objects.filter(pk=story.pk).update(latest_version_number=1)
    return {"admin": admin, "writer": writer, "persona": persona, "story": story, "run": run}


def _urls(world: dict[str, Any]) -> dict[str, list[str]]:
    story, run, persona = world["story"], world["run"], world["persona"]
    return {
        "writer": [
            "/",
            "/stories/new/",
            f"/stories/{story.pk}/",
            "/runs/",
            "/account/",
            "/api/stories/",
            f"/api/stories/{story.pk}/",
            f"/api/stories/{story.pk}/versions/",
            f"/api/stories/{story.pk}/versions/1/",
            f"/api/stories/{story.pk}/versions/1/export/?format=json",
            f"/api/stories/{story.pk}/versions/1/export/?format=fountain",
            "/api/runs/",
            "/api/personas/",
            "/api/schema/",
            "/api/docs/",
            "/api/docs/?script=",
        ],
        "admin": [
            "/admin/",
            "/admin/personas/personaconfig/",
            f"/admin/personas/personaconfig/{persona.pk}/change/",
            "/admin/stories/story/",
            f"/admin/stories/story/{story.pk}/change/",
            "/admin/stories/generationrun/",
            f"/admin/stories/generationrun/{run.pk}/change/",
            "/admin/stories/generationsettings/",
            "/admin/stories/generationsettings/add/",
        ],
    }


@override_settings(ANTHROPIC_API_KEY=CANARY)
def test_the_api_key_appears_in_no_page_response_or_log_line(
    world: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for who, urls in _urls(world).items():
        client = Client()
        client.force_login(world[who])
        for url in urls:
            response = client.get(url)
            assert response.status_code == 200, url
            assert CANARY not in response.content.decode("utf-8", "replace"), url
            assert not any(CANARY in value for value in response.headers.values()), url
    assert CANARY not in caplog.text


@override_settings(ANTHROPIC_API_KEY=CANARY, DEBUG=True)
def test_the_debug_error_page_masks_the_api_key(db: None) -> None:
    request = RequestFactory().get("/boom/")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        page = technical_500_response(request, *sys.exc_info()).content.decode()
    assert "ANTHROPIC_API_KEY" in page  # the settings table is there...
    assert CANARY not in page  # ...with the key masked


def _logging_levels(env: dict[str, str], first: str) -> str:
    # `first` decides whether the SDK is imported before Django configures logging, or after.
    imports = {
        "sdk": "import anthropic, django; django.setup()",
        "django": "import django; django.setup(); import anthropic",
    }[first]
    script = (
        f"{imports}\n"
        "import logging\n"
        "anthropic.AsyncAnthropic(api_key='x')\n"
        "print(logging.getLogger('anthropic').getEffectiveLevel(), logging.getLogger('httpx').getEffectiveLevel())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("first", ["sdk", "django"])
def test_anthropic_log_debug_in_the_environment_does_not_enable_sdk_debug_logging(first: str) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL"))},
        "DJANGO_SETTINGS_MODULE": "storyproject.settings",
        "ANTHROPIC_LOG": "debug",
        "DJANGO_LOG_LEVEL": "DEBUG",
    }
    assert _logging_levels(env, first) == f"{logging.WARNING} {logging.WARNING}"

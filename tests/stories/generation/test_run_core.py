"""The run core (stories.generation.run) as a writer meets it: every mode's calls are timed alike."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from stories.models import GenerationRun
from tests.fake_anthropic import FakeAnthropic
from tests.fake_screenwriter import FakeScreenwriter
from tests.stories.generation.test_regenerate import _rewritten, _story_with_version

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_rewritten_scene_reports_its_time_to_first_token(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # A rewrite has no outline call: its scene call is the run's first, and its first words are the
    # run's time to first token, as in every other run (it used to be left empty).
    story_id, _old = _story_with_version(writer)
    fake_anthropic.default = FakeScreenwriter(_rewritten(), tokens_per_second=4000)
    client = APIClient()
    client.force_authenticate(writer)
    url = f"/api/stories/{story_id}/versions/1/scenes/1/regenerate/"
    assert client.post(url, {}, format="json").status_code == 201
    run = GenerationRun.objects.get(story_id=story_id, status="succeeded")
    assert run.ttft_ms is not None and run.prompt_ms is not None
    calls = run.details["calls"]
    assert [call["task"] for call in calls] == ["scene"] and calls[0]["ttft_ms"] == run.ttft_ms

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from stories.models import ScreenplayVersion
from tests.fake_anthropic import FakeAnthropic, Reply, screenplay_text
from tests.stories.generation.conftest import screenplay

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_command_streams_the_text_to_stdout_and_saves(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    expected = screenplay(scenes=2)
    fake_anthropic.script(Reply(text=screenplay_text(expected)))
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "generate_screenplay",
        user="writer",
        plot="A statue.",
        personas="noir-detective,femme-fatale",
        stdout=out,
        stderr=err,
    )
    assert json.loads(out.getvalue()) == expected
    assert "saved: story" in err.getvalue()
    assert ScreenplayVersion.objects.get().content == expected


def test_the_command_fails_with_the_error_code(writer: Any, cast: Any, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script(Reply(text="", stop_reason="refusal"))
    with pytest.raises(CommandError, match="llm_refused"):
        call_command(
            "generate_screenplay",
            user="writer",
            plot="x",
            personas="noir-detective",
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )
    with pytest.raises(CommandError, match="unknown_personas"):
        call_command(
            "generate_screenplay",
            user="writer",
            plot="x",
            personas="nobody",
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )
    assert not ScreenplayVersion.objects.exists()

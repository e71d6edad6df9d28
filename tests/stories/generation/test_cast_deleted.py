"""A persona deleted by an editor while a run that names it streams (docs/generation.md, the save).

The screenplay is saved whole (its character keeps its lines and its persona's name in the version's
content), but a deleted persona cannot be in the story's cast: the `saved` event, the blocking REST
answer and the run's record say which one was left out, and the create page shows it.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.core.management import call_command

from personas.models import PersonaConfig
from personas.services import personas_delete
from stories.models import GenerationRun, ScreenplayVersion, StoryCast
from stories.runs.follow import run_events_follow
from tests.fake_anthropic import FakeAnthropic
from tests.stories.generation.conftest import ws_events
from tests.stories.runs.conftest import log_expires, run_streaming, script_slow

pytestmark = pytest.mark.django_db(transaction=True)


def _editor_deletes(name: str) -> None:
    editor = get_user_model().objects.create_user(username="editor", password="editor-pw-2026", is_staff=True)
    personas_delete(personas=PersonaConfig.objects.filter(name=name), user=editor)


async def test_a_persona_deleted_mid_run_is_named_as_left_out_of_the_saved_cast(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    # Was: the version was saved and `saved` came as usual, but the story's cast silently lacked the
    # deleted persona's character; nothing told the writer.
    script_slow(fake_anthropic, tokens_per_second=60)
    communicator, run_id = await run_streaming(writer)
    try:
        await sync_to_async(_editor_deletes)("femme-fatale")
        events = await ws_events(communicator)
    finally:
        await communicator.disconnect()
    saved = next(event for event in events if event["type"] == "saved")
    assert saved["cast_dropped"] == [{"persona": "femme-fatale", "character_name": "BRIGID"}]
    assert events[-1]["type"] == "done"

    version = await ScreenplayVersion.objects.aget(run_id=run_id)
    members = [m async for m in StoryCast.objects.filter(story_id=version.story_id).select_related("persona")]
    assert [(m.persona.name, m.character_name) for m in members] == [("noir-detective", "SAM SPADE")]
    # The screenplay itself is whole: the character, its lines and its persona's name are kept.
    brigid = next(c for c in version.content["characters"] if c["name"] == "BRIGID")
    assert brigid["persona"] == "femme-fatale"
    spoken = {e.get("character") for s in version.content["scenes"] for e in s["elements"]}
    assert "BRIGID" in spoken

    # The run records it, so the end rebuilt from the database says it too.
    run = await GenerationRun.objects.aget(pk=run_id)
    assert run.details["cast_dropped"] == saved["cast_dropped"]
    await log_expires(run_id)
    rebuilt = [event async for event in run_events_follow(run_id=run_id, after=0)]
    assert next(e for e in rebuilt if e["type"] == "saved")["cast_dropped"] == saved["cast_dropped"]
    # And the terminal command that follows the run says it after the saved story.
    err = await sync_to_async(_command_attach, thread_sensitive=False)(run_id)
    assert "BRIGID (persona femme-fatale) left the story's cast: the persona was deleted" in err


def _command_attach(run_id: int) -> str:
    err = io.StringIO()
    call_command("generate_screenplay", "--attach", str(run_id), stdout=io.StringIO(), stderr=err)
    return err.getvalue()


async def test_a_run_whose_cast_is_whole_names_nobody_left_out(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    script_slow(fake_anthropic, tokens_per_second=400)
    communicator, _ = await run_streaming(writer)
    try:
        events = await ws_events(communicator)
    finally:
        await communicator.disconnect()
    saved = next(event for event in events if event["type"] == "saved")
    assert saved["cast_dropped"] == []
    assert json.dumps(saved)  # plain JSON, as on the socket
    assert await StoryCast.objects.filter(story_id=saved["story_id"]).acount() == 2

"""The one atomic save: race-free version numbers, a constant number of queries, all or nothing."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from stories.errors import GenerationError
from stories.generation.validation import CastEntry
from stories.models import GenerationRun, ScreenplayVersion, Story, StoryCast
from stories.services import RunRecord, ScreenplayDraft, screenplay_version_create


def _content(scenes: int, cast: int) -> dict[str, Any]:
    names = [f"ACTOR {n}" for n in range(cast)]
    return {
        "title": "T",
        "characters": [{"name": name, "persona": f"p{n}"} for n, name in enumerate(names)],
        "scenes": [
            {
                "heading": f"INT. ROOM {n} - DAY",
                "elements": [{"type": "dialogue", "character": names[0], "text": "Hi."}],
            }
            for n in range(scenes)
        ],
    }


def _draft(*, scenes: int = 1, cast: int = 1, story_id: int | None = None) -> ScreenplayDraft:
    return ScreenplayDraft(
        title="T",
        plot="P",
        content=_content(scenes, cast),
        model="offline",
        max_tokens=1000,
        cast=[CastEntry(persona=f"p{n}", character_name=f"ACTOR {n}", order=n) for n in range(cast)],
        story_id=story_id,
    )


@pytest.fixture
def ten_personas(persona_factory: Any) -> None:
    for n in range(10):
        persona_factory(f"p{n}")


def _queries(user_id: int, draft: ScreenplayDraft) -> int:
    with CaptureQueriesContext(connection) as captured:
        screenplay_version_create(user_id=user_id, draft=draft)
    return len(captured)


@pytest.mark.django_db
def test_the_save_takes_the_same_number_of_queries_for_1_and_40_scenes_and_1_and_10_cast_members(
    writer: Any, ten_personas: None
) -> None:
    new_story = {_queries(writer.pk, _draft(scenes=s, cast=c)) for s in (1, 40) for c in (1, 10)}
    story = Story.objects.create(owner=writer, title="T", plot="P")
    new_version = {
        _queries(writer.pk, _draft(scenes=s, cast=c, story_id=story.pk)) for s in (1, 40) for c in (1, 10)
    }
    assert len(new_story) == 1 and len(new_version) == 1
    assert story.versions.count() == 4


@pytest.mark.django_db
def test_a_new_version_recasts_the_story(writer: Any, ten_personas: None) -> None:
    version = screenplay_version_create(user_id=writer.pk, draft=_draft(cast=3))
    screenplay_version_create(user_id=writer.pk, draft=_draft(cast=2, story_id=version.story_id))
    cast = list(
        StoryCast.objects.filter(story_id=version.story_id).values_list("persona__name", "character_name")
    )
    assert cast == [("p0", "ACTOR 0"), ("p1", "ACTOR 1")]


@pytest.mark.django_db
def test_a_version_cannot_be_added_to_someone_elses_story(
    writer: Any, other_writer: Any, ten_personas: None
) -> None:
    story = Story.objects.create(owner=other_writer, title="T", plot="P")
    with pytest.raises(GenerationError) as raised:
        screenplay_version_create(user_id=writer.pk, draft=_draft(story_id=story.pk))
    assert raised.value.code == "forbidden"
    story.refresh_from_db()
    assert story.latest_version_number == 0 and not story.versions.exists()


@pytest.mark.django_db(transaction=True)
def test_16_concurrent_saves_of_one_story_get_versions_1_to_16(writer: Any, ten_personas: None) -> None:
    story = Story.objects.create(owner=writer, title="T", plot="P")
    start = threading.Barrier(16)

    def save(_: int) -> int:
        try:
            start.wait()
            return screenplay_version_create(
                user_id=writer.pk, draft=_draft(cast=2, story_id=story.pk)
            ).number
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=16) as pool:
        numbers = list(pool.map(save, range(16)))
    assert sorted(numbers) == list(range(1, 17))
    assert sorted(ScreenplayVersion.objects.filter(story=story).values_list("number", flat=True)) == list(
        range(1, 17)
    )
    story.refresh_from_db()
    assert story.latest_version_number == 16


def test_a_generations_save_closes_its_run_with_what_it_measured_and_only_while_it_holds_it(
    writer: Any, ten_personas: None
) -> None:
    held = GenerationRun.objects.create(
        user=writer, model="offline", max_tokens=1000, lease_owner="here:1:a", checkpoint={"scenes": [1]}
    )
    record = RunRecord(
        llm_ms=900,
        usage={"input_tokens": 120, "output_tokens": 480},
        stop_reason="end_turn",
        details={"note": "é"},
    )
    version = screenplay_version_create(
        user_id=writer.pk, draft=_draft(cast=2), run_id=held.pk, record=record, lease_owner="here:1:a"
    )
    run = GenerationRun.objects.get(pk=held.pk)
    assert (run.status, run.story_id, run.output_tokens, run.input_tokens) == (
        "succeeded",
        version.story_id,
        480,
        120,
    )
    assert (run.llm_ms, run.stop_reason, run.details) == (900, "end_turn", {"note": "é"})
    assert (run.lease_owner, run.lease_expires_at, run.checkpoint) == ("", None, {})
    assert run.finished_at is not None and run.save_ms is not None
    # Taken over by another process meanwhile: nothing of this save is kept.
    lost = GenerationRun.objects.create(
        user=writer, model="offline", max_tokens=1000, lease_owner="there:2:b"
    )
    with pytest.raises(GenerationError) as raised:
        screenplay_version_create(
            user_id=writer.pk, draft=_draft(), run_id=lost.pk, record=RunRecord(), lease_owner="here:1:a"
        )
    assert raised.value.code == "interrupted"
    assert GenerationRun.objects.get(pk=lost.pk).status == "streaming"
    assert Story.objects.count() == 1

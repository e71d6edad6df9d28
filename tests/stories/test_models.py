from __future__ import annotations

from typing import Any

import pytest
from django.db import IntegrityError, transaction

from stories.models import ScreenplayVersion, Story, StoryCast

SCREENPLAY = {"title": "T", "scenes": [{"heading": "INT. ROOM - DAY", "elements": []}]}


@pytest.fixture
def story(writer: Any) -> Story:
    return Story.objects.create(owner=writer, title="A story", plot="Something happens.")


@pytest.mark.django_db
def test_a_duplicate_version_number_is_rejected_by_the_database(story: Story) -> None:
    ScreenplayVersion.objects.create(story=story, number=1, content=SCREENPLAY)
    with pytest.raises(IntegrityError), transaction.atomic():
        ScreenplayVersion.objects.create(story=story, number=1, content=SCREENPLAY)
    assert story.versions.count() == 1


@pytest.mark.django_db
def test_the_same_persona_cannot_be_cast_twice_in_one_story(story: Story, persona_factory: Any) -> None:
    persona = persona_factory("hero")
    StoryCast.objects.create(story=story, persona=persona, character_name="HERO")
    with pytest.raises(IntegrityError), transaction.atomic():
        StoryCast.objects.create(story=story, persona=persona, character_name="ALSO HERO")
    assert story.cast.count() == 1


@pytest.mark.django_db
def test_one_persona_can_play_in_several_stories(story: Story, writer: Any, persona_factory: Any) -> None:
    persona = persona_factory("hero")
    other = Story.objects.create(owner=writer, title="Another", plot="More.")
    StoryCast.objects.create(story=story, persona=persona, character_name="HERO")
    StoryCast.objects.create(story=other, persona=persona, character_name="HERO")
    assert persona.castings.count() == 2


@pytest.mark.django_db
def test_every_persona_edit_bumps_its_version(persona_factory: Any) -> None:
    persona = persona_factory("hero")
    assert persona.version == 1
    persona.display_name = "Hero of the day"
    persona.save()
    persona.save()
    persona.refresh_from_db()
    assert persona.version == 3

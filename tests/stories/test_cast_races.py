"""A persona or a story deleted while a save casts it: the outcome of one of the two orders, never a 500.

The save is held between its read of the personas and its insert of the cast (a hook on the insert)
while another connection deletes. On SQLite every write transaction starts with BEGIN IMMEDIATE, so the
delete waits for the save whatever it does; on PostgreSQL the test waits until the delete is either done
or waiting for a lock, which is what a real interleaving can do.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection, connections
from django.db.models import ProtectedError
from django.test import Client

from personas.models import PersonaConfig
from personas.services import personas_delete
from stories.models import ScreenplayVersion, Story, StoryCast
from stories.services import story_delete
from tests.stories.test_api import client_for
from tests.stories.test_api_writer import SCREENPLAY

pytestmark = pytest.mark.django_db(transaction=True)


class Elsewhere(threading.Thread):
    """``work`` on another connection (another request), its result or its exception kept."""

    def __init__(self, work: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.work = work
        self.result: Any = None
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            self.result = self.work()
        except Exception as error:  # the test asserts what it was
            self.error = error
        finally:
            connections.close_all()

    def blocked_or_done(self) -> None:
        """Return once the work has finished or waits for a lock this connection holds."""
        if connection.vendor == "sqlite":
            return  # BEGIN IMMEDIATE: it cannot pass this connection's open write transaction
        while self.is_alive() and not _someone_waits_for_a_lock():
            time.sleep(0.005)


def _someone_waits_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"
        )
        return bool(cursor.fetchone()[0])


@pytest.fixture
def during_cast_insert(monkeypatch: Any) -> Iterator[Callable[[Callable[[], Any]], Elsewhere]]:
    """Start ``work`` elsewhere when the next save is about to insert its cast."""
    started: list[Elsewhere] = []
    manager = StoryCast.objects
    insert = manager.bulk_create

    def held_insert(*args: Any, **kwargs: Any) -> Any:
        for elsewhere in started:
            if not elsewhere.is_alive() and elsewhere.ident is None:
                elsewhere.start()
                elsewhere.blocked_or_done()
        return insert(*args, **kwargs)

    monkeypatch.setattr(manager, "bulk_create", held_insert)

    def schedule(work: Callable[[], Any]) -> Elsewhere:
        elsewhere = Elsewhere(work)
        started.append(elsewhere)
        return elsewhere

    yield schedule
    for elsewhere in started:
        if elsewhere.ident is not None:
            elsewhere.join()


@pytest.fixture
def story(writer: Any, persona_factory: Any) -> Story:
    persona_factory("hero")
    story = Story.objects.create(owner=writer, title="The Heist", plot="A crew robs a vault.")
    return story


def _cast_anew(content: dict[str, Any], persona: str) -> dict[str, Any]:
    content = copy.deepcopy(content)
    content["characters"][0]["persona"] = persona
    return content


def test_a_persona_deleted_while_a_version_casting_it_saves_is_refused_and_the_version_kept(
    writer: Any, story: Story, during_cast_insert: Any
) -> None:
    hero = PersonaConfig.objects.get(name="hero")
    deleting = during_cast_insert(lambda: personas_delete(personas=[hero], user=None))
    response = client_for(writer).post(
        f"/api/stories/{story.pk}/versions/", {"content": SCREENPLAY}, format="json"
    )
    deleting.join()
    assert response.status_code == 201, response.content
    assert [c["persona"] for c in client_for(writer).get(f"/api/stories/{story.pk}/").json()["cast"]] == [
        "hero"
    ]
    # The delete came second: it is refused because the persona is cast now, and nothing of it is lost.
    assert isinstance(deleting.error, ProtectedError)
    assert PersonaConfig.objects.filter(name="hero").exists()


def test_a_persona_deleted_before_the_save_reads_it_leaves_the_cast_and_the_version_is_saved(
    writer: Any, story: Story, persona_factory: Any, monkeypatch: Any
) -> None:
    # Deleted after the request checked the persona, before its save began: the version is saved, the
    # persona leaves the cast, as a persona deactivated since a version was written does.
    persona_factory("mentor")
    from stories import services

    create = services.screenplay_version_create

    def deleted_first(**kwargs: Any) -> Any:
        personas_delete(personas=PersonaConfig.objects.filter(name="mentor"), user=None)
        return create(**kwargs)

    monkeypatch.setattr(services, "screenplay_version_create", deleted_first)
    content = _cast_anew(SCREENPLAY, "mentor")
    response = client_for(writer).post(
        f"/api/stories/{story.pk}/versions/", {"content": content}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["content"] == content
    assert StoryCast.objects.filter(story=story).count() == 0


def test_a_story_deleted_while_a_version_of_it_saves_goes_with_that_version(
    writer: Any, story: Story, during_cast_insert: Any
) -> None:
    deleting = during_cast_insert(lambda: story_delete(story=Story.objects.get(pk=story.pk)))
    response = client_for(writer).post(
        f"/api/stories/{story.pk}/versions/", {"content": SCREENPLAY}, format="json"
    )
    deleting.join()
    assert response.status_code == 201, response.content
    # The delete came second and deleted the story with everything in it, the new version included.
    assert deleting.error is None
    assert not Story.objects.filter(pk=story.pk).exists()
    assert not ScreenplayVersion.objects.filter(story_id=story.pk).exists()
    assert not StoryCast.objects.filter(story_id=story.pk).exists()


def test_an_imported_story_deleted_before_the_answer_is_a_404_saying_so(
    writer: Any, monkeypatch: Any
) -> None:
    from stories import services

    imported = services.story_import

    def deleted_after(**kwargs: Any) -> Any:
        version = imported(**kwargs)
        story_delete(story=version.story)
        return version

    monkeypatch.setattr(services, "story_import", deleted_after)
    response = client_for(writer).post(
        "/api/stories/import/", {"fountain": "Title: Gone\n\nINT. ROOM - DAY\n\nA door.\n"}, format="json"
    )
    assert response.status_code == 404, response.content
    assert response.json()["message"].endswith(
        "was deleted after version 1 of it was saved, with that version"
    )
    assert not Story.objects.exists()


@pytest.mark.parametrize("how", ["delete page", "delete action"])
def test_a_story_deleted_in_the_admin_while_a_version_of_it_saves_goes_with_that_version(
    writer: Any, story: Story, during_cast_insert: Any, django_user_model: Any, how: str
) -> None:
    admin = django_user_model.objects.create_superuser("boss", password="pw-boss")
    staff = Client()
    staff.force_login(admin)
    if how == "delete page":
        deleting = during_cast_insert(
            lambda: staff.post(f"/admin/stories/story/{story.pk}/delete/", {"post": "yes"})
        )
    else:
        deleting = during_cast_insert(
            lambda: staff.post(
                "/admin/stories/story/",
                {"action": "delete_selected", "_selected_action": [story.pk], "post": "yes"},
            )
        )
    response = client_for(writer).post(
        f"/api/stories/{story.pk}/versions/", {"content": SCREENPLAY}, format="json"
    )
    deleting.join()
    assert response.status_code == 201, response.content
    # The admin's delete came second and deleted the story with everything in it, the new version
    # included: it was a 500 on PostgreSQL (the version was left pointing at the deleted story).
    assert deleting.error is None
    assert deleting.result.status_code == 302
    assert not Story.objects.filter(pk=story.pk).exists()
    assert not ScreenplayVersion.objects.filter(story_id=story.pk).exists()

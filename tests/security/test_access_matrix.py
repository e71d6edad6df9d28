"""Owner / other writer / editor / anonymous over every page and export (the REST routes are in
tests/stories/test_api.py): another user's story is a 404 whatever the interface."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from personas.services import EDITORS_GROUP
from stories.models import GenerationRun, ScreenplayVersion, Story

SCREENPLAY = {
    "title": "Private",
    "characters": [{"name": "ANA"}],
    "scenes": [
        {
            "heading": "INT. LAB - DAY",
            "elements": [{"type": "dialogue", "character": "ANA", "text": "Secret line."}],
        }
    ],
}
FORMATS = ["fountain", "fdx", "pdf", "json"]


@pytest.fixture
def story(writer: Any) -> Story:
    story = Story.objects.create(owner=writer, title="Private affairs", plot="A private plot.")
    run = GenerationRun.objects.create(
        user=writer, story=story, status="succeeded", model="offline", max_tokens=1024
    )
    ScreenplayVersion.objects.create(story=story, number=1, content=SCREENPLAY, model="offline", run=run)
    Story.objects.filter(pk=story.pk).update(latest_version_number=1)
    return story


@pytest.fixture
def editor(user_factory: Any) -> Any:
    editor = user_factory("ed", is_staff=True)
    editor.groups.add(Group.objects.get(name=EDITORS_GROUP))
    return editor


def _client(user: Any | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def test_the_owner_sees_the_story_page_and_downloads_every_format(writer: Any, story: Story) -> None:
    client = _client(writer)
    assert "Private affairs" in client.get(f"/stories/{story.pk}/").content.decode()
    assert "Private affairs" in client.get("/").content.decode()
    for fmt in FORMATS:
        response = client.get(f"/api/stories/{story.pk}/versions/1/export/?format={fmt}")
        assert response.status_code == 200, fmt
        assert "attachment" in response["Content-Disposition"]


@pytest.mark.parametrize("who", ["other_writer", "editor"])
def test_another_user_gets_404_on_the_story_page_and_every_export(
    request: pytest.FixtureRequest, who: str, story: Story
) -> None:
    client = _client(request.getfixturevalue(who))
    assert client.get(f"/stories/{story.pk}/").status_code == 404
    for fmt in FORMATS:
        assert client.get(f"/api/stories/{story.pk}/versions/1/export/?format={fmt}").status_code == 404, fmt
    for url in ("/", "/runs/"):
        page = client.get(url)
        assert page.status_code == 200
        assert "Private affairs" not in page.content.decode()


@pytest.mark.parametrize("url", ["/", "/stories/new/", "/stories/{id}/", "/runs/", "/account/"])
def test_anonymous_visitors_are_sent_to_the_login_page(url: str, story: Story) -> None:
    response = _client(None).get(url.format(id=story.pk))
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize("fmt", FORMATS)
def test_anonymous_exports_are_refused(fmt: str, story: Story) -> None:
    response = _client(None).get(f"/api/stories/{story.pk}/versions/1/export/?format={fmt}")
    assert response.status_code == 401
    assert b"Secret line" not in response.content


def test_an_editor_manages_personas_but_not_stories_runs_or_users_in_the_admin(
    editor: Any, story: Story
) -> None:
    client = _client(editor)
    assert client.get("/admin/personas/personaconfig/").status_code == 200
    for url in (
        "/admin/stories/story/",
        f"/admin/stories/story/{story.pk}/change/",
        "/admin/stories/generationrun/",
        "/admin/auth/user/",
        "/admin/authtoken/tokenproxy/",
    ):
        assert client.get(url).status_code == 403, url


def test_a_staff_writer_sees_only_their_own_stories_in_the_admin(user_factory: Any, story: Story) -> None:
    staff = user_factory("staffer", is_staff=True)
    staff.user_permissions.add(*_story_view_permissions())
    client = _client(staff)
    listing = client.get("/admin/stories/story/")
    assert listing.status_code == 200
    assert "Private affairs" not in listing.content.decode()
    assert client.get(f"/admin/stories/story/{story.pk}/change/").status_code == 302  # "doesn't exist"


def _story_view_permissions() -> list[Any]:
    from django.contrib.auth.models import Permission

    return list(Permission.objects.filter(codename__in=["view_story", "view_generationrun"]))

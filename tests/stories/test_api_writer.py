"""The writer's own versions through the API: edit (JSON or Fountain), conflicts, restore, diff, stats, import."""

from __future__ import annotations

import copy
import json
import unicodedata
from typing import Any
from urllib.parse import urlencode

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from personas.models import PersonaConfig
from stories import services
from stories.errors import GenerationError
from stories.exports import ExportMeta
from stories.exports.fdx import fdx_from_screenplay
from stories.exports.fountain import fountain_from_screenplay
from stories.generation.validation import screenplay_validate
from stories.models import ScreenplayVersion, Story, StoryCast
from stories.services import screenplay_version_write
from tests.stories.test_api import client_for, etag_revalidated

SCREENPLAY: dict[str, Any] = {
    "title": "The Heist",
    "logline": "A crew robs a vault.",
    "characters": [{"name": "MAX", "persona": "hero", "description": "The planner."}],
    "scenes": [
        {
            "heading": "INT. VAULT - NIGHT",
            "elements": [
                {"type": "action", "text": "The door swings open."},
                {"type": "dialogue", "character": "MAX", "text": "Now."},
            ],
        },
        {"heading": "EXT. ROOF - DAWN", "elements": [{"type": "action", "text": "Sirens."}]},
    ],
}


@pytest.fixture
def story(writer: Any, persona_factory: Any) -> Story:
    story = Story.objects.create(
        owner=writer, title="The Heist", plot="A crew robs a vault.", latest_version_number=1
    )
    StoryCast.objects.create(story=story, persona=persona_factory("hero"), character_name="MAX", order=0)
    ScreenplayVersion.objects.create(
        story=story, number=1, content=SCREENPLAY, model="offline", max_tokens=1024
    )
    return story


def _fountain(content: dict[str, Any]) -> str:
    return fountain_from_screenplay(content=content, meta=ExportMeta(title=content["title"]))


def _versions(story: Story) -> str:
    return f"/api/stories/{story.pk}/versions/"


def test_a_fountain_edit_of_one_line_is_a_new_version_written_by_the_writer(
    writer: Any, story: Story
) -> None:
    text = _fountain(SCREENPLAY).replace("Now.", "Not yet.")
    response = client_for(writer).post(_versions(story), {"fountain": text, "base_version": 1}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["number"], body["origin"], body["based_on"], body["model"], body["run"]) == (
        2,
        "edited",
        1,
        "",
        None,
    )
    assert body["content"]["scenes"][0]["elements"][1] == {
        "type": "dialogue",
        "character": "MAX",
        "text": "Not yet.",
    }
    # Fountain has no character list: the edited version keeps the persona and description.
    assert body["content"]["characters"] == SCREENPLAY["characters"]
    assert body["content"]["logline"] == SCREENPLAY["logline"]
    assert list(story.cast.values_list("character_name", flat=True)) == ["MAX"]


@pytest.mark.parametrize(
    ("title_page", "title", "logline"),
    [
        # No title page at all (a writer pasting the script alone): the edited version's title and logline.
        ("", "The Heist", "A crew robs a vault."),
        # A title page without a title keeps the title; without a logline, it removed the logline.
        ("Author: Ann\n\n", "The Heist", None),
        ("Title: Vault Two\n\n", "Vault Two", None),
        ("Title: Vault Two\nLogline: Again.\n\n", "Vault Two", "Again."),
    ],
)
def test_a_fountain_edit_keeps_the_title_its_text_does_not_give(
    writer: Any, story: Story, title_page: str, title: str, logline: str | None
) -> None:
    body = _fountain(SCREENPLAY)
    text = title_page + body[body.index("INT. VAULT") :]
    page = Client()
    page.force_login(writer)
    preview = page.post(
        f"/stories/{story.pk}/preview/",
        json.dumps({"fountain": text, "base_version": 1}),
        content_type="application/json",
    )
    assert preview.status_code == 200, preview.json()
    response = client_for(writer).post(_versions(story), {"fountain": text, "base_version": 1}, format="json")
    assert response.status_code == 201, response.json()
    content = response.json()["content"]
    # It used to be saved as "Untitled", its logline gone.
    assert (content["title"], content.get("logline")) == (title, logline)
    assert title in preview.json()["html"]


@pytest.mark.parametrize("name", ["MAX ", "  MAX", "MAX\u200b", "MAX  POWER"])
def test_an_unchanged_fountain_edit_keeps_a_persona_whose_name_fountain_writes_otherwise(
    writer: Any, story: Story, name: str
) -> None:
    # A model may write a name with spaces or a zero-width space that a Fountain cue cannot hold: the
    # editor's text reads it back as "MAX", which used to be a new speaker without the persona, the
    # persona left cast to a name that no longer speaks.
    content = copy.deepcopy(SCREENPLAY)
    content["characters"][0]["name"] = name
    content["scenes"][0]["elements"][1]["character"] = name
    screenplay_version_write(user_id=writer.pk, story=story, content=content, base_version=1)
    response = client_for(writer).post(
        _versions(story), {"fountain": _fountain(content), "base_version": 2}, format="json"
    )
    assert response.status_code == 201, response.json()
    saved = response.json()["content"]
    read = " ".join(name.replace("\u200b", "").split())
    assert saved["characters"] == [{"name": read, "persona": "hero", "description": "The planner."}]
    assert saved["scenes"][0]["elements"][1]["character"] == read
    assert list(story.cast.values_list("character_name", flat=True)) == [read]


def test_a_new_speaker_without_a_persona_is_allowed(writer: Any, story: Story) -> None:
    text = _fountain(SCREENPLAY) + "\nJUNE\nWho's there?\n"
    response = client_for(writer).post(_versions(story), {"fountain": text}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["content"]["characters"][1] == {"name": "JUNE"}


def test_a_json_edit_must_give_every_line_to_a_character(writer: Any, story: Story) -> None:
    content = copy.deepcopy(SCREENPLAY)
    content["scenes"][1]["elements"].append({"type": "dialogue", "character": "GHOST", "text": "Boo."})
    response = client_for(writer).post(_versions(story), {"content": content}, format="json")
    assert response.status_code == 400
    assert "GHOST" in response.json()["message"]
    assert story.versions.count() == 1


def test_a_json_edit_has_the_scene_bound_of_a_fountain_one(writer: Any, story: Story, settings: Any) -> None:
    settings.STORY_IMPORT_MAX_SCENES = 3
    content = copy.deepcopy(SCREENPLAY)
    content["scenes"] = [copy.deepcopy(SCREENPLAY["scenes"][0]) for _ in range(4)]
    response = client_for(writer).post(_versions(story), {"content": content}, format="json")
    assert (response.status_code, response.json()["message"]) == (
        400,
        "more than 3 scenes (STORY_IMPORT_MAX_SCENES)",
    )
    content["scenes"] = content["scenes"][:3]
    assert client_for(writer).post(_versions(story), {"content": content}, format="json").status_code == 201


@pytest.mark.parametrize(
    ("element", "said"),
    [
        (
            {"type": "action", "text": "x" * 100_000},
            "at scenes/0/elements/0/text: is 100000 characters long; the limit is 5000",
        ),
        (
            {"type": "dialogue", "character": "MAX", "text": "Now.", "parenthetical": "p" * 300},
            "at scenes/0/elements/0/parenthetical: is 300 characters long; the limit is 200",
        ),
        ({"type": "transition", "text": ""}, 'at scenes/0/elements/0/text: "" should be non-empty'),
        ({"type": "dialogue", "text": "Now."}, "at scenes/0/elements/0: 'character' is a required property"),
    ],
)
def test_a_json_edit_with_an_element_out_of_bounds_is_told_which_field_and_bound(
    writer: Any, story: Story, element: dict[str, Any], said: str
) -> None:
    # Was: "at scenes/0/elements/0: an object is not valid under any of the given schemas", for any
    # element of either kind (action or dialogue) that broke any of its bounds.
    content = copy.deepcopy(SCREENPLAY)
    content["scenes"][0]["elements"] = [element]
    response = client_for(writer).post(_versions(story), {"content": content}, format="json")
    assert response.status_code == 400
    assert response.json()["message"] == f"this is an invalid screenplay {said}"
    assert story.versions.count() == 1


def test_a_json_edit_listing_a_character_twice_is_refused(
    writer: Any, story: Story, persona_factory: Any
) -> None:
    # Two MAXes played by two personas were saved and both cast as MAX: whose lines were whose?
    persona_factory("villain")
    content = copy.deepcopy(SCREENPLAY)
    content["characters"].append({"name": "MAX", "persona": "villain"})
    response = client_for(writer).post(_versions(story), {"content": content}, format="json")
    assert response.status_code == 400
    assert response.json()["message"] == (
        "the character list has 'MAX' more than once; list each character once"
    )
    assert story.versions.count() == 1
    assert list(story.cast.values_list("character_name", "persona__name")) == [("MAX", "hero")]


def test_a_fountain_edit_of_a_version_listing_a_character_twice_keeps_the_first(
    writer: Any, story: Story
) -> None:
    # A model's version may list a name twice; the editor's text cannot say which one it means.
    content = copy.deepcopy(SCREENPLAY)
    content["characters"].append({"name": "MAX", "description": "A second one."})
    story.versions.filter(number=1).update(content=content)
    response = client_for(writer).post(
        _versions(story), {"fountain": _fountain(content), "base_version": 1}, format="json"
    )
    assert response.status_code == 201, response.json()
    assert response.json()["content"]["characters"] == SCREENPLAY["characters"]


@pytest.mark.parametrize("second", ["max", "Max", "mAx"])
def test_a_json_edit_listing_a_character_twice_in_other_capitals_is_refused(
    writer: Any, story: Story, second: str
) -> None:
    # "MAX" and "max" were saved as two characters, both in the list, each with its lines: the page
    # and every export print both cues as MAX.
    content = copy.deepcopy(SCREENPLAY)
    content["characters"].append({"name": second})
    content["scenes"][1]["elements"].append({"type": "dialogue", "character": second, "text": "Later."})
    response = client_for(writer).post(_versions(story), {"content": content}, format="json")
    assert response.status_code == 400
    assert response.json()["message"] == (
        f"the character list has 'MAX' and {second!r}, one name written two ways (capitals, accents); "
        "list each character once, under one spelling"
    )
    assert story.versions.count() == 1


def test_a_json_edit_listing_an_accented_name_composed_and_decomposed_is_refused(
    writer: Any, story: Story
) -> None:
    content = copy.deepcopy(SCREENPLAY)
    content["characters"] += [{"name": "REN\u00c9E"}, {"name": "RENE\u0301E"}]
    response = client_for(writer).post(_versions(story), {"content": content}, format="json")
    assert response.status_code == 400
    assert "one name written two ways" in response.json()["message"]


def test_a_fountain_edit_of_a_version_listing_a_name_in_two_capitals_keeps_the_first(
    writer: Any, story: Story
) -> None:
    # A model's version may; its edit keeps the first spelling (with its persona) and can be saved.
    content = copy.deepcopy(SCREENPLAY)
    content["characters"].append({"name": "Max", "description": "A second one."})
    story.versions.filter(number=1).update(content=content)
    response = client_for(writer).post(
        _versions(story), {"fountain": _fountain(content), "base_version": 1}, format="json"
    )
    assert response.status_code == 201, response.json()
    assert response.json()["content"]["characters"] == SCREENPLAY["characters"]


def test_a_json_edit_may_not_cast_an_unknown_persona(writer: Any, story: Story) -> None:
    content = copy.deepcopy(SCREENPLAY)
    content["characters"][0]["persona"] = "nobody"
    response = client_for(writer).post(_versions(story), {"content": content}, format="json")
    assert response.status_code == 400
    assert "not one of the active personas" in response.json()["message"]


def test_a_save_based_on_an_old_version_is_a_409_and_saves_nothing(writer: Any, story: Story) -> None:
    client = client_for(writer)
    assert (
        client.post(_versions(story), {"content": SCREENPLAY, "base_version": 1}, format="json").status_code
        == 201
    )
    stale = client.post(_versions(story), {"content": SCREENPLAY, "base_version": 1}, format="json")
    assert stale.status_code == 409
    assert stale.json()["code"] == "version_conflict"
    story.refresh_from_db()
    assert (story.versions.count(), story.latest_version_number) == (2, 2)
    # Without base_version the writer saves anyway.
    assert client.post(_versions(story), {"content": SCREENPLAY}, format="json").json()["number"] == 3
    # A version the story never had is not a conflict: it is not there.
    beyond = client.post(_versions(story), {"content": SCREENPLAY, "base_version": 99}, format="json")
    assert (beyond.status_code, beyond.json()["message"]) == (400, "the story has no version 99")
    assert story.versions.count() == 3


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        # DRF's fields read 1 and "yes" as true, "1" and 1.0 as 1: a client's wrong type passed unnoticed,
        # and "save_anyway": 1 saved over a newer version, where the generation's `wait` must be a boolean.
        ({"save_anyway": 1}, "save_anyway", "Must be a JSON boolean (true or false)."),
        ({"save_anyway": "yes"}, "save_anyway", "Must be a JSON boolean (true or false)."),
        ({"save_anyway": "false"}, "save_anyway", "Must be a JSON boolean (true or false)."),
        ({"base_version": "1"}, "base_version", "Must be a JSON integer."),
        ({"base_version": 1.0}, "base_version", "Must be a JSON integer."),
    ],
)
def test_a_json_save_takes_a_boolean_and_an_integer_of_their_json_types_only(
    writer: Any, story: Story, fields: dict[str, Any], field: str, message: str
) -> None:
    client = client_for(writer)
    assert client.post(_versions(story), {"content": SCREENPLAY}, format="json").status_code == 201
    response = client.post(
        _versions(story), {"content": SCREENPLAY, "base_version": 1, **fields}, format="json"
    )
    assert (response.status_code, response.json()) == (400, {field: [message]})
    assert story.versions.count() == 2
    # A form carries text: there "true" and "1" are what they say.
    form = {"fountain": _fountain(SCREENPLAY), "base_version": "1", "save_anyway": "true"}
    assert client.post(_versions(story), form, format="multipart").status_code == 201


def test_an_edit_saved_anyway_over_a_newer_version_keeps_the_characters_of_the_version_it_edits(
    writer: Any, story: Story, persona_factory: Any
) -> None:
    # The editor's "Save as a new version anyway": version 2 (another tab, a regeneration) has another
    # cast; the edit of version 1 must keep MAX's persona and description, as its preview showed.
    persona_factory("rival")
    client = client_for(writer)
    theirs = {
        "title": "The Heist",
        "characters": [{"name": "RIVAL", "persona": "rival"}],
        "scenes": [
            {
                "heading": "INT. BANK - DAY",
                "elements": [{"type": "dialogue", "character": "RIVAL", "text": "Mine."}],
            }
        ],
    }
    assert client.post(_versions(story), {"content": theirs}, format="json").status_code == 201
    text = _fountain(SCREENPLAY).replace("Now.", "Not yet.")
    body = {"fountain": text, "base_version": 1, "save_anyway": True}
    response = client.post(_versions(story), body, format="json")
    assert response.status_code == 201, response.json()
    saved = response.json()
    assert (saved["number"], saved["based_on"]) == (3, 1)
    assert saved["content"]["characters"] == SCREENPLAY["characters"]
    assert list(story.cast.values_list("character_name", flat=True)) == ["MAX"]
    # Saving anyway still needs a version the story has.
    beyond = client.post(_versions(story), {**body, "base_version": 99}, format="json")
    assert (beyond.status_code, beyond.json()["message"]) == (400, "the story has no version 99")


def test_an_edit_keeps_a_persona_deactivated_since_the_version_it_edits_out_of_the_cast(
    writer: Any, story: Story, persona_factory: Any
) -> None:
    # The editor carries the cast of the version edited over: the writer could not save at all once an
    # editor had deactivated one of its personas (a restore already kept it).
    PersonaConfig.objects.filter(name="hero").update(is_active=False)
    text = _fountain(SCREENPLAY).replace("Now.", "Not yet.")
    response = client_for(writer).post(_versions(story), {"fountain": text, "base_version": 1}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["content"]["characters"][0]["persona"] == "hero"
    assert not story.cast.exists()
    # Naming an inactive persona anew is still refused.
    persona_factory("retired")
    PersonaConfig.objects.filter(name="retired").update(is_active=False)
    content = copy.deepcopy(SCREENPLAY)
    content["characters"].append({"name": "JUNE", "persona": "retired"})
    refused = client_for(writer).post(_versions(story), {"content": content}, format="json")
    assert refused.status_code == 400
    assert "'retired', which is not one of the active personas" in refused.json()["message"]


def test_fountain_that_cannot_be_read_names_the_line(writer: Any, story: Story) -> None:
    text = "Title: X\n\nINT. ROOM - DAY\n\n" + "A" * 10 + "\n\n" + ("word " * 1200) + "\n"
    response = client_for(writer).post(_versions(story), {"fountain": text}, format="json")
    assert response.status_code == 400
    assert response.json()["message"].startswith("line 7: this action is longer than 5000 characters")
    no_heading = client_for(writer).post(_versions(story), {"fountain": "Just a note.\n"}, format="json")
    assert "no scene heading" in no_heading.json()["message"]


def test_a_fountain_edit_within_the_import_limit_is_read_whatever_its_line_breaks(
    writer: Any, story: Story, settings: Any
) -> None:
    # In JSON a line break is two bytes: a text of short lines within STORY_IMPORT_MAX_BYTES (990 KB) made
    # a body past API_MAX_BODY_BYTES (1 MiB), and the editor's save was a 413 naming that limit instead.
    text = "Title: X\n\nINT. ROOM - DAY\n\n" + "a\n" * ((settings.STORY_IMPORT_MAX_BYTES - 100) // 2)
    assert len(text.encode()) <= settings.STORY_IMPORT_MAX_BYTES
    response = client_for(writer).post(_versions(story), {"fountain": text}, format="json")
    assert response.status_code == 400, response.json()
    assert response.json()["message"].startswith("line 5: this action is longer than 5000 characters")


def test_exactly_one_of_content_or_fountain(writer: Any, story: Story) -> None:
    both = client_for(writer).post(_versions(story), {"content": SCREENPLAY, "fountain": "x"}, format="json")
    assert both.status_code == 400
    assert client_for(writer).post(_versions(story), {}, format="json").status_code == 400


@pytest.mark.parametrize(
    "path", ["versions/", "versions/1/restore/", "diff/?from=1&to=1", "versions/1/stats/"]
)
def test_only_the_owner_reaches_the_writer_endpoints(other_writer: Any, story: Story, path: str) -> None:
    url = f"/api/stories/{story.pk}/{path}"
    send = (
        (lambda c: c.get(url))
        if "diff" in path or "stats" in path
        else (lambda c: c.post(url, {"content": SCREENPLAY}, format="json"))
    )
    assert send(client_for(other_writer)).status_code == 404
    assert send(client_for(None)).status_code == 401
    assert story.versions.count() == 1


def test_restore_makes_a_new_version_with_the_old_content(writer: Any, story: Story) -> None:
    client = client_for(writer)
    edited = copy.deepcopy(SCREENPLAY)
    edited["scenes"].pop()
    client.post(_versions(story), {"content": edited}, format="json")
    response = client.post(f"/api/stories/{story.pk}/versions/1/restore/")
    assert response.status_code == 201
    body = response.json()
    assert (body["number"], body["origin"], body["based_on"]) == (3, "restored", 1)
    assert body["content"] == SCREENPLAY
    assert client.post(f"/api/stories/{story.pk}/versions/9/restore/").status_code == 404


def test_a_version_casting_a_persona_deleted_since_is_restored_on_the_api_and_the_page(
    writer: Any, story: Story
) -> None:
    # The version's content is the writer's: it comes back as it was, naming the persona; the cast
    # row cannot (the persona's row is gone), so the restored version casts nobody for that part.
    client = client_for(writer)
    uncast = copy.deepcopy(SCREENPLAY)
    uncast["characters"][0]["persona"] = None
    assert client.post(_versions(story), {"content": uncast}, format="json").status_code == 201
    assert not story.cast.exists()  # version 2 cast nobody: the persona may now be deleted
    PersonaConfig.objects.filter(name="hero").delete()
    response = client.post(f"/api/stories/{story.pk}/versions/1/restore/")
    assert response.status_code == 201, response.json()
    assert response.json()["content"] == SCREENPLAY
    page = Client()
    page.force_login(writer)
    restored = page.post(f"/stories/{story.pk}/versions/1/restore/", follow=True)
    assert restored.status_code == 200
    assert "Version 1 restored: this is version 4." in restored.content.decode()
    assert story.versions.get(number=4).content == SCREENPLAY
    assert not story.cast.exists()


@pytest.fixture
def deleted_just_before_the_save(monkeypatch: Any) -> None:
    """Another tab or request deletes the story after the request found it, just before its save."""
    save = services.screenplay_version_create

    def deleted_first(*, user_id: int, draft: Any, **kwargs: Any) -> Any:
        story = Story.objects.filter(pk=draft.story_id).first()
        if story is not None:
            services.story_delete(story=story)
        return save(user_id=user_id, draft=draft, **kwargs)

    monkeypatch.setattr(services, "screenplay_version_create", deleted_first)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("versions/", {"content": SCREENPLAY}),
        ("versions/", {"fountain": _fountain(SCREENPLAY), "base_version": 1}),
        ("versions/1/restore/", None),
    ],
    ids=["json", "fountain", "restore"],
)
def test_a_story_deleted_just_before_a_save_is_a_404_as_a_missing_story_is(
    writer: Any, other_writer: Any, story: Story, deleted_just_before_the_save: None, path: str, body: Any
) -> None:
    # It was a 403 "forbidden: that story does not exist or is not yours", which the schema does not
    # list for these endpoints and which says the story exists.
    url = f"/api/stories/{story.pk}/{path}"
    theirs = client_for(other_writer).post(url, body, format="json")
    response = client_for(writer).post(url, body, format="json")
    assert response.status_code == 404
    assert response.json() == {"detail": f"No story {story.pk} among yours."}
    # The same answer as a moment later, and as another writer gets.
    later = client_for(writer).post(url, body, format="json")
    assert (later.status_code, later.json()) == (theirs.status_code, theirs.json()) == (404, response.json())
    assert not Story.objects.exists() and not ScreenplayVersion.objects.exists()


def test_a_story_deleted_just_before_a_restore_from_its_page_is_the_sites_404(
    writer: Any, story: Story, deleted_just_before_the_save: None
) -> None:
    client = Client()
    client.force_login(writer)
    response = client.post(f"/stories/{story.pk}/versions/1/restore/")
    assert response.status_code == 404 and "Not found" in response.content.decode()
    assert not Story.objects.exists()


def test_a_story_deleted_just_before_a_restore_reads_its_version_is_a_404(
    writer: Any, story: Story, monkeypatch: Any
) -> None:
    # A moment earlier than the save: the restore found no version to copy and answered 400
    # "the story has no version 1", of a story that had it until it was deleted.
    find = services.story_version_find

    def deleted_first(*, story: Story, number: int) -> Any:
        services.story_delete(story=Story.objects.get(pk=story.pk))  # another request's copy of it
        return find(story=story, number=number)

    monkeypatch.setattr(services, "story_version_find", deleted_first)
    response = client_for(writer).post(f"/api/stories/{story.pk}/versions/1/restore/")
    assert (response.status_code, response.json()) == (404, {"detail": f"No story {story.pk} among yours."})
    assert not Story.objects.exists()


def test_diff_pairs_scenes_and_marks_the_changed_line(writer: Any, story: Story) -> None:
    client = client_for(writer)
    text = _fountain(SCREENPLAY).replace("Now.", "Not yet.")
    client.post(_versions(story), {"fountain": text}, format="json")
    body = client.get(f"/api/stories/{story.pk}/diff/?from=1&to=2").json()
    assert [s["status"] for s in body["scenes"]] == ["changed", "same"]
    changes = [line for line in body["scenes"][0]["lines"] if line["op"] != "equal"]
    assert changes == [{"op": "delete", "text": "MAX: Now."}, {"op": "insert", "text": "MAX: Not yet."}]
    assert client.get(f"/api/stories/{story.pk}/diff/?from=1").status_code == 400
    assert client.get(f"/api/stories/{story.pk}/diff/?from=1&to=7").status_code == 404


def test_the_diff_has_an_etag_of_the_two_versions_it_compares(writer: Any, story: Story) -> None:
    # Was: no ETag, If-None-Match ignored: a client asking for the same diff again got it whole.
    client = client_for(writer)
    text = _fountain(SCREENPLAY).replace("Now.", "Not yet.")
    client.post(_versions(story), {"fountain": text}, format="json")
    forward = etag_revalidated(client, f"/api/stories/{story.pk}/diff/?from=1&to=2")
    backward = etag_revalidated(client, f"/api/stories/{story.pk}/diff/?from=2&to=1")
    client.post(_versions(story), {"fountain": text.replace("Sirens.", "Silence.")}, format="json")
    other = etag_revalidated(client, f"/api/stories/{story.pk}/diff/?from=1&to=3")
    assert len({forward, backward, other}) == 3
    # An error stands for no diff: no ETag, whatever If-None-Match says.
    for url in ("diff/?from=1", "diff/?from=1&to=7"):
        refused = client.get(f"/api/stories/{story.pk}/{url}", HTTP_IF_NONE_MATCH="*")
        assert refused.status_code in (400, 404) and "ETag" not in refused


def test_stats_count_pages_scenes_and_each_characters_lines(writer: Any, story: Story) -> None:
    body = client_for(writer).get(f"/api/stories/{story.pk}/versions/1/stats/").json()
    assert body["scenes"] == 2
    assert body["characters"] == [{"name": "MAX", "lines": 1, "words": 1, "scenes": 1}]
    assert 0 < body["pages"] < 1


def test_stats_have_an_etag_of_the_version_they_count(writer: Any, story: Story) -> None:
    # Was: no ETag, If-None-Match ignored.
    client = client_for(writer)
    first = etag_revalidated(client, f"/api/stories/{story.pk}/versions/1/stats/")
    text = _fountain(SCREENPLAY).replace("Now.", "Not yet, not here.")
    client.post(_versions(story), {"fountain": text}, format="json")
    assert etag_revalidated(client, f"/api/stories/{story.pk}/versions/2/stats/") != first
    refused = client.get(f"/api/stories/{story.pk}/versions/7/stats/", HTTP_IF_NONE_MATCH=first)
    assert refused.status_code == 404 and "ETag" not in refused


def test_import_fountain_creates_a_story_with_version_1_and_persona_matches(
    writer: Any, persona_factory: Any
) -> None:
    persona_factory("max-payne", display_name="Max")
    retired = persona_factory("june", display_name="June")
    retired.is_active = False
    retired.save()
    text = _fountain(SCREENPLAY) + "\nJUNE\nWho's there?\n"
    response = client_for(writer).post("/api/stories/import/", {"fountain": text}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["story"]["title"], body["story"]["plot"]) == ("The Heist", "A crew robs a vault.")
    assert (body["version"]["number"], body["version"]["origin"]) == (1, "imported")
    assert body["matches"] == [
        {"character": "MAX", "persona": "max-payne", "display_name": "Max"},
        {"character": "JUNE", "persona": None, "display_name": None},
    ]
    assert body["story"]["cast"] == []


def test_an_imported_title_with_nothing_visible_makes_an_untitled_story(writer: Any) -> None:
    # The title page's title became the story's, and the story list's link to it had no text.
    text = "Title: \u200f\u202e\u2069\n\nINT. A\n\nHi.\n"
    imported = client_for(writer).post("/api/stories/import/", {"fountain": text}, format="json")
    assert imported.status_code == 201, imported.json()
    assert imported.json()["story"]["title"] == "Untitled"


def test_pasted_fountain_with_a_byte_order_mark_is_read_as_a_file_is(writer: Any, story: Story) -> None:
    # An uploaded file is decoded without its mark; pasted text kept it, and "\ufeffTitle" was no
    # title page key: the title page was lost ("Untitled") and its lines read as the script.
    text = "\ufeffTitle: The Vault\n\nINT. A\n\nHi.\n"
    imported = client_for(writer).post("/api/stories/import/", {"fountain": text}, format="json")
    assert imported.status_code == 201, imported.json()
    assert imported.json()["story"]["title"] == "The Vault"
    upload = SimpleUploadedFile("vault.fountain", text.encode())
    from_file = client_for(writer).post("/api/stories/import/", {"file": upload}, format="multipart")
    assert imported.json()["version"]["content"] == from_file.json()["version"]["content"]
    saved = client_for(writer).post(_versions(story), {"fountain": text, "base_version": 1}, format="json")
    assert saved.status_code == 201, saved.json()
    assert saved.json()["content"]["title"] == "The Vault"
    assert [s["heading"] for s in saved.json()["content"]["scenes"]] == ["INT. A"]


def test_import_with_a_cast_casts_version_1(writer: Any, persona_factory: Any) -> None:
    persona_factory("max-payne", display_name="Max")
    upload = SimpleUploadedFile(
        "heist.fdx", fdx_from_screenplay(content=SCREENPLAY, meta=ExportMeta(title="The Heist"))
    )
    story_response = client_for(writer).post("/api/stories/import/", {"file": upload}, format="multipart")
    assert story_response.status_code == 201, story_response.json()
    assert story_response.json()["version"]["content"]["scenes"] == SCREENPLAY["scenes"]
    json_import = client_for(writer).post(
        "/api/stories/import/",
        {"fountain": _fountain(SCREENPLAY), "cast": {"MAX": "max-payne"}},
        format="json",
    )
    assert json_import.json()["version"]["content"]["characters"][0]["persona"] == "max-payne"
    assert json_import.json()["story"]["cast"][0]["persona"] == "max-payne"
    # A multipart form sends the cast as one JSON field (the docs' form) or DRF's one field per name.
    for cast in ({"cast": json.dumps({"MAX": "max-payne"})}, {"cast.MAX": "max-payne"}):
        upload = SimpleUploadedFile("heist.fountain", _fountain(SCREENPLAY).encode())
        form = client_for(writer).post("/api/stories/import/", {"file": upload, **cast}, format="multipart")
        assert form.status_code == 201, form.json()
        assert form.json()["story"]["cast"][0]["persona"] == "max-payne"


@pytest.mark.parametrize(
    ("cast", "message"),
    [
        ('{"MAX": ', "Send a JSON object"),
        ('["MAX"]', "Expected a dictionary"),
        ('{"MAX": "nobody-of-that-name"}', "nobody-of-that-name"),
        ('{"BOB": "max-payne"}', "the cast names 'BOB', not a character of the screenplay"),
    ],
)
def test_an_import_cast_that_cannot_be_applied_is_a_400(
    writer: Any, persona_factory: Any, cast: str, message: str
) -> None:
    persona_factory("max-payne", display_name="Max")
    upload = SimpleUploadedFile("heist.fountain", _fountain(SCREENPLAY).encode())
    response = client_for(writer).post(
        "/api/stories/import/", {"file": upload, "cast": cast}, format="multipart"
    )
    assert response.status_code == 400
    assert message in json.dumps(response.json())
    assert not Story.objects.exists()
    # In a JSON body the cast is an object: a string holding JSON is not read as one.
    body = {"fountain": _fountain(SCREENPLAY), "cast": '{"MAX": "max-payne"}'}
    assert client_for(writer).post("/api/stories/import/", body, format="json").status_code == 400


@pytest.mark.parametrize("name", ["\\ud800", "MAX\\u0000"])
def test_an_import_cast_naming_a_character_with_text_that_cannot_be_stored_is_a_400(
    writer: Any, persona_factory: Any, name: str
) -> None:
    # The cast's error was keyed by the name sent: a lone surrogate in it made the answer impossible to
    # encode, a 500 (daphne's bare "Exception inside application" under DEBUG).
    persona_factory("max-payne", display_name="Max")
    # Raw JSON text: a lone surrogate travels only as an escape.
    body = '{"fountain": ' + json.dumps(_fountain(SCREENPLAY)) + ', "cast": {"' + name + '": "\\ud800"}}'
    response = client_for(writer).post("/api/stories/import/", body, content_type="application/json")
    assert response.status_code == 400
    assert "a name in the cast contains" in json.dumps(response.json())
    assert not Story.objects.exists()


@pytest.mark.parametrize("body", [{"fountain": 5}, {"fountain": "x", "cast": {"MAX": 7}}])
def test_an_import_with_a_number_for_text_is_a_400_not_the_number_read_as_text(
    writer: Any, body: dict[str, Any]
) -> None:
    if body["fountain"] == "x":
        body["fountain"] = _fountain(SCREENPLAY)
    response = client_for(writer).post("/api/stories/import/", body, format="json")
    assert response.status_code == 400
    assert "Not a valid string" in json.dumps(response.json())
    assert not Story.objects.exists()


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("notes.pdf", b"%PDF-1.4", "not a file we can import"),
        ("a.fdx", b"<html></html>", "not a Final Draft document"),
        ("a.fdx", b"<FinalDraft><Content>", "not well-formed XML"),
        ("a.fdx", b'<!DOCTYPE x [<!ENTITY a "aaaa">]><FinalDraft>&a;</FinalDraft>', "DTD or entities"),
        ("a.fountain", b"INT. CAF\xc9 - DAY\n", "not UTF-8 text (byte 9 cannot be read); save it as UTF-8"),
        (
            "a.fountain",
            b"\xff\xfeI\x00N\x00\x00\xdc",
            "not UTF-16 text (byte 7 cannot be read); save it as UTF-8",
        ),
        ("a.fountain", b"Dear diary,\n\ntoday nothing happened.\n", "no scene heading"),
        # Was: "line 1: a character name contains a NUL (\u0000) character" for English text saved
        # as UTF-16 without a byte-order mark, which reads as UTF-8 with a NUL after every letter.
        (
            "a.fountain",
            "INT. HOUSE - DAY\n\nRain.\n".encode("utf-16-le"),
            "not UTF-8 text (byte 2 is a NUL, as in UTF-16 without a byte-order mark); save it as UTF-8",
        ),
        (
            "a.fountain",
            "INT. HOUSE - DAY\n\nRain.\n".encode("utf-16-be"),
            "not UTF-8 text (byte 1 is a NUL, as in UTF-16 without a byte-order mark); save it as UTF-8",
        ),
    ],
)
def test_a_file_that_is_not_a_screenplay_is_a_clear_400(
    writer: Any, name: str, data: bytes, message: str
) -> None:
    upload = SimpleUploadedFile(name, data)
    response = client_for(writer).post("/api/stories/import/", {"file": upload}, format="multipart")
    assert response.status_code == 400
    assert message in response.json()["message"]
    assert not Story.objects.exists()


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-8-sig", "utf-32"])
def test_a_fountain_file_whose_byte_order_mark_says_utf_16_is_imported(writer: Any, encoding: str) -> None:
    # Was: "the file is not UTF-8 text (byte 0 cannot be read)" for a file Windows saved as "Unicode".
    text = "Title: Café\n\nINT. CAFÉ - DAY\n\nZOË\nUn café, s'il vous plaît.\n"
    data = text.encode(encoding)
    if encoding in ("utf-16-le", "utf-16-be"):
        data = "\ufeff".encode(encoding) + data  # these codecs write no mark of their own
    upload = SimpleUploadedFile("cafe.fountain", data)
    response = client_for(writer).post("/api/stories/import/", {"file": upload}, format="multipart")
    assert response.status_code == 201, response.json()
    version = Story.objects.get().versions.get()
    assert version.content["title"] == "Café"
    assert version.content["scenes"][0]["heading"] == "INT. CAFÉ - DAY"
    assert version.content["characters"] == [{"name": "ZOË"}]


def test_import_limits_size_and_scenes(writer: Any, story: Story, settings: Any) -> None:
    settings.STORY_IMPORT_MAX_SCENES = 2
    text = "".join(f"INT. ROOM {n} - DAY\n\nAction.\n\n" for n in range(3))
    response = client_for(writer).post("/api/stories/import/", {"fountain": text}, format="json")
    assert response.status_code == 400
    assert response.json()["message"] == "line 9: more than 2 scenes (STORY_IMPORT_MAX_SCENES)"
    settings.STORY_IMPORT_MAX_BYTES = 10_000
    upload = SimpleUploadedFile("big.fountain", b"INT. A - DAY\n\n" + b"x" * 10_001)
    response = client_for(writer).post("/api/stories/import/", {"file": upload}, format="multipart")
    assert response.status_code == 400
    assert (
        response.json()["message"]
        == "the file is 10015 bytes; the limit is 10000 bytes (STORY_IMPORT_MAX_BYTES)"
    )
    # Text is counted in the same bytes, and said in the same words (as the field's error): the field's
    # own check counted characters ("Ensure this field has no more than 10000 characters"), so 9,000 "é"
    # (18,000 bytes) went on to be refused in other words, and 10,001 ASCII characters in these.
    for text, size in (
        ("INT. A - DAY\n\n" + "é" * 9_000, 18_014),
        ("INT. A - DAY\n\n" + "x" * 10_001, 10_015),
    ):
        for url, body in (
            ("/api/stories/import/", {"fountain": text}),
            (f"/api/stories/{story.pk}/versions/", {"fountain": text, "base_version": 1}),
        ):
            response = client_for(writer).post(url, body, format="json")
            assert response.status_code == 400
            said = f"the text is {size} bytes; the limit is 10000 bytes (STORY_IMPORT_MAX_BYTES)"
            assert response.json() == {"fountain": [said]}, url


def _speakers(count: int) -> str:
    return "INT. CROWD - DAY\n\n" + "".join(f"PERSON {n}\nHi.\n\n" for n in range(count))


def test_a_file_with_more_speakers_than_the_limit_is_refused_on_every_import_path(
    writer: Any, story: Story, settings: Any
) -> None:
    # Was: 50,000 speakers of one line each were imported (6.7 s to read) into a character list
    # no page could show.
    settings.STORY_IMPORT_MAX_CHARACTERS = 3
    said = "line 12: more than 3 characters speak (STORY_IMPORT_MAX_CHARACTERS)"
    api = client_for(writer)
    response = api.post("/api/stories/import/", {"fountain": _speakers(4)}, format="json")
    assert (response.status_code, response.json()["message"]) == (400, said)
    upload = SimpleUploadedFile("crowd.fountain", _speakers(4).encode())
    response = api.post("/api/stories/import/", {"file": upload}, format="multipart")
    assert (response.status_code, response.json()["message"]) == (400, said)
    fdx = fdx_from_screenplay(
        content={
            "title": "Crowd",
            "characters": [],
            "scenes": [
                {
                    "heading": "INT. CROWD - DAY",
                    "elements": [{"type": "dialogue", "character": f"P{n}", "text": "Hi."} for n in range(4)],
                }
            ],
        },
        meta=ExportMeta(title="Crowd"),
    )
    upload = SimpleUploadedFile("crowd.fdx", fdx)
    response = api.post("/api/stories/import/", {"file": upload}, format="multipart")
    assert response.status_code == 400
    assert "more than 3 characters speak (STORY_IMPORT_MAX_CHARACTERS)" in response.json()["message"]
    response = api.post(_versions(story), {"fountain": _speakers(4), "base_version": 1}, format="json")
    assert (response.status_code, response.json()["message"]) == (400, said)
    assert not Story.objects.exclude(pk=story.pk).exists()
    assert story.versions.count() == 1
    response = api.post("/api/stories/import/", {"fountain": _speakers(3)}, format="json")
    assert response.status_code == 201, response.json()


def test_a_json_edit_has_the_character_bound_of_a_fountain_one(
    writer: Any, story: Story, settings: Any
) -> None:
    settings.STORY_IMPORT_MAX_CHARACTERS = 2
    content = copy.deepcopy(SCREENPLAY)
    content["characters"] = [{"name": f"EXTRA {n}"} for n in range(3)]
    response = client_for(writer).post(_versions(story), {"content": content}, format="json")
    assert (response.status_code, response.json()["message"]) == (
        400,
        "more than 2 characters (STORY_IMPORT_MAX_CHARACTERS)",
    )


def test_the_default_character_limit_refuses_a_crowd_of_speakers(writer: Any) -> None:
    response = client_for(writer).post("/api/stories/import/", {"fountain": _speakers(501)}, format="json")
    assert response.status_code == 400
    assert response.json()["message"].endswith("more than 500 characters speak (STORY_IMPORT_MAX_CHARACTERS)")


def test_a_version_with_more_elements_than_the_limit_is_refused_on_every_path(
    writer: Any, story: Story, settings: Any
) -> None:
    # Was: a version of 20,000 one-line speeches (160 KB of Fountain) was saved, and its PDF took 53 s
    # of CPU to lay out, again for every download once it outgrew the export cache.
    settings.STORY_IMPORT_MAX_ELEMENTS = 5
    lines = "INT. HALL - DAY\n\n" + "".join(f"MAX\nLine {n}.\n\n" for n in range(6))
    said = (
        "line 18: more than 5 elements: action paragraphs, speeches, transitions (STORY_IMPORT_MAX_ELEMENTS)"
    )
    api = client_for(writer)
    response = api.post("/api/stories/import/", {"fountain": lines}, format="json")
    assert (response.status_code, response.json()["message"]) == (400, said)
    response = api.post(_versions(story), {"fountain": lines, "base_version": 1}, format="json")
    assert (response.status_code, response.json()["message"]) == (400, said)
    content = copy.deepcopy(SCREENPLAY)
    content["scenes"][1]["elements"] *= 5  # 2 + 5 elements
    response = api.post(_versions(story), {"content": content, "base_version": 1}, format="json")
    assert (response.status_code, response.json()["message"]) == (
        400,
        "more than 5 elements: action paragraphs, speeches, transitions (STORY_IMPORT_MAX_ELEMENTS)",
    )
    assert story.versions.count() == 1
    # At the limit, a version is saved.
    content["scenes"][1]["elements"] = content["scenes"][1]["elements"][:3]
    response = api.post(_versions(story), {"content": content, "base_version": 1}, format="json")
    assert response.status_code == 201, response.json()


def _big(scenes: int, personas: int) -> dict[str, Any]:
    names = [f"CHARACTER {n}" for n in range(scenes)]
    characters = [
        {"name": name, "persona": f"p{n}"} if n < personas else {"name": name} for n, name in enumerate(names)
    ]
    return {
        "title": "Big",
        "characters": characters,
        "scenes": [
            {
                "heading": f"INT. ROOM {n} - DAY",
                "elements": [{"type": "dialogue", "character": names[n], "text": "Hi."}],
            }
            for n in range(scenes)
        ],
    }


@pytest.mark.parametrize(("scenes", "personas"), [(1, 1), (40, 10)])
def test_a_writers_save_is_one_transaction_with_a_constant_number_of_queries(
    writer: Any,
    story: Story,
    persona_factory: Any,
    scenes: int,
    personas: int,
    django_assert_num_queries: Any,
) -> None:
    for n in range(personas):
        persona_factory(f"p{n}")
    # The personas named, then in one transaction (a savepoint inside the test's own): the story's
    # number, the story, the version, the cast's personas, the departing cast members, the cast.
    with django_assert_num_queries(9):
        version = screenplay_version_write(
            user_id=writer.pk, story=story, content=_big(scenes, personas), base_version=1
        )
    assert version.number == 2
    assert story.cast.count() == personas


def test_a_generation_may_still_cast_only_the_chosen_personas_while_a_writer_may_cast_any_active_one(
    writer: Any, story: Story, persona_factory: Any
) -> None:
    persona_factory("villain")
    content = copy.deepcopy(SCREENPLAY)
    content["characters"].append({"name": "VERA", "persona": "villain"})
    content["characters"].append({"name": "EXTRA", "persona": None})
    with pytest.raises(GenerationError) as refused:
        screenplay_validate(content=content, persona_names=["hero"])
    assert refused.value.code == "invalid_output"
    assert "'villain', which is not one of the chosen personas" in refused.value.message
    version = screenplay_version_write(user_id=writer.pk, story=story, content=content)
    assert sorted(story.cast.values_list("persona__name", flat=True)) == ["hero", "villain"]
    assert version.content["characters"][2] == {"name": "EXTRA", "persona": None}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[" * 100_000, "nested deeper than 32 levels"),
        ('{"title": "\\ud800"}', "unpaired UTF-16 surrogate"),
        ('{"title": ', "not valid JSON"),
    ],
)
@pytest.mark.parametrize("form", ["multipart", "urlencoded"])
def test_a_version_sent_as_a_form_with_content_that_is_not_json_we_take_is_a_400(
    writer: Any, story: Story, form: str, content: str, message: str
) -> None:
    # DRF reads a form's JSON field with a bare json.loads: deep nesting was a RecursionError (a 500).
    client = client_for(writer)
    if form == "multipart":
        response = client.post(_versions(story), {"content": content}, format="multipart")
    else:
        body = urlencode({"content": content})
        response = client.post(_versions(story), body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400
    assert message in response.json()["content"][0]
    assert ScreenplayVersion.objects.filter(story=story).count() == 1


def test_a_version_sent_as_a_form_with_json_content_is_saved(writer: Any, story: Story) -> None:
    edited = {**SCREENPLAY, "title": "The Heist, a form"}
    response = client_for(writer).post(
        _versions(story), {"content": json.dumps(edited), "base_version": 1}, format="multipart"
    )
    assert response.status_code == 201
    assert response.json()["content"] == edited


def test_a_storys_versions_list_is_paginated_like_the_other_lists(writer: Any, story: Story) -> None:
    # docs/protocol.md listed /api/personas/, /api/stories/ and /api/runs/ as the paginated lists; the
    # versions list is one too (20 a page, newest first, 404 past the last page).
    ScreenplayVersion.objects.bulk_create(
        ScreenplayVersion(story=story, number=n, content=SCREENPLAY) for n in range(2, 22)
    )
    client = client_for(writer)
    first = client.get(_versions(story)).json()
    assert (first["count"], len(first["results"]), first["results"][0]["number"]) == (21, 20, 21)
    assert client.get(first["next"]).json()["results"][0]["number"] == 1
    assert client.get(_versions(story) + "?page=3").json() == {
        "detail": "There is no page 3: this list has 2 pages.",
        "code": "not_found",
    }


@pytest.mark.parametrize("url", ["/api/stories/", "/api/runs/", "/api/personas/", "versions"])
@pytest.mark.parametrize(
    "page", ["", "0", "-1", "+1", " 1", "1 ", "1.0", "last", "\uff11", "\u0661", "9" * 30]
)
def test_a_page_that_is_not_a_page_number_is_a_404_on_every_list(
    writer: Any, story: Story, url: str, page: str
) -> None:
    # ?page= (empty), "+1", " 1", a full-width one (U+FF11) and DRF's "last" read as page 1, where the schema
    # says the page is an integer from 1 and "1.0" or "x" were refused. The 404 says why, as the pages'
    # lists do: DRF's "Invalid page." did not.
    url = _versions(story) if url == "versions" else url
    client = client_for(writer)
    response = client.get(url, {"page": page})
    quoted = repr(page) if len(page) <= 20 else f"{page[:20] + '…'!r} ({len(page)} characters)"
    assert (response.status_code, response.json()) == (
        404,
        {
            "detail": f"{quoted} is not a page number: pages are numbered 1, 2, 3 and so on.",
            "code": "not_found",
        },
    )
    assert client.get(url, {"page": "1"}).status_code == client.get(url).status_code == 200


def test_the_schema_says_a_page_is_a_whole_number_from_1(writer: Any) -> None:
    schema = client_for(writer).get("/api/schema/", {"format": "json"}).json()
    pages = [
        parameter["schema"]
        for operations in schema["paths"].values()
        for operation in operations.values()
        for parameter in operation.get("parameters", [])
        if parameter["name"] == "page"
    ]
    assert len(pages) == 4
    assert all(page == {"type": "integer", "minimum": 1} for page in pages)


def test_an_imported_logline_over_the_plot_limit_becomes_a_plot_within_it(writer: Any, settings: Any) -> None:
    settings.STORY_MAX_PLOT_CHARS = 120
    logline = "word " * 180
    text = f"Title: Long\nLogline: {logline.strip()}\n\nINT. A\n\nHi.\n"
    body = client_for(writer).post("/api/stories/import/", {"fountain": text}, format="json").json()
    assert len(body["story"]["plot"]) <= 120 and body["story"]["plot"].endswith("word…")
    assert body["plot_cut"] is True
    assert body["version"]["content"]["logline"] == logline.strip()
    plain = client_for(writer).post(
        "/api/stories/import/", {"fountain": "Title: Short\nLogline: Hi.\n\nINT. A\n\nHi.\n"}, format="json"
    )
    assert (plain.json()["story"]["plot"], plain.json()["plot_cut"]) == ("Hi.", False)


def test_an_imported_logline_with_control_characters_becomes_a_plot_the_api_accepts(writer: Any) -> None:
    # The logline's escape sequence, DEL and C1 control became the story's plot, which the story's own
    # PATCH and the generation then refused ("plot contains a control character (U+001B)").
    api = client_for(writer)
    text = "Title: Heist\x1b[2J\nLogline: A crew\x1b[31m robs\x7f a vault\x9b.\n\nINT. A\n\nHi.\n"
    body = api.post("/api/stories/import/", {"fountain": text}, format="json").json()
    assert (body["story"]["title"], body["story"]["plot"]) == ("Heist[2J", "A crew[31m robs a vault.")
    assert body["plot_cut"] is False
    # The screenplay keeps its logline as it was read; the plot is one the API takes back as it is.
    assert body["version"]["content"]["logline"] == "A crew\x1b[31m robs\x7f a vault\x9b."
    story_url = f"/api/stories/{body['story']['id']}/"
    assert api.patch(story_url, {"plot": body["story"]["plot"]}, format="json").status_code == 200
    # Without a logline, the plot names the title as the story's title reads.
    untitled = api.post(
        "/api/stories/import/", {"fountain": "Title: Vault\x07\n\nINT. A\n\nHi.\n"}, format="json"
    )
    assert untitled.json()["story"]["plot"] == "Imported screenplay: Vault"


def test_an_imported_cue_in_another_script_matches_its_persona_whatever_the_case(
    writer: Any, persona_factory: Any
) -> None:
    # SQLite's own lower() folds ASCII only: "ÉMILE" did not match the persona "Émile" there.
    persona_factory("emile", display_name="Émile")
    persona_factory("zoe", display_name="Зоя")
    text = "Title: Paris\n\nINT. CAFÉ - DAY\n\nÉMILE\nBonjour.\n\nЗОЯ (V.O.)\nПривет.\n"  # noqa: RUF001
    response = client_for(writer).post("/api/stories/import/", {"fountain": text}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["matches"] == [
        {"character": "ÉMILE", "persona": "emile", "display_name": "Émile"},
        {"character": "ЗОЯ (V.O.)", "persona": "zoe", "display_name": "Зоя"},
    ]


def test_an_imported_cue_matches_its_persona_whatever_its_unicode_form_or_capitals(
    writer: Any, persona_factory: Any
) -> None:
    # Compared lowered, code point by code point: a persona named decomposed (NFD, as pasted from a macOS
    # file name) was never proposed for "JOSÉ" typed composed; "GROSSMANN", as German capitals write
    # "Großmann", was no match; nor "İPEK" for "İpek" on PostgreSQL.
    persona_factory("jose", display_name=unicodedata.normalize("NFD", "José"))
    persona_factory("grossmann", display_name="Herr Großmann")
    persona_factory("ipek", display_name="İpek")
    text = "Title: T\n\nINT. A - DAY\n\nJOSÉ\nHola.\n\nHERR GROSSMANN\nJa.\n\nİPEK (V.O.)\nEvet.\n"
    response = client_for(writer).post("/api/stories/import/", {"fountain": text}, format="json")
    assert response.status_code == 201, response.json()
    assert [match["persona"] for match in response.json()["matches"]] == ["jose", "grossmann", "ipek"]


def test_a_fountain_title_of_invisible_marks_is_no_title(writer: Any, story: Story) -> None:
    # Was: "Title: \u200e" saved as the version's title, a title page (and exports) with nothing on it.
    base = client_for(writer).post(
        _versions(story),
        {"fountain": "Title: The Vault\n\nINT. A\n\nHi.\n", "base_version": 1},
        format="json",
    )
    assert base.status_code == 201, base.json()
    edited = client_for(writer).post(
        _versions(story),
        {"fountain": "Title: \u200e\u200b\n\nINT. A\n\nHi.\n", "base_version": 2},
        format="json",
    )
    assert edited.status_code == 201, edited.json()
    assert edited.json()["content"]["title"] == "The Vault"  # the edited version's, as with no title page
    imported = client_for(writer).post(
        "/api/stories/import/", {"fountain": "Title: \u200f\n\nINT. A\n\nHi.\n"}, format="json"
    )
    assert imported.status_code == 201, imported.json()
    assert imported.json()["version"]["content"]["title"] == "Untitled"
    assert imported.json()["story"]["title"] == "Untitled"


@pytest.mark.parametrize("cue", ["GROßMANN", "FRAU STRAßBURGER (V.O.)", "WEIß (O.S.)"])
def test_an_imported_cue_in_capitals_with_a_sharp_s_is_a_character(writer: Any, cue: str) -> None:
    # "ß" is a lower-case letter, and German capitals keep it: "GROßMANN" over a line was not upper case
    # to screenplain, and the speech was imported as action with the name in it.
    text = f"Title: Berlin\n\nINT. BÜRO - TAG\n\n{cue}\nGuten Tag.\n\nDIE STRAßE IST LEER.\n"
    response = client_for(writer).post("/api/stories/import/", {"fountain": text}, format="json")
    assert response.status_code == 201, response.json()
    content = response.json()["version"]["content"]
    assert content["characters"] == [{"name": cue}]  # with its extension, as any cue
    assert content["scenes"][0]["elements"] == [
        {"type": "dialogue", "character": cue, "text": "Guten Tag."},
        {"type": "action", "text": "DIE STRAßE IST LEER."},
    ]


def test_a_fountain_text_with_a_lone_surrogate_is_refused_naming_it_on_every_path(
    client: Client, writer: Any, story: Story
) -> None:
    # The field's byte count encoded the text as UTF-8, which a lone surrogate (a JSON "\ud800") cannot
    # be: the import, a Fountain edit and the editor's preview were a 500 before the field's own check
    # could say what was wrong.
    raw = '{"fountain": "INT. ROOM - DAY\\n\\nBOB\\nHi \\ud800.\\n"}'
    said = "fountain contains an unpaired UTF-16 surrogate (\\ud800-\\udfff), which is not valid Unicode."
    for url in ("/api/stories/import/", f"/api/stories/{story.pk}/versions/"):
        response = client_for(writer).post(url, raw, content_type="application/json")
        assert (response.status_code, response.json()) == (400, {"fountain": [said]}), url
    client.force_login(writer)
    preview = client.post(f"/stories/{story.pk}/preview/", raw, content_type="application/json")
    assert preview.status_code == 400 and "surrogate" in preview.json()["error"]
    assert ScreenplayVersion.objects.filter(story=story).count() == 1

"""The card import's preview (issue 18): what an upload would create or change, per persona and per part,
before anything is written; confirming writes it in one transaction, as one revision."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from reversion.models import Version

from personas.models import PersonaConfig
from stories.models import Story, StoryCast

IMPORT = "/admin/personas/personaconfig/import/"


def _file(*personas: dict[str, Any]) -> SimpleUploadedFile:
    return SimpleUploadedFile("batch.json", json.dumps(list(personas)).encode())


def _ours(name: str, **config: Any) -> dict[str, Any]:
    return {"name": name, "display_name": name.title(), "config_data": config}


def _statuses(page: str) -> dict[str, str]:
    found = re.findall(r"\((\w[\w-]*)\): <span class=\"persona-import-status\">(\w+)</span>", page)
    return dict(found)


@pytest.fixture
def stored(persona_factory: Any) -> None:
    persona_factory("same", voice="Calm.")
    persona_factory("changed", voice="Old words here.", backstory="Born at sea.")


@pytest.mark.django_db
def test_the_preview_says_new_updated_or_unchanged_with_the_changed_parts_and_writes_nothing(
    editor_client: Client, stored: None
) -> None:
    before = list(PersonaConfig.objects.order_by("pk").values())
    upload = _file(
        _ours("same", voice="Calm."),
        _ours("changed", voice="New words here.", backstory="Born at sea."),
        _ours("fresh", voice="Bright."),
    )
    response = editor_client.post(IMPORT, {"file": upload})
    page = response.content.decode()
    assert response.status_code == 200
    assert _statuses(page) == {"same": "unchanged", "changed": "updated", "fresh": "new"}
    assert "<del>Old </del><ins>New </ins><span>words here.</span>" in page
    assert "Backstory" not in page.split("(changed)")[1].split("(fresh)")[0]  # unchanged part not listed
    assert list(PersonaConfig.objects.order_by("pk").values()) == before
    assert not Version.objects.exists()


@pytest.mark.django_db
def test_confirming_writes_the_changes_as_one_revision_and_leaves_unchanged_personas_alone(
    editor_client: Client, stored: None
) -> None:
    upload = _file(
        _ours("same", voice="Calm."), _ours("changed", voice="New."), _ours("fresh", voice="Bright.")
    )
    payload = editor_client.post(IMPORT, {"file": upload}).context["payload"]
    response = editor_client.post(IMPORT, {"payload": payload}, follow=True)
    assert (
        "Imported 3 persona(s): same (unchanged), changed (updated), fresh (created)."
        in response.content.decode()
    )
    versions = {p.name: p.version for p in PersonaConfig.objects.all()}
    assert versions == {"same": 1, "changed": 2, "fresh": 1}
    # The stored personas had no revision yet: their state before the import is recorded first.
    imported = Version.objects.filter(revision__comment="Imported from batch.json.")
    assert sorted(v.object_repr for v in imported) == ["Changed (changed)", "Fresh (fresh)"]
    assert {v.revision.user.username for v in imported} == {"ed"}
    (before,) = Version.objects.filter(
        revision__comment="As it was before its history began.", object_repr="Changed (changed)"
    )
    assert before.field_dict["config_data"] == {"voice": "Old words here.", "backstory": "Born at sea."}


@pytest.mark.django_db
def test_a_persona_changed_after_the_preview_refuses_the_whole_import(
    editor_client: Client, stored: None
) -> None:
    upload = _file(_ours("changed", voice="New."), _ours("fresh", voice="Bright."))
    payload = editor_client.post(IMPORT, {"file": upload}).context["payload"]
    changed = PersonaConfig.objects.get(name="changed")
    changed.config_data = {"voice": "Someone else's edit."}
    changed.save()
    response = editor_client.post(IMPORT, {"payload": payload}, follow=True)
    assert "Changed was changed by someone else after the preview was made" in response.content.decode()
    assert PersonaConfig.objects.get(name="changed").config_data == {"voice": "Someone else's edit."}
    assert not PersonaConfig.objects.filter(name="fresh").exists()


@pytest.mark.django_db
def test_an_altered_preview_is_refused(editor_client: Client, stored: None) -> None:
    payload = editor_client.post(IMPORT, {"file": _file(_ours("fresh", voice="Bright."))}).context["payload"]
    response = editor_client.post(IMPORT, {"payload": payload[:-3] + "xyz"}, follow=True)
    assert "The preview cannot be read: upload the file again." in response.content.decode()
    assert not PersonaConfig.objects.filter(name="fresh").exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("bare.json", json.dumps([_ours("fresh", voice="Bright."), _ours("bare")]).encode()),
        (
            "card.json",
            json.dumps({"spec": "chara_card_v2", "data": {"name": "Bare", "description": ""}}).encode(),
        ),
    ],
)
def test_a_persona_with_an_empty_config_is_refused_at_the_upload_not_after_the_preview(
    editor_client: Client, name: str, data: bytes
) -> None:
    # A persona needs a config (the model refuses an empty one): the preview showed "new" for it, then
    # confirming failed with a bare "This field cannot be blank." naming no persona.
    response = editor_client.post(IMPORT, {"file": SimpleUploadedFile(name, data)})
    page = response.content.decode()
    assert response.status_code == 200
    assert "payload" not in response.context
    assert f"{name} has a persona (bare) with an empty config" in page
    assert not PersonaConfig.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "refusal"),
    [
        (
            json.dumps(
                [{"name": "marks", "display_name": "\u200f\u200e", "config_data": {"voice": "Calm."}}]
            ),
            "has no visible character",
        ),
        (
            json.dumps({"spec": "chara_card_v2", "data": {"name": "\u200b\u202e", "description": "Calm."}}),
            "has no visible character",
        ),
        # An escape sequence or a bell went on into the character names the model wrote from it.
        (
            json.dumps([{"name": "esc", "display_name": "Red\x1b[31m", "config_data": {"voice": "Calm."}}]),
            "contains a line break or another control character (U+001B)",
        ),
        (
            json.dumps({"spec": "chara_card_v2", "data": {"name": "Bell\x07", "description": "Calm."}}),
            "contains a line break or another control character (U+0007)",
        ),
    ],
)
def test_a_persona_whose_name_is_refused_is_refused_at_the_upload_not_after_the_preview(
    editor_client: Client, data: str, refusal: str
) -> None:
    # The preview showed "new" for a display name the persona's own check refuses (marks only, which
    # made an empty button in the picker; a control character): confirming then failed, after the
    # editor had read the preview.
    response = editor_client.post(IMPORT, {"file": SimpleUploadedFile("odd.json", data.encode())})
    page = response.content.decode()
    assert response.status_code == 200
    assert "payload" not in response.context
    assert f"odd.json has a persona whose name {refusal}" in page
    assert not PersonaConfig.objects.exists()


@pytest.mark.django_db
def test_a_file_of_more_personas_than_the_bound_is_refused_before_any_is_read(editor_client: Client) -> None:
    # 40,000 personas (2.3 MB, under the upload limit) took 20 s of a core to preview, in a 20 MB page.
    personas = [_ours(f"p{number}", voice="Calm.") for number in range(1001)]
    response = editor_client.post(IMPORT, {"file": _file(*personas)})
    assert response.status_code == 200
    assert "payload" not in response.context
    assert (
        "batch.json holds 1001 personas; one file may hold at most 1000: split it."
        in response.content.decode()
    )
    assert not PersonaConfig.objects.exists()


@pytest.mark.django_db
def test_a_cards_right_to_left_name_is_isolated_even_with_a_stray_pdi(
    editor_client: Client,
) -> None:
    # The preview put the name in <bdi>: a PDI (U+2069) in the name itself closed it, and the override
    # after it drew the key and the status backwards again.
    card = {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {"name": "Mal\u2069\u202elory", "description": "A spy."},
    }
    upload = SimpleUploadedFile("card.json", json.dumps(card).encode())
    page = editor_client.post(IMPORT, {"file": upload}).content.decode()
    assert '<h2>\u2068Mal\u202elory\u2069 (mallory): <span class="persona-import-status">new</span>' in page


@pytest.mark.django_db
def test_a_file_that_deactivates_a_persona_stories_cast_says_so_before_it_is_imported(
    editor_client: Client, persona_factory: Any, writer: Any
) -> None:
    # Our JSON's is_active: false deactivated a cast persona without a word about its stories, which
    # the deactivate action and the change page ask about first.
    cast = persona_factory("cast", voice="Calm.")
    persona_factory("idle", voice="Calm.")
    for number in range(2):
        story = Story.objects.create(owner=writer, title=f"Private {number}", plot="P.")
        StoryCast.objects.create(story=story, persona=cast, character_name="Secret-Character")
    upload = _file(
        {**_ours("cast", voice="Calm."), "display_name": cast.display_name, "is_active": False},
        {**_ours("idle", voice="Calm."), "is_active": False},
    )
    page = editor_client.post(IMPORT, {"file": upload}).content.decode()
    warning = "The file deactivates this persona, and 2 stories cast it: generating them fails while it is inactive."
    assert page.count(warning) == 1
    assert page.index(warning) < page.index("(idle)")  # under the cast persona only
    assert "Secret-Character" not in page and "Private 0" not in page  # counts only


@pytest.mark.django_db
@pytest.mark.parametrize("action", ["export_ours", "export_card_json", "export_card_png"])
def test_the_zip_that_exporting_several_personas_makes_imports_back(
    editor_client: Client, stored: None, action: str
) -> None:
    personas = list(PersonaConfig.objects.order_by("name"))
    exported = editor_client.post(
        "/admin/personas/personaconfig/", {"action": action, "_selected_action": [p.pk for p in personas]}
    )
    assert exported["Content-Type"] == "application/zip"
    for persona in personas:
        persona.config_data = {**persona.config_data, "voice": "Edited since."}
        persona.save()
    upload = SimpleUploadedFile("personas.zip", exported.content, content_type="application/zip")
    page = editor_client.post(IMPORT, {"file": upload}).content.decode()
    assert _statuses(page) == {"changed": "updated", "same": "updated"}
    payload = re.search(r'name="payload" value="([^"]*)"', page)
    assert payload is not None
    assert editor_client.post(IMPORT, {"payload": payload.group(1)}).status_code == 302
    assert {p.name: p.config_data["voice"] for p in PersonaConfig.objects.all()} == {
        "changed": "Old words here.",
        "same": "Calm.",
    }


@pytest.mark.django_db
def test_the_import_forms_file_field_points_screen_readers_at_its_help_and_error(
    editor_client: Client,
) -> None:
    # The field named "id_file_helptext" in its aria-describedby, and no element had that id.
    refused = editor_client.post(IMPORT, {"file": SimpleUploadedFile("bad.json", b"not json")})
    for page in (editor_client.get(IMPORT).content.decode(), refused.content.decode()):
        field = re.search(r'<input[^>]*name="file"[^>]*>', page)
        assert field
        described = re.search(r'aria-describedby="([^"]+)"', field.group(0))
        assert described and "id_file_helptext" in described.group(1)
        for ref in described.group(1).split():
            assert f'id="{ref}"' in page, ref


@pytest.mark.django_db
def test_a_cards_name_with_tabs_or_line_breaks_is_made_one_line(editor_client: Client) -> None:
    data = json.dumps({"spec": "chara_card_v2", "data": {"name": "Old\tSalt\nSam", "description": "Calm."}})
    response = editor_client.post(IMPORT, {"file": SimpleUploadedFile("salt.json", data.encode())})
    assert response.status_code == 200 and "payload" in response.context
    assert "Old Salt Sam" in response.content.decode()

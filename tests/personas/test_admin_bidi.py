"""A persona's display name with right-to-left text or an override left open (U+202E, from a card or an
editor) stays inside its own words in Django's admin: messages, headings, breadcrumbs, titles."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import Client
from reversion.models import Revision, Version

from personas.models import PersonaConfig

EVIL = "Mallory \u202eevil"
ISOLATED = "\u2068Mallory \u202eevil\u2069 (mallory)"
IMPORT = "/admin/personas/personaconfig/import/"


@pytest.mark.django_db
def test_the_admins_own_words_around_a_right_to_left_display_name_are_isolated_from_it(
    editor_client: Client,
) -> None:
    # "The persona “Mallory ‮evil (mallory)” was added successfully." was drawn with everything after
    # the override backwards, the key and the rest of Django's sentence included.
    response = editor_client.post(
        "/admin/personas/personaconfig/add/",
        {"name": "mallory", "display_name": EVIL, "is_active": "on", "config_data": "{}", "_continue": "1"},
        follow=True,
    )
    page = response.content.decode()
    assert f"{ISOLATED}</a>” was added successfully." in page  # the message
    assert f"<h2>{ISOLATED}</h2>" in page  # the change page's heading
    assert f"&rsaquo; {ISOLATED}\n" in page  # the breadcrumbs
    assert f"<title>{ISOLATED} | Change persona" in page
    persona = PersonaConfig.objects.get(name="mallory")
    assert persona.display_name == EVIL  # what was typed, stored as it is
    history = editor_client.get(f"/admin/personas/personaconfig/{persona.pk}/history/").content.decode()
    assert f"<h1>History of {ISOLATED}</h1>" in history


@pytest.mark.django_db
def test_a_reverted_right_to_left_display_name_comes_back_as_it_was_typed(editor_client: Client) -> None:
    editor_client.post(
        "/admin/personas/personaconfig/add/",
        {"name": "mallory", "display_name": EVIL, "is_active": "on", "config_data": "{}"},
    )
    persona = PersonaConfig.objects.get(name="mallory")
    editor_client.post(
        f"/admin/personas/personaconfig/{persona.pk}/change/",
        {
            "name": "mallory",
            "display_name": "Mallory",
            "is_active": "on",
            "config_data": "{}",
            "loaded_version": 1,
        },
    )
    first = Version.objects.get_for_object(persona).order_by("pk").first()
    assert first is not None and first.field_dict["display_name"] == EVIL
    response = editor_client.post(
        f"/admin/personas/personaconfig/{persona.pk}/history/{first.pk}/", {"loaded_version": 2}, follow=True
    )
    page = response.content.decode()
    assert f"{ISOLATED} was reverted to the chosen revision." in page
    persona.refresh_from_db()
    assert persona.display_name == EVIL


def _ours(name: str) -> bytes:
    return json.dumps({"name": name, "config_data": {"voice": "Low."}}).encode()


@pytest.mark.django_db
def test_an_imported_files_name_is_isolated_in_the_revision_comment(editor_client: Client) -> None:
    # "Imported from תסריט 2.json." in the persona's history: the right-to-left name of the uploaded
    # file took the number and the sentence's period into its run, though the preview's title isolated
    # it. (Django drops an upload name's U+202E, not its right-to-left letters; the command keeps both.)
    upload = SimpleUploadedFile("\u05ea\u05e1\u05e8\u05d9\u05d8 2.json", _ours("hero"))
    payload = editor_client.post(IMPORT, {"file": upload}).context["payload"]
    editor_client.post(IMPORT, {"payload": payload})
    persona = PersonaConfig.objects.get(name="hero")
    history = editor_client.get(f"/admin/personas/personaconfig/{persona.pk}/history/").content.decode()
    assert "Imported from \u2068\u05ea\u05e1\u05e8\u05d9\u05d8 2.json\u2069." in history


@pytest.mark.django_db
def test_import_personas_isolates_each_files_name_in_its_revision_comment(tmp_path: Path) -> None:
    # A file name's override (U+202E) drew the rest of the comment backwards, the next file's name too.
    evil, plain = tmp_path / "batch \u202enosj.json", tmp_path / "plain.json"
    evil.write_bytes(_ours("hero"))
    plain.write_bytes(_ours("sidekick"))
    call_command("import_personas", str(evil), str(plain), stdout=io.StringIO())
    (revision,) = Revision.objects.filter(comment__startswith="Imported")
    assert revision.comment == f"Imported from \u2068{evil}\u2069, {plain}."

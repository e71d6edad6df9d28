"""Two editors giving personas the same key at once: the second is told the key is taken, never a 500.

The first request is held after its form is validated, before its insert, while the second sends its
own form; on PostgreSQL the test waits until the second is done or waits for a lock (see
tests/stories/test_cast_races.py), which is what a real interleaving can do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from reversion.models import Version

from personas.admin import PersonaConfigAdmin
from personas.forms import PersonaConfigForm
from personas.models import PersonaConfig
from personas.services import editors_group_ensure
from tests.personas.test_admin_concurrency import editor_client
from tests.personas.test_admin_form import _as_browser_posts
from tests.stories.test_cast_races import Elsewhere

pytestmark = pytest.mark.django_db(transaction=True)

ADD = "/admin/personas/personaconfig/add/"
IMPORT = "/admin/personas/personaconfig/import/"
LIST = "/admin/personas/personaconfig/"
TAKEN = "Persona with this Name already exists."


def _held_before_the_first_save(monkeypatch: Any, work: Callable[[], Any]) -> Elsewhere:
    elsewhere = Elsewhere(work)
    save_model = PersonaConfigAdmin.save_model

    def held(self: Any, *args: Any, **kwargs: Any) -> Any:
        if elsewhere.ident is None:
            elsewhere.start()
            elsewhere.blocked_or_done()
        return save_model(self, *args, **kwargs)

    monkeypatch.setattr(PersonaConfigAdmin, "save_model", held)
    return elsewhere


def _added(name: str, voice: str) -> dict[str, str]:
    return {
        "name": name,
        "display_name": name.title(),
        "is_active": "on",
        "voice": voice,
        "config_data": "{}",
    }


def test_two_editors_adding_the_same_key_at_once_the_second_is_told_it_is_taken(
    user_factory: Any, monkeypatch: Any
) -> None:
    editors_group_ensure()  # a transactional test's database is emptied after each test
    ann, bob = editor_client(user_factory, "ann"), editor_client(user_factory, "bob")
    second = _held_before_the_first_save(monkeypatch, lambda: bob.post(ADD, _added("hero", "Bob's.")))
    first = ann.post(ADD, _added("hero", "Ann's."))
    second.join()
    assert second.error is None, second.error
    answers = sorted([first.status_code, second.result.status_code])
    assert answers == [200, 302]
    refused = first if first.status_code == 200 else second.result
    assert TAKEN in refused.content.decode()
    assert PersonaConfig.objects.filter(name="hero").count() == 1


def test_an_import_creating_the_key_an_editor_is_adding_is_refused_and_the_editors_persona_kept(
    user_factory: Any, monkeypatch: Any
) -> None:
    editors_group_ensure()
    ann, bob = editor_client(user_factory, "ann"), editor_client(user_factory, "bob")
    upload = json.dumps({"name": "hero", "display_name": "Hero", "config_data": {"voice": "Bob's."}})
    preview = bob.post(IMPORT, {"file": SimpleUploadedFile("hero.json", upload.encode())}).content.decode()
    payload = re.search(r'name="payload" value="([^"]*)"', preview)
    assert payload is not None
    confirm = _held_before_the_first_save(
        monkeypatch, lambda: bob.post(IMPORT, {"payload": payload.group(1)})
    )
    first = ann.post(ADD, _added("hero", "Ann's."))
    confirm.join()
    assert confirm.error is None, confirm.error
    assert first.status_code == 302
    assert PersonaConfig.objects.get(name="hero").config_data == {"voice": "Ann's."}
    assert confirm.result.status_code == 302  # back to the upload, saying why
    messages = [str(message) for message in get_messages(confirm.result.wsgi_request)]
    assert "hero was changed by someone else after the preview was made; nothing was imported." in messages[0]


def test_two_editors_duplicating_one_persona_at_once_get_two_copies(
    user_factory: Any, persona_factory: Any, monkeypatch: Any
) -> None:
    editors_group_ensure()
    hero = persona_factory("hero")
    ann, bob = editor_client(user_factory, "ann"), editor_client(user_factory, "bob")
    duplicate = {"action": "duplicate", "_selected_action": [hero.pk]}
    elsewhere = Elsewhere(lambda: bob.post(LIST, duplicate))
    save = PersonaConfig.save

    def held(persona: PersonaConfig, *args: Any, **kwargs: Any) -> None:
        # Ann's copy, named and checked, just before its insert.
        if persona.pk is None and elsewhere.ident is None:
            elsewhere.start()
            elsewhere.blocked_or_done()
        save(persona, *args, **kwargs)

    monkeypatch.setattr(PersonaConfig, "save", held)
    first = ann.post(LIST, duplicate)
    elsewhere.join()
    assert elsewhere.error is None, elsewhere.error
    assert (first.status_code, elsewhere.result.status_code) == (302, 302)
    assert sorted(PersonaConfig.objects.values_list("name", flat=True)) == [
        "hero",
        "hero-copy",
        "hero-copy-2",
    ]


def test_a_persona_recovered_while_an_editor_adds_its_key_is_refused_and_the_new_one_kept(
    user_factory: Any, monkeypatch: Any
) -> None:
    editors_group_ensure()
    ann, bob = editor_client(user_factory, "ann"), editor_client(user_factory, "bob")
    assert ann.post(ADD, _added("ghost", "Old.")).status_code == 302
    ghost = PersonaConfig.objects.get(name="ghost")
    assert ann.post(f"{LIST}{ghost.pk}/delete/", {"post": "yes"}).status_code == 302
    (deleted,) = Version.objects.get_deleted(PersonaConfig)
    recovering = _held_before_the_first_save(monkeypatch, lambda: bob.post(f"{LIST}recover/{deleted.pk}/"))
    first = ann.post(ADD, _added("ghost", "New."))
    recovering.join()
    assert recovering.error is None, recovering.error
    assert (first.status_code, recovering.result.status_code) == (302, 302)
    assert PersonaConfig.objects.get(name="ghost").config_data == {"voice": "New."}
    messages = [str(message) for message in get_messages(recovering.result.wsgi_request)]
    assert "Persona with this Name already exists." in messages[0]


def test_a_revert_to_a_key_an_editor_is_adding_is_refused_and_the_new_one_kept(
    user_factory: Any, monkeypatch: Any
) -> None:
    editors_group_ensure()
    ann, bob = editor_client(user_factory, "ann"), editor_client(user_factory, "bob")
    assert ann.post(ADD, _added("ghost", "Old.")).status_code == 302
    persona = PersonaConfig.objects.get(name="ghost")
    url = f"{LIST}{persona.pk}/change/"
    form = ann.get(url).context["adminform"].form
    renamed = {f.html_name: f.value() for f in form if f.value() not in (None, False)}
    assert ann.post(url, {**renamed, "is_active": "on", "name": "spirit"}).status_code == 302
    first_revision = Version.objects.get_for_object(persona).order_by("pk").first()
    assert first_revision is not None
    reverting = _held_before_the_first_save(
        monkeypatch,
        lambda: bob.post(f"{LIST}{persona.pk}/history/{first_revision.pk}/", {"loaded_version": "2"}),
    )
    first = ann.post(ADD, _added("ghost", "New."))
    reverting.join()
    assert reverting.error is None, reverting.error
    assert (first.status_code, reverting.result.status_code) == (302, 302)
    assert PersonaConfig.objects.get(name="ghost").config_data == {"voice": "New."}
    assert PersonaConfig.objects.get(pk=persona.pk).name == "spirit"
    messages = [str(message) for message in get_messages(reverting.result.wsgi_request)]
    assert "Persona with this Name already exists." in messages[0]


def test_a_rename_and_an_import_taking_the_same_keys_at_once_both_answer_without_a_deadlock(
    user_factory: Any, persona_factory: Any, monkeypatch: Any
) -> None:
    # Ann renames "old" to "hero" while Bob's import creates "hero" and updates "old". The rename locked
    # its row, then waited for the key "hero"; the import held "hero" and waited for the row: PostgreSQL
    # found the deadlock after a second and failed one of them (a 500).
    editors_group_ensure()
    old = persona_factory("old")
    ann, bob = editor_client(user_factory, "ann"), editor_client(user_factory, "bob")
    upload = json.dumps(
        [
            {"name": "hero", "display_name": "Hero", "config_data": {"voice": "Bob's."}},
            {"name": "old", "display_name": "Old", "config_data": {"voice": "Imported."}},
        ]
    )
    preview = bob.post(IMPORT, {"file": SimpleUploadedFile("two.json", upload.encode())}).content.decode()
    payload = re.search(r'name="payload" value="([^"]*)"', preview)
    assert payload is not None
    elsewhere = Elsewhere(lambda: bob.post(IMPORT, {"payload": payload.group(1)}))
    key_check = PersonaConfigForm._key_check

    def held(form: PersonaConfigForm, name: str | None) -> None:
        # Ann's form, its version checked, before it looks at the new key.
        if elsewhere.ident is None:
            elsewhere.start()
            elsewhere.blocked_or_done()
        key_check(form, name)

    monkeypatch.setattr(PersonaConfigForm, "_key_check", held)
    url = f"{LIST}{old.pk}/change/"
    renamed = ann.post(url, _as_browser_posts(ann, url, name="hero"))
    elsewhere.join()
    assert elsewhere.error is None, elsewhere.error
    assert elsewhere.result.status_code == 302
    # One of them got "hero": whichever came second was told, and nothing was half done.
    hero = PersonaConfig.objects.get(name="hero")
    if renamed.status_code == 302:
        assert hero.pk == old.pk
    else:
        assert renamed.status_code == 200 and TAKEN in renamed.content.decode()
        assert hero.config_data == {"voice": "Bob's."}

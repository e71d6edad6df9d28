"""Optimistic concurrency on ``version`` in the persona editor (issue 18): a stale save is refused."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from personas import services
from personas.models import PersonaConfig
from personas.services import EDITORS_GROUP

STALE = "Another editor saved this persona after you opened it (you opened version 1; it is now version 2)."


def editor_client(user_factory: Any, username: str) -> Client:
    """A signed-in client of a new member of the editors group."""
    editor = user_factory(username, is_staff=True)
    editor.groups.add(Group.objects.get(name=EDITORS_GROUP))
    client = Client()
    client.force_login(editor)
    return client


def _opened(client: Client, url: str) -> dict[str, Any]:
    """The change form as the page rendered it, ready to post back."""
    form = client.get(url).context["adminform"].form
    data = {field.html_name: field.value() for field in form}
    return {
        key: ("on" if value is True else value) for key, value in data.items() if value not in (None, False)
    }


@pytest.fixture
def opened_twice(
    user_factory: Any, persona_factory: Any
) -> tuple[str, Client, dict[str, Any], Client, dict[str, Any]]:
    persona = persona_factory("hero", voice="Plain.")
    url = f"/admin/personas/personaconfig/{persona.pk}/change/"
    first, second = editor_client(user_factory, "ann"), editor_client(user_factory, "bob")
    return url, first, _opened(first, url), second, _opened(second, url)


@pytest.mark.django_db
def test_a_second_editors_stale_save_is_refused_and_keeps_their_edits_on_the_page(opened_twice: Any) -> None:
    url, first, first_form, second, second_form = opened_twice
    assert first.post(url, {**first_form, "voice": "Ann's voice."}).status_code == 302
    response = second.post(url, {**second_form, "voice": "Bob's voice."})
    assert response.status_code == 200
    page = response.content.decode()
    assert STALE in page
    assert "Bob&#x27;s voice.</textarea>" in page
    persona = PersonaConfig.objects.get(name="hero")
    assert (persona.config_data["voice"], persona.version) == ("Ann's voice.", 2)
    # Sending the same stale form again is refused again: nothing is ever silently overwritten.
    assert STALE in second.post(url, {**second_form, "voice": "Bob's voice."}).content.decode()
    assert PersonaConfig.objects.get(name="hero").config_data["voice"] == "Ann's voice."


@pytest.mark.django_db
def test_a_deactivation_meanwhile_also_makes_the_open_form_stale(opened_twice: Any) -> None:
    url, first, _, second, second_form = opened_twice
    hero = PersonaConfig.objects.get(name="hero")
    first.post("/admin/personas/personaconfig/", {"action": "deactivate", "_selected_action": [hero.pk]})
    response = second.post(url, {**second_form, "voice": "Bob's voice."})
    assert STALE in response.content.decode()
    assert PersonaConfig.objects.get(name="hero").is_active is False


@pytest.mark.django_db
def test_a_save_from_the_current_version_goes_through_and_the_next_needs_the_new_one(
    opened_twice: Any,
) -> None:
    url, first, first_form, _, _ = opened_twice
    assert first.post(url, {**first_form, "voice": "One."}).status_code == 302
    assert first.post(url, {**_opened(first, url), "voice": "Two."}).status_code == 302
    assert PersonaConfig.objects.get(name="hero").version == 3


@pytest.mark.django_db
def test_a_change_posted_without_the_version_it_was_made_from_is_refused(opened_twice: Any) -> None:
    url, first, first_form, _, _ = opened_twice
    del first_form["loaded_version"]
    response = first.post(url, {**first_form, "voice": "Blind."})
    assert response.status_code == 200
    assert PersonaConfig.objects.get(name="hero").config_data["voice"] == "Plain."


@pytest.mark.django_db
def test_a_persona_deleted_while_a_save_of_it_runs_is_not_saved_and_the_editor_is_told(
    opened_twice: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The other editor's delete commits after this save's request read the persona, before its version
    # check: the save tried to insert it again, with its version as an expression (a 500).
    url, first, first_form, _, _ = opened_twice
    lock = services.persona_version_lock

    def deleted_just_before(**kwargs: Any) -> int | None:
        services.personas_delete(personas=PersonaConfig.objects.filter(name="hero"), user=None)
        return lock(**kwargs)

    monkeypatch.setattr(services, "persona_version_lock", deleted_just_before)
    response = first.post(url, {**first_form, "voice": "Ann's voice."})
    assert response.status_code == 200
    page = response.content.decode()
    assert "Another editor deleted this persona while you were saving it. Nothing was saved." in page
    assert "Ann&#x27;s voice.</textarea>" in page
    assert not PersonaConfig.objects.filter(name="hero").exists()

"""Usage in the persona list (issue 18): story counts, last use, the unused filter, and warnings."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from personas.models import PersonaConfig
from stories.models import Story, StoryCast

LIST = "/admin/personas/personaconfig/"
SECRET = "Writers-Secret-Character"


def _cast(persona: PersonaConfig, stories: int, owner: Any) -> None:
    for number in range(stories):
        story = Story.objects.create(owner=owner, title=f"Private title {persona.name} {number}", plot="P.")
        StoryCast.objects.create(story=story, persona=persona, character_name=SECRET)


def _bulk(personas: int, stories: int, owner: Any) -> None:
    """``personas`` personas, the even ones cast in ``stories`` stories in all, in a few bulk queries."""
    made = PersonaConfig.objects.bulk_create(
        PersonaConfig(name=f"p-{n:04}", display_name=f"P {n:04}", config_data={"voice": "V."})
        for n in range(personas)
    )
    made_stories = Story.objects.bulk_create(
        Story(owner=owner, title=f"Private title {n}", plot="P.") for n in range(stories)
    )
    cast = made[::2]
    StoryCast.objects.bulk_create(
        StoryCast(story=story, persona=cast[n % len(cast)], character_name=SECRET)
        for n, story in enumerate(made_stories)
    )


def _list_queries(client: Client) -> tuple[int, str]:
    with CaptureQueriesContext(connection) as queries:
        page = client.get(LIST).content.decode()
    return len(queries), page


@pytest.mark.django_db
def test_the_list_with_1000_personas_and_10000_stories_takes_as_many_queries_as_with_ten(
    editor_client: Client, writer: Any
) -> None:
    _bulk(10, 100, writer)
    small, _ = _list_queries(editor_client)
    StoryCast.objects.all().delete()
    Story.objects.all().delete()
    PersonaConfig.objects.all().delete()
    _bulk(1000, 10_000, writer)
    large, page = _list_queries(editor_client)
    # Session, user, its own and its groups' permissions, the filtered and total counts, one page.
    assert small == large == 7
    # One page of 100: even personas are cast in 10,000 / 500 = 20 stories each, odd ones in none.
    assert page.count('<td class="field-story_count">20</td>') == 50
    assert page.count('<td class="field-story_count">0</td>') == 50
    assert SECRET not in page and "Private title" not in page


@pytest.mark.django_db
def test_the_list_shows_counts_and_last_use_never_the_writers_stories(
    editor_client: Client, writer: Any, persona_factory: Any
) -> None:
    used, unused = persona_factory("used"), persona_factory("unused")
    _cast(used, 3, writer)
    page = editor_client.get(LIST).content.decode()
    assert '<td class="field-story_count">3</td>' in page
    assert '<td class="field-last_used">never</td>' in page
    assert SECRET not in page and "Private title" not in page
    unused_only = editor_client.get(LIST + "?usage=unused").content.decode()
    assert f"/{unused.pk}/change/" in unused_only and f"/{used.pk}/change/" not in unused_only
    used_only = editor_client.get(LIST + "?usage=used").content.decode()
    assert f"/{used.pk}/change/" in used_only and f"/{unused.pk}/change/" not in used_only


@pytest.mark.django_db
def test_deactivating_a_used_persona_asks_first_with_counts_only(
    editor_client: Client, writer: Any, persona_factory: Any
) -> None:
    used = persona_factory("used")
    _cast(used, 2, writer)
    response = editor_client.post(LIST, {"action": "deactivate", "_selected_action": [used.pk]})
    page = response.content.decode()
    assert response.status_code == 200
    assert "Used (used): 2 stories cast it" in page
    assert SECRET not in page and "Private title" not in page
    assert PersonaConfig.objects.get(pk=used.pk).is_active
    confirmed = {"action": "deactivate", "_selected_action": [used.pk], "confirm_deactivate": "yes"}
    assert editor_client.post(LIST, confirmed).status_code == 302
    assert not PersonaConfig.objects.get(pk=used.pk).is_active


@pytest.mark.django_db
def test_unticking_active_on_a_used_persona_needs_deactivate_anyway(
    editor_client: Client, writer: Any, persona_factory: Any
) -> None:
    used = persona_factory("used", voice="Plain.")
    _cast(used, 1, writer)
    url = f"/admin/personas/personaconfig/{used.pk}/change/"
    data = {"name": "used", "display_name": "Used", "voice": "Plain.", "loaded_version": "1"}
    data["config_data"] = '{"voice": "Plain."}'
    response = editor_client.post(url, data)
    assert (
        "1 story casts this persona; generating them fails while it is inactive." in response.content.decode()
    )
    assert PersonaConfig.objects.get(pk=used.pk).is_active
    assert editor_client.post(url, {**data, "deactivate_anyway": "on"}).status_code == 302
    assert not PersonaConfig.objects.get(pk=used.pk).is_active


@pytest.mark.django_db
def test_deleting_a_used_persona_is_refused_with_a_count_not_the_writers_cast(
    editor_client: Client, writer: Any, persona_factory: Any
) -> None:
    used = persona_factory("used")
    _cast(used, 2, writer)
    url = f"/admin/personas/personaconfig/{used.pk}/delete/"
    page = editor_client.get(url).content.decode()
    assert "Used (used): 2 stories cast it" in page
    assert SECRET not in page
    editor_client.post(url, {"post": "yes"})
    bulk = editor_client.post(
        LIST, {"action": "delete_selected", "_selected_action": [used.pk]}
    ).content.decode()
    assert "Used (used): 2 stories cast it" in bulk and SECRET not in bulk
    assert PersonaConfig.objects.filter(pk=used.pk).exists()


@pytest.mark.django_db
def test_the_key_of_a_used_persona_cannot_change_but_its_display_name_can(
    editor_client: Client, writer: Any, persona_factory: Any
) -> None:
    # Screenplays name the persona playing a part by its key: renamed, every story casting it failed to
    # rewrite a scene ("unknown personas: used") and its next edit or restore dropped it from the cast.
    used = persona_factory("used", voice="Plain.")
    _cast(used, 2, writer)
    url = f"/admin/personas/personaconfig/{used.pk}/change/"
    data = {"name": "used-renamed", "display_name": "Used", "is_active": "on", "voice": "Plain."}
    data |= {"config_data": '{"voice": "Plain."}', "loaded_version": "1"}
    page = editor_client.post(url, data).content.decode()
    assert "2 stories cast this persona by its key" in page
    assert SECRET not in page and "Private title" not in page
    assert PersonaConfig.objects.get(pk=used.pk).name == "used"
    renamed = {**data, "name": "used", "display_name": "Used Renamed"}
    assert editor_client.post(url, renamed).status_code == 302
    assert PersonaConfig.objects.get(pk=used.pk).display_name == "Used Renamed"


@pytest.mark.django_db
def test_a_revert_to_another_key_of_a_used_persona_is_refused(
    editor_client: Client, writer: Any, persona_factory: Any
) -> None:
    from reversion.models import Version

    url = "/admin/personas/personaconfig/"
    data = {"name": "old-key", "display_name": "Hero", "is_active": "on", "voice": "V.", "config_data": "{}"}
    assert editor_client.post(f"{url}add/", data).status_code == 302
    hero = PersonaConfig.objects.get(name="old-key")
    changed = {**data, "name": "hero", "config_data": '{"voice": "V."}', "loaded_version": "1"}
    assert editor_client.post(f"{url}{hero.pk}/change/", changed).status_code == 302
    _cast(hero, 1, writer)
    first = Version.objects.get_for_object(hero).order_by("pk").first()
    assert first is not None
    response = editor_client.post(f"{url}{hero.pk}/history/{first.pk}/", {"loaded_version": "2"}, follow=True)
    assert "1 story casts this persona by its key" in response.content.decode()
    assert PersonaConfig.objects.get(pk=hero.pk).name == "hero"

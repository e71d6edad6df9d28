from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from personas.models import PersonaConfig


def _post_persona(client: Client, config: str, name: str = "new-one") -> Any:
    return client.post(
        "/admin/personas/personaconfig/add/",
        {"name": name, "display_name": "New One", "is_active": "on", "config_data": config},
    )


@pytest.mark.django_db
def test_an_editor_can_add_a_persona_with_a_valid_config(editor_client: Client) -> None:
    response = _post_persona(editor_client, '{"voice": "Gravel.", "tags": ["noir"]}')
    assert response.status_code == 302
    assert PersonaConfig.objects.get(name="new-one").config_data["voice"] == "Gravel."


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('{"tags": "noir"}', "tags: &quot;noir&quot; is not of type &#x27;array&#x27;"),
        ('["a list"]', "The config must be a JSON object ({...}), not a list."),
        # The message named Python's classes: "not JSONString", "not int", "not bool".
        ('"a string"', "The config must be a JSON object ({...}), not a string."),
        ("7", "The config must be a JSON object ({...}), not a number."),
        ("true", "The config must be a JSON object ({...}), not a boolean."),
        ("{not json", "is not valid JSON"),
        ('{"voice": 7}', "voice: 7 is not of type &#x27;string&#x27;"),
        # The value is quoted as the editor wrote it, in JSON: it was Python's "None", "True", "{'a': 2}".
        ('{"voice": null}', "voice: null is not of type &#x27;string&#x27;"),
        ('{"tags": [true]}', "tags/0: true is not of type &#x27;string&#x27;"),
        ('{"tags": [{"a": 2}]}', "tags/0: {&quot;a&quot;: 2} is not of type &#x27;string&#x27;"),
        # Issue 13 item 5: each of these was a 500 (on SQLite, PostgreSQL or both).
        ('{"description": "a\\u0000b"}', "description: contains a NUL (\\u0000) character"),
        ('{"description": "\\ud800"}', "description: contains an unpaired UTF-16 surrogate"),
        # json.loads kept the last "voice" without a word: the first was lost on save.
        ('{"voice": "Gravel.", "voice": ""}', "The JSON has the key &quot;voice&quot; twice in one object"),
        ('{"x": 1e400}', "x: holds a number that is not finite"),
        ('{"x": NaN}', "x: holds a number that is not finite"),
        ('{"x": ' + "9" * 5000 + "}", "holds an integer longer than 64 digits"),
        ("[" * 100_000 + "]" * 100_000, "nested deeper than 32 levels"),
        ('{"a": ' * 40 + "1" + "}" * 40, "nested deeper than 32 levels"),
    ],
)
def test_a_bad_config_gets_a_clear_error_and_is_not_saved(
    editor_client: Client, config: str, message: str
) -> None:
    response = _post_persona(editor_client, config)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not PersonaConfig.objects.filter(name="new-one").exists()


@pytest.mark.django_db
def test_an_editor_can_edit_personas_but_not_see_stories_runs_or_users(
    editor_client: Client, persona_factory: Any
) -> None:
    persona = persona_factory("hero")
    assert editor_client.get(f"/admin/personas/personaconfig/{persona.pk}/change/").status_code == 200
    for url in [
        "/admin/stories/story/",
        "/admin/stories/generationrun/",
        "/admin/auth/user/",
        "/admin/auth/group/",
    ]:
        assert editor_client.get(url).status_code == 403, url
    index = editor_client.get("/admin/").content.decode()
    assert "Personas" in index
    assert "Stories" not in index


@pytest.mark.django_db
def test_deactivate_action_hides_personas_and_bumps_their_version(
    editor_client: Client, persona_factory: Any
) -> None:
    persona = persona_factory("hero")
    response = editor_client.post(
        "/admin/personas/personaconfig/",
        {"action": "deactivate", "_selected_action": [persona.pk]},
    )
    assert response.status_code == 302
    persona.refresh_from_db()
    assert (persona.is_active, persona.version) == (False, 2)


@pytest.mark.django_db
@pytest.mark.parametrize("action", ["deactivate", "activate"])
def test_view_only_staff_cannot_run_the_activate_or_deactivate_actions(
    user_factory: Any, persona_factory: Any, action: str
) -> None:
    viewer = user_factory("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_personaconfig"))
    client = Client()
    client.force_login(viewer)
    persona = persona_factory("hero")
    PersonaConfig.objects.filter(pk=persona.pk).update(is_active=action == "deactivate")
    response = client.post(
        "/admin/personas/personaconfig/", {"action": action, "_selected_action": [persona.pk]}
    )
    assert response.status_code == 302
    persona.refresh_from_db()
    assert (persona.is_active, persona.version) == (action == "deactivate", 1)
    listing = client.get(response["Location"]).content.decode()
    assert "No action selected." in listing
    assert f'value="{action}"' not in listing


@pytest.mark.django_db
def test_staff_who_may_add_but_not_change_personas_get_no_import_link_and_a_403(user_factory: Any) -> None:
    # An import overwrites personas of the same name, so it needs the change permission too.
    adder = user_factory("adder", is_staff=True)
    adder.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_personaconfig", "add_personaconfig"])
    )
    client = Client()
    client.force_login(adder)
    listing = client.get("/admin/personas/personaconfig/").content.decode()
    assert "Add persona" in listing
    assert "Import personas" not in listing
    assert client.get("/admin/personas/personaconfig/import/").status_code == 403


@pytest.mark.django_db
def test_saving_a_persona_id_past_the_databases_integers_is_not_found_not_a_crash(
    editor_client: Client,
) -> None:
    # The change page's POST recorded the persona's history before the admin looked it up: an id of 25
    # digits reached SQLite ("Python int too large to convert to SQLite INTEGER"), a 500.
    response = editor_client.post(
        f"/admin/personas/personaconfig/{'9' * 25}/change/", {"name": "x", "display_name": "X"}
    )
    assert response.status_code == 302
    assert response["Location"] == "/admin/"
    assert not PersonaConfig.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("selected", ["x", "9" * 25, "1.5"])
@pytest.mark.parametrize(
    ("admin_user", "url", "action"),
    [
        ("editor", "/admin/personas/personaconfig/", "deactivate"),
        ("superuser", "/admin/stories/story/", "delete_selected"),
    ],
)
def test_an_action_on_an_id_no_object_can_have_is_a_400_not_a_crash(
    editor_client: Client,
    user_factory: Any,
    persona_factory: Any,
    selected: str,
    admin_user: str,
    url: str,
    action: str,
) -> None:
    # The admin filtered its queryset by the posted ids as they came: a forged "x" was Django's
    # ValueError and 25 digits SQLite's OverflowError, both 500s, in every model's list.
    hero = persona_factory("hero")
    client = editor_client
    if admin_user == "superuser":
        client = Client()
        client.force_login(user_factory("root", is_staff=True, is_superuser=True))
    response = client.post(url, {"action": action, "_selected_action": [str(hero.pk), selected], "index": 0})
    assert response.status_code == 400
    assert "An action named a selected object by an id no object can have." in response.content.decode()
    assert PersonaConfig.objects.get().is_active


@pytest.mark.django_db
def test_staff_who_may_only_view_see_each_part_of_the_persona_on_its_page(
    user_factory: Any, persona_factory: Any
) -> None:
    persona = persona_factory(
        "hero", voice="Gravel <b>and</b> smoke.", example_lines=["One.", "Two."], tags=["noir", "Smith, John"]
    )
    viewer = user_factory("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_personaconfig"))
    client = Client()
    client.force_login(viewer)
    response = client.get(f"/admin/personas/personaconfig/{persona.pk}/change/")
    assert response.status_code == 200
    page = response.content.decode()
    # Each part as its field shows it, escaped: the read-only page said "None" for every one.
    assert '<div class="readonly">Gravel &lt;b&gt;and&lt;/b&gt; smoke.</div>' in page
    assert '<div class="readonly">One.<br>Two.</div>' in page
    assert '<div class="readonly">noir, &quot;Smith, John&quot;</div>' in page
    assert ">None</div>" not in page
    # What only editing uses is not there.
    assert "Deactivate anyway" not in page
    assert "persona-live-preview" not in page


@pytest.mark.django_db
def test_a_key_the_model_never_gets_is_saved_with_a_warning_naming_the_key_meant(
    editor_client: Client,
) -> None:
    # A typo in the raw JSON ("descripton") was saved as "changed successfully": the persona had lost
    # its description for the model, and nothing said so.
    response = _post_persona(editor_client, '{"descripton": "Gravel.", "voice": "Low."}')
    assert response.status_code == 302
    assert PersonaConfig.objects.get(name="new-one").config_data == {"descripton": "Gravel.", "voice": "Low."}
    page = editor_client.get(response["Location"]).content.decode()
    assert (
        "The config&#x27;s key &quot;descripton&quot; is not one the persona uses: the model never gets it "
        "(did you mean &quot;description&quot;?)." in page
    )


@pytest.mark.django_db
def test_a_config_of_known_keys_is_saved_without_a_warning(editor_client: Client) -> None:
    response = _post_persona(editor_client, '{"description": "Gravel.", "extensions": {"anything": 1}}')
    page = editor_client.get(response["Location"]).content.decode()
    assert "is not one the persona uses" not in page


@pytest.mark.django_db
def test_a_config_of_many_unknown_keys_is_warned_of_in_a_few_messages(editor_client: Client) -> None:
    # Each unknown key was a message of its own: 2,000 of them stored in the editor's session and shown.
    config = "{" + ", ".join(f'"zz{number}": 1' for number in range(2000)) + "}"
    response = _post_persona(editor_client, config)
    assert response.status_code == 302
    page = editor_client.get(response["Location"]).content.decode()
    assert page.count("is not one the persona uses: the model never gets it") == 5
    assert "1995 more of its keys are not ones the persona uses." in page

"""History, revert, recover and duplicate in the persona admin (issue 18), on django-reversion's revisions."""

from __future__ import annotations

import re
from typing import Any

import pytest
import reversion
from django.contrib.auth.models import Permission
from django.test import Client
from reversion.models import Version

from personas.models import PersonaConfig
from personas.selectors import persona_contexts
from personas.services import personas_set_active

ROOT = "/admin/personas/personaconfig/"


def _form(client: Client, persona: PersonaConfig) -> dict[str, Any]:
    """The change form as the page rendered it, ready to post back."""
    form = client.get(f"{ROOT}{persona.pk}/change/").context["adminform"].form
    data = {field.html_name: field.value() for field in form}
    return {key: ("on" if v is True else v) for key, v in data.items() if v not in (None, False)}


def _save(client: Client, persona: PersonaConfig, **changes: str) -> None:
    response = client.post(f"{ROOT}{persona.pk}/change/", {**_form(client, persona), **changes})
    assert response.status_code == 302, response.content.decode()[:2000]


def _revisions(persona: PersonaConfig) -> list[Version]:
    return list(Version.objects.get_for_object(persona).select_related("revision__user").order_by("pk"))


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html))


@pytest.fixture
def hero(editor_client: Client) -> PersonaConfig:
    """A persona added through the admin (its first revision) and then edited once (its second)."""
    response = editor_client.post(
        f"{ROOT}add/",
        {
            "name": "hero",
            "display_name": "Hero",
            "is_active": "on",
            "voice": "Quiet and slow.",
            "config_data": "{}",
        },
    )
    assert response.status_code == 302
    persona = PersonaConfig.objects.get(name="hero")
    _save(editor_client, persona, voice="Loud and fast.")
    return PersonaConfig.objects.get(name="hero")


@pytest.mark.django_db
def test_every_admin_save_is_a_revision_with_who_and_the_history_shows_a_word_diff_per_part(
    editor_client: Client, hero: PersonaConfig
) -> None:
    revisions = _revisions(hero)
    assert [r.revision.user.username for r in revisions] == ["ed", "ed"]
    assert [r.field_dict["version"] for r in revisions] == [1, 2]
    page = editor_client.get(f"{ROOT}{hero.pk}/history/").content.decode()
    assert '<th scope="row">Voice</th>' in page
    assert "<del>Quiet </del><ins>Loud </ins><span>and </span><del>slow.</del><ins>fast.</ins>" in page
    assert "by ed, version 2" in _text(page)


@pytest.mark.django_db(transaction=True)
def test_revert_brings_the_old_text_back_as_a_new_version_served_by_the_next_context_read(
    editor_client: Client, hero: PersonaConfig
) -> None:
    assert persona_contexts(names=["hero"]).contexts[0].context == "Voice: Loud and fast."  # now cached
    first = _revisions(hero)[0]
    url = f"{ROOT}{hero.pk}/history/{first.pk}/"
    page = editor_client.get(url).content.decode()
    assert "<del>Loud </del><ins>Quiet </ins>" in page  # from now to then
    response = editor_client.post(url, {"loaded_version": "2"})
    assert response.status_code == 302 and response["Location"].endswith(f"{hero.pk}/change/")
    reverted = PersonaConfig.objects.get(pk=hero.pk)
    assert (reverted.config_data, reverted.version) == ({"voice": "Quiet and slow."}, 3)
    assert persona_contexts(names=["hero"]).contexts[0].context == "Voice: Quiet and slow."
    last = _revisions(hero)[-1]
    assert last.revision.user.username == "ed"
    assert last.revision.get_comment().startswith("Reverted to the revision of")


@pytest.mark.django_db
def test_a_revert_from_a_stale_page_is_refused_and_changes_nothing(
    editor_client: Client, hero: PersonaConfig
) -> None:
    first = _revisions(hero)[0]
    url = f"{ROOT}{hero.pk}/history/{first.pk}/"
    response = editor_client.post(url, {"loaded_version": "1"}, follow=True)
    assert "The persona changed after you opened this page" in response.content.decode()
    assert PersonaConfig.objects.get(pk=hero.pk).config_data == {"voice": "Loud and fast."}


@pytest.mark.django_db
@pytest.mark.parametrize("loaded", ["", "x", "0", "\u00b2", "9" * 5000])
def test_a_revert_with_a_forged_loaded_version_is_refused_not_a_crash(
    editor_client: Client, hero: PersonaConfig, loaded: str
) -> None:
    # "²" passed str.isdigit() and 5,000 digits passed it too: int() raised, a 500.
    first = _revisions(hero)[0]
    url = f"{ROOT}{hero.pk}/history/{first.pk}/"
    response = editor_client.post(url, {"loaded_version": loaded}, follow=True)
    assert response.status_code == 200
    assert "The form is incomplete; open the revision again." in response.content.decode()
    assert PersonaConfig.objects.get(pk=hero.pk).config_data == {"voice": "Loud and fast."}


@pytest.mark.django_db
def test_view_only_staff_see_the_history_and_a_revision_but_cannot_revert(
    user_factory: Any, hero: PersonaConfig
) -> None:
    viewer = user_factory("vera", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_personaconfig"))
    client = Client()
    client.force_login(viewer)
    first = _revisions(hero)[0]
    assert client.get(f"{ROOT}{hero.pk}/history/").status_code == 200
    page = client.get(f"{ROOT}{hero.pk}/history/{first.pk}/").content.decode()
    assert "Revert to this revision" not in page
    assert client.post(f"{ROOT}{hero.pk}/history/{first.pk}/", {"loaded_version": "2"}).status_code == 403
    assert PersonaConfig.objects.get(pk=hero.pk).version == 2


@pytest.mark.django_db
def test_a_deleted_persona_is_recovered_with_its_history_and_a_higher_version(
    editor_client: Client, hero: PersonaConfig
) -> None:
    assert editor_client.post(f"{ROOT}{hero.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not PersonaConfig.objects.filter(pk=hero.pk).exists()
    listing = editor_client.get(f"{ROOT}recover/").content.decode()
    (deleted,) = Version.objects.get_deleted(PersonaConfig)
    assert f"{ROOT}recover/{deleted.pk}/" in listing and "Hero (hero)" in listing
    assert "Loud and fast." in editor_client.get(f"{ROOT}recover/{deleted.pk}/").content.decode()
    response = editor_client.post(f"{ROOT}recover/{deleted.pk}/")
    assert response.status_code == 302 and response["Location"].endswith(f"{hero.pk}/change/")
    recovered = PersonaConfig.objects.get(pk=hero.pk)
    assert (recovered.config_data, recovered.version) == ({"voice": "Loud and fast."}, 3)
    comments = [r.revision.get_comment() for r in _revisions(recovered)]
    assert comments[-2:] == ["Deleted.", "Recovered after deletion."]
    # Recovering twice is refused with a message: it exists again.
    again = editor_client.post(f"{ROOT}recover/{deleted.pk}/", follow=True)
    assert again.status_code == 404


@pytest.mark.django_db
def test_recovering_needs_the_add_permission(
    user_factory: Any, editor_client: Client, hero: PersonaConfig
) -> None:
    editor_client.post(f"{ROOT}{hero.pk}/delete/", {"post": "yes"})
    (deleted,) = Version.objects.get_deleted(PersonaConfig)
    changer = user_factory("chang", is_staff=True)
    changer.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_personaconfig", "change_personaconfig"])
    )
    client = Client()
    client.force_login(changer)
    assert client.get(f"{ROOT}recover/").status_code == 403
    assert client.post(f"{ROOT}recover/{deleted.pk}/").status_code == 403
    assert not PersonaConfig.objects.filter(pk=hero.pk).exists()


@pytest.mark.django_db
def test_bulk_deactivation_is_one_revision_naming_the_editor_after_the_state_before_it(
    editor_client: Client, persona_factory: Any
) -> None:
    a, b = persona_factory("alpha"), persona_factory("beta")  # saved outside any revision
    response = editor_client.post(ROOT, {"action": "deactivate", "_selected_action": [a.pk, b.pk]})
    assert response.status_code == 302
    start_a, revision_a = _revisions(a)
    _, revision_b = _revisions(b)
    assert start_a.revision.get_comment() == "As it was before its history began."
    assert (start_a.field_dict["is_active"], start_a.field_dict["version"]) == (True, 1)
    assert revision_a.revision_id == revision_b.revision_id != start_a.revision_id
    assert revision_a.revision.get_comment() == "Deactivated."
    assert revision_a.revision.user.username == "ed"
    assert (revision_a.field_dict["is_active"], revision_a.field_dict["version"]) == (False, 2)
    personas_set_active(queryset=PersonaConfig.objects.filter(pk=a.pk), active=True)  # a command: no user
    assert _revisions(a)[-1].revision.user is None and _revisions(a)[-1].field_dict["is_active"] is True


@pytest.mark.django_db
def test_the_first_admin_edit_of_a_persona_saved_outside_a_revision_can_be_reverted(
    editor_client: Client, persona_factory: Any
) -> None:
    persona = persona_factory("hero", voice="Shell voice.")
    _save(editor_client, persona, voice="Admin voice.")
    before, after = _revisions(persona)
    assert before.field_dict["config_data"] == {"voice": "Shell voice."}
    assert after.field_dict["config_data"] == {"voice": "Admin voice."}
    editor_client.post(f"{ROOT}{persona.pk}/history/{before.pk}/", {"loaded_version": "2"})
    assert PersonaConfig.objects.get(pk=persona.pk).config_data == {"voice": "Shell voice."}


@pytest.mark.django_db
def test_personas_deleted_by_the_bulk_action_can_be_recovered(
    editor_client: Client, persona_factory: Any
) -> None:
    a, b = persona_factory("alpha"), persona_factory("beta")
    response = editor_client.post(
        ROOT, {"action": "delete_selected", "_selected_action": [a.pk, b.pk], "post": "yes"}
    )
    assert response.status_code == 302 and not PersonaConfig.objects.exists()
    deleted = Version.objects.get_deleted(PersonaConfig)
    assert sorted(version.object_repr for version in deleted) == ["Alpha (alpha)", "Beta (beta)"]
    assert all(version.revision.user.username == "ed" for version in deleted)
    for version in deleted:
        editor_client.post(f"{ROOT}recover/{version.pk}/")
    assert sorted(PersonaConfig.objects.values_list("name", flat=True)) == ["alpha", "beta"]


@pytest.mark.django_db
def test_duplicate_makes_an_inactive_copy_under_a_fresh_key(
    editor_client: Client, persona_factory: Any
) -> None:
    original = persona_factory("hero", voice="Gravel, ünïcode.")
    for _ in range(2):
        response = editor_client.post(
            ROOT, {"action": "duplicate", "_selected_action": [original.pk]}, follow=True
        )
        assert "inactive cop(ies) made" in response.content.decode()
    copies = PersonaConfig.objects.filter(name__startswith="hero-copy").order_by("pk")
    assert [(c.name, c.display_name, c.is_active) for c in copies] == [
        ("hero-copy", "Hero (copy)", False),
        ("hero-copy-2", "Hero (copy)", False),
    ]
    assert all(c.config_data == original.config_data for c in copies)
    assert _revisions(copies[0])[0].revision.get_comment() == "Duplicated."


@pytest.mark.django_db
def test_a_copy_of_a_persona_with_the_longest_display_name_still_says_copy(
    editor_client: Client, persona_factory: Any
) -> None:
    # Was: "<200 characters> (copy)" cut to 200, the very name of the original.
    original = persona_factory("long")
    PersonaConfig.objects.filter(pk=original.pk).update(display_name="N" * 200)
    editor_client.post(ROOT, {"action": "duplicate", "_selected_action": [original.pk]})
    copy_ = PersonaConfig.objects.get(name="long-copy")
    assert copy_.display_name == "N" * 193 + " (copy)"


@pytest.mark.django_db
def test_duplicating_needs_the_add_permission(user_factory: Any, persona_factory: Any) -> None:
    original = persona_factory("hero")
    changer = user_factory("chang", is_staff=True)
    changer.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_personaconfig", "change_personaconfig"])
    )
    client = Client()
    client.force_login(changer)
    client.post(ROOT, {"action": "duplicate", "_selected_action": [original.pk]})
    assert PersonaConfig.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("how", ["delete page", "bulk action"])
def test_a_persona_cast_while_it_is_being_deleted_is_kept_and_the_editor_told(
    editor_client: Client, persona_factory: Any, writer: Any, monkeypatch: Any, how: str
) -> None:
    # A story save casts it after the confirmation's check, before the delete: the delete waits for
    # that save (personas.services.personas_delete) and is refused; it was a 500.
    from django.contrib.admin.models import LogEntry

    from personas import services
    from stories.models import Story, StoryCast

    hero = persona_factory("hero")
    delete = services.personas_delete

    def cast_first(**kwargs: Any) -> None:
        story = Story.objects.create(owner=writer, title="T", plot="P")
        StoryCast.objects.create(story=story, persona=hero, character_name="MAX", order=0)
        delete(**kwargs)

    monkeypatch.setattr(services, "personas_delete", cast_first)
    if how == "delete page":
        response = editor_client.post(f"{ROOT}{hero.pk}/delete/", {"post": "yes"}, follow=True)
    else:
        body = {"action": "delete_selected", "_selected_action": [hero.pk], "post": "yes"}
        response = editor_client.post(ROOT, body, follow=True)
    assert response.status_code == 200
    assert (
        "Nothing was deleted: a story cast the persona while it was being deleted."
        in response.content.decode()
    )
    assert PersonaConfig.objects.filter(pk=hero.pk).exists()
    assert not LogEntry.objects.filter(action_flag=3).exists()
    assert not Version.objects.get_deleted(PersonaConfig).exists()


@pytest.mark.django_db
def test_the_history_of_a_large_persona_edited_often_stays_a_page_of_bounded_size(
    editor_client: Client,
) -> None:
    # Each revision showed its changed parts whole, old and new: a persona near PERSONA_CONFIG_MAX_BYTES
    # edited 200 times was a history page of 24 MB. Each revision now shows a few thousand characters
    # of its changes (its own page shows all of them).
    def backstory(edit: int) -> str:
        return " ".join(f"word{edit}x{n}" for n in range(4_000))  # about 40 KB, every word new each edit

    with reversion.create_revision():
        persona = PersonaConfig.objects.create(
            name="epic", display_name="Epic", config_data={"backstory": ""}
        )
    for edit in range(30):
        with reversion.create_revision():
            persona.config_data = {"backstory": backstory(edit), "voice": f"Voice {edit}."}
            persona.save()
    page = editor_client.get(f"{ROOT}{persona.pk}/history/").content.decode()
    assert len(page) < 300_000  # 2.4 MB before
    assert page.count("more characters: open the revision to see all of it]") >= 30
    assert "<ins>word29x0 word29x1 " in page  # the start of the newest change is shown
    before_last = _revisions(persona)[-2]  # its page: what reverting to it would change, all of it
    whole = editor_client.get(f"{ROOT}{persona.pk}/history/{before_last.pk}/").content.decode()
    assert "word29x3999" in whole and "word28x3999" in whole


def _config_stored_as(version: Version, config: Any) -> None:
    """Rewrite a revision as if its persona's config had been stored as ``config`` (a list, from the
    shell, before configs had to be objects: personas migration 0002)."""
    import json

    data = json.loads(version.serialized_data)
    data[0]["fields"]["config_data"] = config
    Version.objects.filter(pk=version.pk).update(serialized_data=json.dumps(data))


@pytest.mark.django_db
def test_a_revision_whose_config_is_not_an_object_is_shown_and_refused_not_a_500(
    editor_client: Client, hero: PersonaConfig
) -> None:
    # The database refuses a config that is not an object (a check constraint): reverting to a revision
    # recorded before it, which held a list, was an IntegrityError, a 500.
    first = _revisions(hero)[0]
    _config_stored_as(first, ["Quiet and slow."])
    url = f"{ROOT}{hero.pk}/history/{first.pk}/"
    assert editor_client.get(url).status_code == 200
    response = editor_client.post(url, {"loaded_version": "2"}, follow=True)
    assert response.status_code == 200
    assert "This revision&#x27;s config is not a JSON object" in response.content.decode()
    assert PersonaConfig.objects.get(pk=hero.pk).config_data == {"voice": "Loud and fast."}


@pytest.mark.django_db
def test_a_deleted_persona_whose_config_is_not_an_object_is_refused_not_a_500(
    editor_client: Client, hero: PersonaConfig
) -> None:
    assert editor_client.post(f"{ROOT}{hero.pk}/delete/", {"post": "yes"}).status_code == 302
    (deleted,) = Version.objects.get_deleted(PersonaConfig)
    _config_stored_as(deleted, "a text")
    assert editor_client.get(f"{ROOT}recover/{deleted.pk}/").status_code == 200
    response = editor_client.post(f"{ROOT}recover/{deleted.pk}/", follow=True)
    assert response.status_code == 200
    assert "This revision&#x27;s config is not a JSON object" in response.content.decode()
    assert not PersonaConfig.objects.filter(pk=hero.pk).exists()

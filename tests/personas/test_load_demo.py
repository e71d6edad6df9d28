from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management import CommandError, call_command

from personas.models import PersonaConfig


@pytest.mark.django_db
def test_load_demo_is_idempotent_and_keeps_editor_changes() -> None:
    call_command("load_demo", allow_without_debug=True)
    first = {p.name: p.config_data for p in PersonaConfig.objects.all()}
    PersonaConfig.objects.filter(name="noir-detective").update(display_name="Edited")
    call_command("load_demo", allow_without_debug=True)
    assert {p.name: p.config_data for p in PersonaConfig.objects.all()} == first
    assert PersonaConfig.objects.get(name="noir-detective").display_name == "Edited"
    assert len(first) >= 6
    users = get_user_model().objects.order_by("username")
    assert [u.username for u in users] == ["admin", "editor", "writer"]
    assert users.get(username="editor").groups.filter(name="Editors").exists()


@pytest.mark.django_db
def test_demo_personas_are_varied_and_include_non_latin_text() -> None:
    call_command("load_demo", allow_without_debug=True)
    texts = [str(p.config_data) + p.display_name for p in PersonaConfig.objects.all()]
    assert any(any(ord(ch) > 0x3000 for ch in text) for text in texts)
    assert len({p.config_data.get("voice") for p in PersonaConfig.objects.all()}) >= 5


@pytest.mark.django_db
def test_the_demo_editor_may_manage_personas_and_nothing_else() -> None:
    call_command("load_demo", allow_without_debug=True)
    editor = get_user_model().objects.get(username="editor")
    editor.user_permissions.add(Permission.objects.get(codename="add_generationsettings"))
    editor.groups.add(Group.objects.create(name="Story admins"))
    call_command("load_demo", allow_without_debug=True)
    editor = get_user_model().objects.get(username="editor")  # a fresh object: permissions are cached
    expected = {f"personas.{verb}_personaconfig" for verb in ("add", "change", "delete", "view")}
    assert (editor.is_staff, editor.is_superuser) == (True, False)
    assert editor.get_all_permissions() == expected
    assert not get_user_model().objects.get(username="writer").get_all_permissions()


@pytest.mark.django_db
def test_load_demo_refuses_with_debug_off_and_leaves_the_sites_accounts_alone(settings: Any) -> None:
    # Was: on a production site (DJANGO_DEBUG off, as make serve runs) it created the superuser admin
    # with the README's password, and reset a real account named editor or writer to the demo's.
    settings.DEBUG = False
    editor = get_user_model().objects.create_user(username="editor", password="a-real-password-2026")
    editor.is_superuser = editor.is_staff = True
    editor.save()
    with pytest.raises(CommandError, match=r"DJANGO_DEBUG is off.*Nothing was loaded.*--allow-without-debug"):
        call_command("load_demo")
    # What it would do, said as it is: it said it "creates (or resets)" the accounts with the README's
    # passwords, and an account already there keeps its own password (its role is what is reset).
    with pytest.raises(CommandError) as refused:
        call_command("load_demo")
    said = str(refused.value)
    assert "creates those of the accounts writer, editor and admin that do not exist" in said
    assert "resets the staff, superuser flags and groups of those that do" in said
    editor.refresh_from_db()
    assert (editor.is_staff, editor.is_superuser) == (True, True)
    assert editor.check_password("a-real-password-2026")
    assert list(get_user_model().objects.values_list("username", flat=True)) == ["editor"]
    assert not PersonaConfig.objects.exists()

"""Writes on personas. Every interface (admin, commands, importers) changes personas through here.

Every write also invalidates the cached contexts of the personas it touched, after its transaction
commits (``transaction.on_commit``), so a reader never caches a context that a rollback undoes and
never gets the old context once the edit is committed. Saves and deletions made through the ORM
anywhere (admin, import, shell) are covered by the signal handlers connected in ``personas.apps``;
bulk ``update()`` calls, which send no signals, invalidate explicitly here.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import Any

from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.db.models import F, QuerySet

from personas import cache as context_cache
from personas.cards import PersonaImport
from personas.models import PersonaConfig

EDITORS_GROUP = "Editors"


def editors_group_ensure() -> Group:
    """The "Editors" group: may manage personas in the admin and nothing else."""
    group, _ = Group.objects.get_or_create(name=EDITORS_GROUP)
    permissions = Permission.objects.filter(
        content_type__app_label="personas", content_type__model="personaconfig"
    )
    group.permissions.set(permissions)
    return group


@transaction.atomic
def personas_set_active(*, queryset: QuerySet[PersonaConfig], active: bool) -> int:
    """Activate or deactivate personas; a changed persona gets a new version like any edit."""
    changed = queryset.exclude(is_active=active)
    names = list(changed.values_list("name", flat=True))
    count = PersonaConfig.objects.filter(name__in=names).update(is_active=active, version=F("version") + 1)
    persona_contexts_forget(names=names)
    return count


def persona_version_lock(*, persona_pk: int) -> int | None:
    """The stored version of a persona (None once deleted), its row locked until the caller's
    transaction ends, so that the save which follows a version check cannot race another one."""
    with transaction.atomic():
        rows = PersonaConfig.objects.select_for_update().filter(pk=persona_pk)
        return rows.values_list("version", flat=True).first()


def persona_contexts_forget(*, names: Iterable[str]) -> None:
    """Invalidate the cached contexts of ``names`` once the current transaction commits."""
    names = set(names)
    if not names:
        return
    context_cache.pending_mark(names)
    transaction.on_commit(partial(context_cache.stamps_bump, names))


def persona_saved(*, persona: PersonaConfig, **_: Any) -> None:
    """Signal handler (``post_save``): forget the context under the old and the new name."""
    persona_contexts_forget(names=_names_of(persona))
    persona._loaded_name = persona.name  # type: ignore[attr-defined]


def persona_deleted(*, persona: PersonaConfig, **_: Any) -> None:
    """Signal handler (``post_delete``)."""
    persona_contexts_forget(names=_names_of(persona))


def _names_of(persona: PersonaConfig) -> set[str]:
    # The current name and, after a rename, the name it was loaded with.
    original = getattr(persona, "_loaded_name", None)
    return {persona.name, original} if isinstance(original, str) else {persona.name}


def persona_loaded(*, persona: PersonaConfig, **_: Any) -> None:
    """Signal handler (``post_init``): remember the name, which a save may change (a rename)."""
    persona._loaded_name = persona.__dict__.get("name")  # type: ignore[attr-defined]


# --- Import (persona files and Character Cards, see personas.cards) -----------------------------


@transaction.atomic
def persona_import(*, personas: Iterable[PersonaImport]) -> list[tuple[PersonaConfig, bool]]:
    """Create or update each persona by name, all in one transaction: every file lands, or none.

    Returns (persona, created) pairs. Each save bumps the persona's version and, through the save
    signal, invalidates its cached context after the commit like any other edit.
    """
    results = []
    for imported in personas:
        persona = PersonaConfig.objects.select_for_update().filter(name=imported.name).first()
        created = persona is None
        persona = persona or PersonaConfig(name=imported.name)
        persona.display_name = imported.display_name
        persona.config_data = imported.config_data
        persona.is_active = imported.is_active
        persona.full_clean()
        persona.save()
        results.append((persona, created))
    return results

"""Writes on personas. Every interface (admin, commands, importers) changes personas through here.

Every write also invalidates the cached contexts of the personas it touched, after its transaction
commits (``transaction.on_commit``), so a reader never caches a context that a rollback undoes and
never gets the old context once the edit is committed. Saves and deletions made through the ORM
anywhere (admin, import, shell) are covered by the signal handlers connected in ``personas.apps``;
bulk ``update()`` calls, which send no signals, invalidate explicitly here.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import reversion
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group, Permission
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone
from reversion.models import Version

from personas import cache as context_cache
from personas.cards import PersonaImport, keys_twice
from personas.models import PersonaConfig
from personas.selectors import persona_story_count
from storyproject.bidi import bidi_isolated

EDITORS_GROUP = "Editors"


def editors_group_ensure() -> Group:
    """The "Editors" group: may manage personas in the admin and nothing else."""
    group, _ = Group.objects.get_or_create(name=EDITORS_GROUP)
    permissions = Permission.objects.filter(
        content_type__app_label="personas", content_type__model="personaconfig"
    )
    group.permissions.set(permissions)
    return group


User = AbstractBaseUser | AnonymousUser | None


@contextmanager
def _revision(*, user: User, comment: str) -> Iterator[None]:
    """A django-reversion revision (one transaction) of every persona saved or added inside it.

    Nested in another revision block (the admin wraps its views in one), both make one revision.
    """
    with reversion.create_revision():
        if user is not None and user.is_authenticated:
            reversion.set_user(user)
        reversion.set_comment(comment)
        yield


def persona_history_start(*, persona_pks: Iterable[int | str]) -> None:
    """Record, as a revision, the current state of each persona that has none yet (one saved before
    django-reversion, or from the shell), so the edit about to be made has a state to revert to."""
    pks = {str(pk) for pk in persona_pks}
    known = Version.objects.get_for_model(PersonaConfig).filter(object_id__in=pks).values_list("object_id")
    missing = pks - {object_id for (object_id,) in known}
    personas = list(PersonaConfig.objects.filter(pk__in=[pk for pk in missing if pk.isdigit()]))
    if not personas:
        return
    with _revision(user=None, comment="As it was before its history began."):
        for persona in personas:
            reversion.add_to_revision(persona)


@transaction.atomic
def personas_set_active(*, queryset: QuerySet[PersonaConfig], active: bool, user: User = None) -> int:
    """Activate or deactivate personas; a changed persona gets a new version like any edit, and one
    revision records them all (``update()`` sends no signal, so they are added to it explicitly)."""
    changed = queryset.exclude(is_active=active)
    names = list(changed.values_list("name", flat=True))
    persona_history_start(
        persona_pks=PersonaConfig.objects.filter(name__in=names).values_list("pk", flat=True)
    )
    with _revision(user=user, comment="Activated." if active else "Deactivated."):
        count = PersonaConfig.objects.filter(name__in=names).update(
            is_active=active, version=F("version") + 1
        )
        for persona in PersonaConfig.objects.filter(name__in=names):
            reversion.add_to_revision(persona)
    persona_contexts_forget(names=names)
    return count


def persona_version_lock(*, persona_pk: int) -> int | None:
    """The stored version of a persona (None once deleted), its row locked until the caller's
    transaction ends, so that the save which follows a version check cannot race another one."""
    with transaction.atomic():
        rows = PersonaConfig.objects.select_for_update().filter(pk=persona_pk)
        return rows.values_list("version", flat=True).first()


def persona_key_hold(*, name: str) -> None:
    """Hold the key ``name`` until the caller's transaction ends: two writes giving it to a persona at
    once (two editors adding one, an import) take turns, and the second sees the first's persona, so
    its uniqueness check refuses it, where the database refused its insert (a 500). SQLite needs none:
    a write transaction there holds the whole database from its start."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"persona-key:{name}"])


def persona_key_keep_check(*, persona_pk: int, key: str, new_key: str) -> None:
    """Refuse a new key for a persona that stories cast (``ValidationError``, code ``"cast"``).

    A screenplay names the persona playing each part by its key: renamed, every story casting it
    failed to rewrite a scene ("unknown personas") and its next edit or restore dropped the persona
    from its cast. The display name is free to change. Called after ``persona_version_lock``, so a
    story saved meanwhile, which holds the persona's row until it commits, is counted.
    """
    if new_key == key:
        return
    count = persona_story_count(persona_pk=persona_pk)
    if count:
        stories = "1 story casts" if count == 1 else f"{count} stories cast"
        raise ValidationError(
            f"{stories} this persona by its key '{key}', which their screenplays name: it cannot change "
            "while they do. Change the display name instead, or duplicate the persona under a new key.",
            code="cast",
        )


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
def persona_import(
    *,
    personas: Iterable[PersonaImport],
    user: User = None,
    sources: Sequence[str] = (),
    expected_versions: dict[str, int | None] | None = None,
) -> list[tuple[PersonaConfig, str]]:
    """Create or update each persona by name, all in one transaction and one revision: every file
    lands, or none. A persona the file does not change is left as it is (no new version).

    ``sources``: the files' names, for the revision's comment. Returns (persona, "created" | "updated" |
    "unchanged") pairs. With ``expected_versions`` (name →
    the version the editor's preview was made from, None for a new name), a persona changed since the
    preview refuses the whole import. Each save bumps the persona's version and, through the save
    signal, invalidates its cached context after the commit like any other edit.
    """
    personas = list(personas)
    twice = keys_twice(personas)
    if twice:
        # The second would overwrite the first, in one import: said instead of done.
        raise ValidationError(f"more than one persona has the key {', '.join(map(repr, twice[:5]))}")
    for name in sorted({imported.name for imported in personas}):  # in one order: no deadlock
        persona_key_hold(name=name)
    existing = PersonaConfig.objects.filter(name__in=[imported.name for imported in personas])
    persona_history_start(persona_pks=existing.values_list("pk", flat=True))
    results = []
    # The files' names are the uploader's: each isolated, as a display name is (storyproject.bidi), so
    # that an override left open in one cannot draw the rest of the comment backwards in the history.
    named = ", ".join(bidi_isolated(source) for source in sources)
    with _revision(user=user, comment=f"Imported from {named}." if named else "Imported."):
        for imported in personas:
            persona = PersonaConfig.objects.select_for_update().filter(name=imported.name).first()
            if expected_versions is not None:
                _import_version_check(imported.name, persona, expected_versions.get(imported.name))
            results.append(_import_one(imported, persona))
    return results


def _import_version_check(name: str, persona: PersonaConfig | None, expected: int | None) -> None:
    current = persona.version if persona is not None else None
    if current != expected:
        raise ValidationError(
            f"{name} was changed by someone else after the preview was made; nothing was imported. "
            "Upload the file again to see what it would change now."
        )


def _import_one(imported: PersonaImport, persona: PersonaConfig | None) -> tuple[PersonaConfig, str]:
    status = "created" if persona is None else "updated"
    persona = persona or PersonaConfig(name=imported.name)
    wanted = (imported.display_name, imported.config_data, imported.active_after(persona))
    if status == "updated" and (persona.display_name, persona.config_data, persona.is_active) == wanted:
        return persona, "unchanged"
    persona.display_name, persona.config_data, persona.is_active = wanted
    persona.full_clean()
    persona.save()
    return persona, status


# --- History: revert, recover, duplicate, delete (django-reversion keeps the revisions) -------------


@transaction.atomic
def persona_revert(*, persona_pk: int, version: Version, loaded_version: int, user: User) -> PersonaConfig:
    """Put back the key, display name and config a revision holds, as a new edit (a new version, a new
    revision, the cached context forgotten on commit). ``is_active`` is left as it is: (de)activation
    has its own actions and warnings. Refused when the persona changed since ``loaded_version``."""
    fields = version.field_dict
    # The key before the row, as every write takes them (see PersonaConfigForm.clean).
    persona_key_hold(name=fields["name"])
    current = persona_version_lock(persona_pk=persona_pk)
    if current != loaded_version:
        raise ValidationError(
            f"The persona changed after you opened this page (you opened version {loaded_version}; it is "
            f"now {'deleted' if current is None else f'version {current}'}). Nothing was reverted.",
            code="stale",
        )
    _revision_config_check(fields)
    persona = PersonaConfig.objects.get(pk=persona_pk)
    persona_key_keep_check(persona_pk=persona_pk, key=persona.name, new_key=fields["name"])
    persona.name, persona.display_name = fields["name"], fields["display_name"]
    persona.config_data = fields["config_data"]
    # The config was valid when stored (an empty one too, which "blank" would refuse); the key may
    # have been taken since.
    persona.full_clean(exclude=["config_data"])
    when = timezone.localtime(version.revision.date_created).strftime("%Y-%m-%d %H:%M:%S")
    with _revision(user=user, comment=f"Reverted to the revision of {when} (version {fields['version']})."):
        persona.save()
    return persona


def _revision_config_check(fields: dict[str, Any]) -> None:
    """Refuse a revision whose config is not a JSON object: one stored (from the shell) before the
    database refused those (personas migration 0002's check constraint), which it would now refuse."""
    if not isinstance(fields.get("config_data"), dict):
        raise ValidationError(
            "This revision's config is not a JSON object (it was stored before configs had to be one), "
            "so it cannot be put back. Copy what you need from it into the persona instead.",
            code="config_not_object",
        )


@transaction.atomic
def persona_recover(*, version: Version, user: User) -> PersonaConfig:
    """Bring a deleted persona back, with its id (so its history continues) and the revision's fields.

    Its version is one above any it ever had, so no cached context or ETag of it can match."""
    if PersonaConfig.objects.filter(pk=version.object_id).exists():
        raise ValidationError("This persona exists: it was recovered already.")
    every = Version.objects.get_for_object_reference(PersonaConfig, version.object_id)
    highest = max(int(old.field_dict.get("version") or 0) for old in every)
    fields = version.field_dict
    _revision_config_check(fields)
    persona = PersonaConfig(
        pk=int(version.object_id),
        name=fields["name"],
        display_name=fields["display_name"],
        config_data=fields["config_data"],
        is_active=fields["is_active"],
        version=highest + 1,
    )
    # The fields were valid when stored; what may have changed since is whether the key is free (held
    # until the commit: a persona given it at the same moment waits, or is waited for, then refused).
    persona_key_hold(name=persona.name)
    persona.validate_unique()
    with _revision(user=user, comment="Recovered after deletion."):
        persona.save(force_insert=True)
    return persona


@transaction.atomic
def personas_duplicate(*, personas: Iterable[PersonaConfig], user: User) -> list[PersonaConfig]:
    """An inactive copy of each persona under a fresh key (``<key>-copy``, ``-copy-2``...), one revision."""
    personas = list(personas)
    for stem in sorted({_copy_stem(persona.name) for persona in personas}):  # in one order: no deadlock
        persona_key_hold(name=stem)
    copies = []
    with _revision(user=user, comment="Duplicated."):
        for persona in personas:
            duplicate = PersonaConfig(
                name=_copy_name(persona.name),
                display_name=_copy_display_name(persona.display_name),
                config_data=copy.deepcopy(persona.config_data),
                is_active=False,
            )
            duplicate.full_clean(exclude=["config_data"])  # a copy of a stored config
            duplicate.save()
            copies.append(duplicate)
    return copies


def _copy_display_name(display_name: str) -> str:
    # At most 200 characters: a long name is shortened, not " (copy)", which tells the two apart.
    suffix = " (copy)"
    return f"{display_name[: 200 - len(suffix)].rstrip()}{suffix}"


def _copy_stem(name: str) -> str:
    # Keys are at most 100 characters; room is kept for "-copy-NNNN".
    return f"{name[:85]}-copy"


def _copy_name(name: str) -> str:
    # Its stem is held until the copy is committed (personas_duplicate): a copy being made of the same
    # persona at the same moment waits, then finds this one's key taken and takes the next (both took
    # the same key: a 500).
    stem = _copy_stem(name)
    taken = set(PersonaConfig.objects.filter(name__startswith=stem).values_list("name", flat=True))
    candidates = (stem if number == 1 else f"{stem}-{number}" for number in range(1, len(taken) + 2))
    return next(candidate for candidate in candidates if candidate not in taken)


@transaction.atomic
def personas_delete(*, personas: Iterable[PersonaConfig], user: User) -> None:
    """Delete personas, first recording their last state as a revision so they can be recovered.

    The revision is saved before the rows go: django-reversion keeps only versions of rows that exist
    when the revision block ends. Raises ProtectedError (nothing deleted) if one of them is cast."""
    personas = list(personas)
    # Locked first, so that a story save casting one of them (which holds it: stories.services) commits
    # before the check for casts below; the delete is then refused with ProtectedError, the persona
    # being cast. Unlocked, the check missed that cast and the save failed at its commit instead.
    list(PersonaConfig.objects.select_for_update().filter(pk__in=[p.pk for p in personas]).values_list("pk"))
    with _revision(user=user, comment="Deleted."):
        for persona in personas:
            reversion.add_to_revision(persona)
    PersonaConfig.objects.filter(pk__in=[persona.pk for persona in personas]).delete()

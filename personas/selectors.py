"""Reads on personas: their prompt contexts (cached), the list for pickers, one persona.

The context cache
-----------------
Each persona name has two cache entries, fetched together in one round trip (``get_many_stamped``):

- a *stamp* (``persona-stamp:<name>``): a number that ``personas.services`` increments after every
  committed edit, deletion, activation change or import of that name;
- an *entry* (``persona-context:<budget>:<name>``): the context, its token estimate, the persona's
  version and whether it is active (or that no persona has that name), tagged with the stamp that
  was current *before* the database was read.

An entry counts only while its tag equals the current stamp. Because the tag is taken before the
read and the stamp changes after the commit, an entry built from a row read before an edit
committed can never match the stamp that follows that edit: stale contexts are not served, whatever
the interleaving of readers and writers. A missing stamp (first read, eviction, flush) is replaced by
a fresh random one before the database is read, so old entries cannot match it either.

Warm: one cache round trip, no query. Cold: that same round trip (on Redis a Lua script makes the
missing stamps and reads stamps and entries at once), one query for every name missed (``name IN
(...)``, never a scan of all personas, rows read as tuples), and one ``set_many`` (one Redis command),
which under the ASGI handler runs after the response is sent (``storyproject.after_response``).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.conf import settings
from django.db.models import Count, Max, Q, QuerySet
from reversion.models import Version

from personas import cache as context_cache
from personas.cards import PersonaImport
from personas.context import context_shorten, persona_context_text
from personas.history import FieldChange, changes_abridged, persona_state, state_changes
from personas.models import PERSONA_ORDER, PersonaConfig
from storyproject import stamped_cache
from storyproject.after_response import after_response
from storyproject.diffs import DiffBudget
from storyproject.search import field_folded, text_folded, text_folded_forms, text_search_q
from storyproject.tokens import token_estimate


@dataclass(frozen=True)
class PersonaContext:
    name: str
    display_name: str
    context: str
    tokens: int
    shortened: bool
    version: int


@dataclass(frozen=True)
class PersonaContexts:
    contexts: list[PersonaContext]  # in the order asked, de-duplicated
    missing: list[str]  # unknown names
    inactive: list[str]  # known but deactivated


def persona_contexts(*, names: Sequence[str]) -> PersonaContexts:
    """Contexts for ``names`` in the order asked (duplicates dropped), with unknown and inactive names.

    At most one database query, and none when every name is cached; see the module docstring.
    """
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return PersonaContexts(contexts=[], missing=[], inactive=[])
    budget = settings.PERSONA_CONTEXT_TOKEN_BUDGET
    keys = {name: _keys(name, budget) for name in wanted}
    # Missing stamps are made fresh in the same round trip, before the database is read.
    found = stamped_cache.get_many_stamped(
        [key for pair in keys.values() for key in pair], [stamp for stamp, _ in keys.values()]
    )
    entries: dict[str, dict[str, Any]] = {}
    stamps: dict[str, int] = {}
    # Names edited in this still-open transaction are read from the database: the cache has the
    # committed text, and this transaction must see its own edit.
    pending = context_cache.pending_names()
    for name in wanted:
        if name in pending:
            continue
        stamp_key, entry_key = keys[name]
        entry = stamped_cache.entry_current(found, stamp_key, entry_key)
        if entry is not None:
            entries[name] = entry
        elif found.get(stamp_key) is not None:
            stamps[name] = found[stamp_key]
    misses = [name for name in wanted if name not in entries]
    if misses:
        entries.update(_entries_load(names=misses, stamps=stamps, keys=keys, budget=budget))
    return _contexts_assemble(wanted, entries)


def persona_context_build(*, persona: PersonaConfig, budget: int | None = None) -> PersonaContext:
    """The context of one persona as loaded, straight from its config (no cache): the admin preview."""
    budget = settings.PERSONA_CONTEXT_TOKEN_BUDGET if budget is None else budget
    text, tokens, shortened = _context_text(persona.config_data, budget)
    return PersonaContext(
        name=persona.name,
        display_name=persona.display_name,
        context=text,
        tokens=tokens,
        shortened=shortened,
        version=persona.version,
    )


def persona_list(*, search: str = "") -> QuerySet[PersonaConfig]:
    """Active personas for pickers, by display name; ``search`` matches name or display name."""
    queryset = PersonaConfig.objects.filter(is_active=True).order_by(*PERSONA_ORDER)
    search = search.strip()
    if search:
        queryset = queryset.filter(text_search_q(("name", "display_name"), search))
    return queryset


def personas_with_usage(*, queryset: QuerySet[PersonaConfig]) -> QuerySet[PersonaConfig]:
    """``queryset`` with ``story_count`` (stories that cast each persona) and ``last_used`` (the latest
    change to one of those stories; a generated version counts), in the same single query.

    Counts and dates only: nothing about the stories themselves, which belong to their writers.
    """
    # A persona is cast at most once per story (cast_unique_persona), so counting castings counts stories.
    return queryset.annotate(story_count=Count("castings"), last_used=Max("castings__story__updated_at"))


def persona_story_count(*, persona_pk: int) -> int:
    """How many stories cast the persona."""
    return int(PersonaConfig.objects.filter(pk=persona_pk).aggregate(count=Count("castings"))["count"])


def persona_get(*, name: str) -> PersonaConfig | None:
    """The persona called ``name``, active or not; ``None`` when there is none."""
    return PersonaConfig.objects.filter(name=name).first()


def _keys(name: str, budget: int) -> tuple[str, str]:
    return context_cache.stamp_key(name), context_cache.entry_key(name, budget)


def _entries_load(
    *, names: list[str], stamps: dict[str, int], keys: dict[str, tuple[str, str]], budget: int
) -> dict[str, dict[str, Any]]:
    # ``stamps`` were current before the database is read (get_many_stamped made the missing ones); a
    # name without one (the cache refused the write) is read but not cached.
    stamps = dict(stamps)
    # A name edited in this still-open transaction is read uncommitted: it must not reach the cache.
    for name in context_cache.pending_names() & set(stamps):
        del stamps[name]
    rows = _rows_fetch(names)
    entries = {name: _entry(rows.get(name), stamps.get(name), budget) for name in names}
    cacheable = {keys[name][1]: entry for name, entry in entries.items() if entry["stamp"] is not None}
    if cacheable:
        # The answer does not wait for the write: an entry counts only while its tag is the current
        # stamp, however late it lands (storyproject.after_response).
        after_response(partial(stamped_cache.set_many, cacheable, context_cache.ENTRY_TIMEOUT))
    return entries


# The columns a context is built from, read as tuples: no model instance (nor its post_init signal) per
# row, which cost more than building the context itself on a cold 50-persona read.
_ROW_FIELDS = ("name", "display_name", "config_data", "is_active", "version")
_Row = tuple[str, str, Any, bool, int]


def _rows_fetch(names: list[str]) -> dict[str, _Row]:
    # No ORDER BY: the rows are matched to the names asked, in their order, by the caller.
    rows = PersonaConfig.objects.filter(name__in=names).order_by().values_list(*_ROW_FIELDS)
    return {row[0]: row for row in rows}


def _entry(row: _Row | None, stamp: int | None, budget: int) -> dict[str, Any]:
    if row is None:
        return {"stamp": stamp, "exists": False}
    _, display_name, config, active, version = row
    text, tokens, shortened = _context_text(config, budget)
    return {
        "stamp": stamp,
        "exists": True,
        "active": active,
        "display_name": display_name,
        "context": text,
        "tokens": tokens,
        "shortened": shortened,
        "version": version,
    }


def _context_text(config: Any, budget: int) -> tuple[str, int, bool]:
    text, shortened = context_shorten(persona_context_text(config or {}), budget)
    return text, token_estimate(text), shortened


def _contexts_assemble(wanted: list[str], entries: dict[str, dict[str, Any]]) -> PersonaContexts:
    contexts, missing, inactive = [], [], []
    for name in wanted:
        entry = entries[name]
        if not entry["exists"]:
            missing.append(name)
        elif not entry["active"]:
            inactive.append(name)
        else:
            contexts.append(
                PersonaContext(
                    name=name,
                    display_name=entry["display_name"],
                    context=entry["context"],
                    tokens=entry["tokens"],
                    shortened=entry["shortened"],
                    version=entry["version"],
                )
            )
    return PersonaContexts(contexts=contexts, missing=missing, inactive=inactive)


def personas_for_export(*, names: Sequence[str] = ()) -> list[PersonaConfig]:
    """Personas to write to files: those named (active or not), or every persona when none is named."""
    personas = PersonaConfig.objects.order_by("name")
    if names:
        personas = personas.filter(name__in=set(names))
    return list(personas)


# --- History (django-reversion's revisions) and the import preview ------------------------------------

# The history page shows this many latest revisions, each diffed against the one before it.
HISTORY_MAX_REVISIONS = 200


@dataclass(frozen=True)
class PersonaRevision:
    version: Version  # django-reversion's row: its id, and its revision's date, user and comment
    persona_version: int | None  # the persona's own version number in this revision
    changes: list[FieldChange]  # against the revision before it (everything, for the first)


def persona_history(*, persona_pk: int | str) -> tuple[list[PersonaRevision], bool]:
    """The persona's latest revisions, newest first, each with what it changed; and whether older
    revisions exist beyond ``HISTORY_MAX_REVISIONS``."""
    versions = list(persona_versions(persona_pk=persona_pk).order_by("-pk")[: HISTORY_MAX_REVISIONS + 1])
    more = len(versions) > HISTORY_MAX_REVISIONS
    versions = versions[::-1][1:] if more else versions[::-1]  # oldest first; the extra one is dropped
    revisions, before, budget = [], None, DiffBudget()
    for version in versions:
        state = version_state(version=version)
        changes = state_changes(before=before, after=state, budget=budget)
        revisions.append(
            PersonaRevision(version, version.field_dict.get("version"), changes_abridged(changes))
        )
        before = state
    return revisions[::-1], more


def persona_versions(*, persona_pk: int | str) -> QuerySet[Version]:
    return Version.objects.get_for_object_reference(PersonaConfig, str(persona_pk)).select_related(
        "revision", "revision__user"
    )


def persona_version_get(*, persona_pk: int | str, version_id: int | str) -> Version | None:
    """One revision of the persona (None when that id is not one of its revisions)."""
    return persona_versions(persona_pk=persona_pk).filter(pk=version_id).first()


def persona_deleted_version_get(*, version_id: int | str) -> Version | None:
    """The last revision of a persona that no longer exists (what "recover" brings back), or None."""
    return Version.objects.get_deleted(PersonaConfig).select_related("revision").filter(pk=version_id).first()


def personas_deleted() -> QuerySet[Version]:
    """The last revision of each deleted persona, most recently deleted first."""
    return (
        Version.objects.get_deleted(PersonaConfig)
        .select_related("revision")
        .order_by("-revision__date_created")
    )


def version_state(*, version: Version) -> dict[str, str]:
    fields = version.field_dict
    return persona_state(
        name=fields.get("name", ""),
        display_name=fields.get("display_name", ""),
        is_active=bool(fields.get("is_active")),
        config_data=fields.get("config_data"),
    )


def persona_current_state(*, persona: PersonaConfig) -> dict[str, str]:
    return persona_state(
        name=persona.name,
        display_name=persona.display_name,
        is_active=persona.is_active,
        config_data=persona.config_data,
    )


@dataclass(frozen=True)
class ImportPlan:
    name: str
    display_name: str
    status: str  # "new", "updated" or "unchanged"
    changes: list[FieldChange]
    version: int | None  # the stored persona's version the plan was made from (None: new)
    # Stories that cast the persona when the import deactivates it (0 otherwise): generating them fails.
    deactivated_stories: int = 0

    @property
    def label(self) -> str:
        """As the persona will be named (``PersonaConfig.__str__``): a card's right-to-left name isolated."""
        return str(PersonaConfig(name=self.name, display_name=self.display_name))


def persona_import_plan(*, personas: Sequence[PersonaImport]) -> list[ImportPlan]:
    """What importing ``personas`` would do to each, against the stored personas: one query."""
    # With their usage: deactivating a persona that stories cast is said before it is done, as the
    # admin's deactivate action and change page do.
    found = PersonaConfig.objects.filter(name__in=[i.name for i in personas])
    stored = {p.name: p for p in personas_with_usage(queryset=found)}
    plans, budget = [], DiffBudget()
    for imported in personas:
        persona = stored.get(imported.name)
        after = persona_state(
            name=imported.name,
            display_name=imported.display_name,
            is_active=imported.active_after(persona),
            config_data=imported.config_data,
        )
        before = persona_current_state(persona=persona) if persona is not None else None
        changes = state_changes(before=before, after=after, budget=budget)
        status = "new" if persona is None else ("updated" if changes else "unchanged")
        version = persona.version if persona is not None else None
        deactivates = persona is not None and persona.is_active and not imported.active_after(persona)
        used = persona.story_count if deactivates else 0  # type: ignore[union-attr]
        plans.append(ImportPlan(imported.name, imported.display_name, status, changes, version, used))
    return plans


def persona_matches(*, names: Sequence[str]) -> dict[str, PersonaConfig | None]:
    """For each character name, the active persona it names, by display name or key, ignoring case.

    A cue's extension is ignored ("BOB (V.O.)" matches Bob). One query, bounded by the names asked for.
    Names are compared as the search compares them (``storyproject.search``): a cue or a display name
    typed decomposed (NFD) matches its composed form, and Greek and Turkish capitals match alike on both
    databases.
    """
    keys = {name: _match_key(name.split("(", 1)[0].strip()) for name in names}
    wanted = sorted(
        {form for name in names for form in text_folded_forms(name.split("(", 1)[0].strip()) if form}
    )
    if not wanted:
        return dict.fromkeys(names)
    candidates = PersonaConfig.objects.filter(is_active=True).annotate(
        key=field_folded("name"), shown=field_folded("display_name")
    )
    found: dict[str, PersonaConfig] = {}
    for persona in candidates.filter(Q(key__in=wanted) | Q(shown__in=wanted)).order_by(*PERSONA_ORDER):
        found.setdefault(_match_key(persona.display_name), persona)
        found.setdefault(_match_key(persona.name), persona)
    return {name: found.get(key) for name, key in keys.items()}


def _match_key(name: str) -> str:
    return text_folded(unicodedata.normalize("NFC", name))

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
(...)``, never a scan of all personas), and one ``set_many``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import Count, Max, Q, QuerySet

from personas import cache as context_cache
from personas.context import context_shorten, persona_context_text
from personas.models import PersonaConfig
from storyproject import stamped_cache
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
        entries.update(_entries_load(names=misses, stamps=stamps, budget=budget))
    return _contexts_assemble(wanted, entries)


def persona_context_build(*, persona: PersonaConfig, budget: int | None = None) -> PersonaContext:
    """The context of one persona as loaded, straight from its config (no cache): the admin preview."""
    budget = settings.PERSONA_CONTEXT_TOKEN_BUDGET if budget is None else budget
    text, shortened = context_shorten(persona_context_text(persona.config_data or {}), budget)
    return PersonaContext(
        name=persona.name,
        display_name=persona.display_name,
        context=text,
        tokens=token_estimate(text),
        shortened=shortened,
        version=persona.version,
    )


def persona_list(*, search: str = "") -> QuerySet[PersonaConfig]:
    """Active personas for pickers, by display name; ``search`` matches name or display name."""
    queryset = PersonaConfig.objects.filter(is_active=True).order_by("display_name", "name")
    search = search.strip()
    if search:
        queryset = queryset.filter(Q(name__icontains=search) | Q(display_name__icontains=search))
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


def _entries_load(*, names: list[str], stamps: dict[str, int], budget: int) -> dict[str, dict[str, Any]]:
    # ``stamps`` were current before the database is read (get_many_stamped made the missing ones); a
    # name without one (the cache refused the write) is read but not cached.
    stamps = dict(stamps)
    # A name edited in this still-open transaction is read uncommitted: it must not reach the cache.
    for name in context_cache.pending_names() & set(stamps):
        del stamps[name]
    rows = {persona.name: persona for persona in _personas_fetch(names)}
    entries = {name: _entry(rows.get(name), stamps.get(name), budget) for name in names}
    cacheable = {
        context_cache.entry_key(name, budget): entry
        for name, entry in entries.items()
        if entry["stamp"] is not None
    }
    stamped_cache.set_many(cacheable, context_cache.ENTRY_TIMEOUT)
    return entries


def _personas_fetch(names: Iterable[str]) -> QuerySet[PersonaConfig]:
    fields = ["name", "display_name", "config_data", "is_active", "version"]
    # No ORDER BY: the rows are matched to the names asked, in their order, by the caller.
    return PersonaConfig.objects.filter(name__in=list(names)).only(*fields).order_by()


def _entry(persona: PersonaConfig | None, stamp: int | None, budget: int) -> dict[str, Any]:
    if persona is None:
        return {"stamp": stamp, "exists": False}
    context = persona_context_build(persona=persona, budget=budget)
    return {
        "stamp": stamp,
        "exists": True,
        "active": persona.is_active,
        "display_name": context.display_name,
        "context": context.context,
        "tokens": context.tokens,
        "shortened": context.shortened,
        "version": context.version,
    }


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

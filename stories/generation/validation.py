"""The contract check: what the model wrote against the schema, its cast and the chosen personas.

One place for every mode: a whole screenplay (``screenplay_validate``, before any save), parallel
mode's outline and each of its scenes (stories.generation.outline). Every failure is a
GenerationError("invalid_output") that says where.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator

from stories.errors import GenerationError
from stories.generation.prompt import screenplay_schema
from stories.validation import character_key
from storyproject.bidi import bidi_isolated
from storyproject.schema_errors import schema_error_cause, schema_error_message
from storyproject.untrusted import json_value_problem


@dataclass(frozen=True)
class CastEntry:
    persona: str
    character_name: str
    order: int


@cache
def _validator(schema: Callable[[], dict[str, Any]]) -> Draft202012Validator:
    return Draft202012Validator(schema())


@cache
def _fast_validator(schema: Callable[[], dict[str, Any]]) -> jsonschema_rs.Draft202012Validator:
    return jsonschema_rs.Draft202012Validator(schema())


def _valid_fast(document: Any, schema: Callable[[], dict[str, Any]]) -> bool:
    """True when jsonschema-rs finds ``document`` valid: 100-300 times cheaper than jsonschema's walk
    (a 2-scene screenplay 1.7 ms against 6 µs, an 8-scene one 8 ms against 25 µs), the same draft
    2020-12. Only its "valid" is taken; anything else (invalid, or a value it cannot read, such as a
    lone surrogate) goes to jsonschema, whose answer and message stand, so the check decides as
    jsonschema does (tests/stories/generation/test_validation_fast.py compares the two)."""
    try:
        return bool(_fast_validator(schema).is_valid(document))
    except Exception:  # a value Rust cannot take (an integer past 64 bits...): jsonschema decides
        return False


def schema_check(
    *, document: Any, schema: Callable[[], dict[str, Any]], what: str, code: str = "invalid_output"
) -> None:
    """Raise unless ``document`` matches ``schema()``, naming the first place it does not.

    ``code`` is "invalid_output" for what a model wrote, "invalid_request" for what a writer sent.
    """
    error = (
        None if _valid_fast(document, schema) else next(iter(_validator(schema).iter_errors(document)), None)
    )
    if error is not None:
        error = schema_error_cause(error)
        where = "/".join(str(part) for part in error.absolute_path) or f"the {what}"
        raise GenerationError(
            code, f"{_author(code)} an invalid {what} at {where}: {schema_error_message(error)[:300]}"
        )
    storable_check(document=document, what=what, code=code)


def storable_check(*, document: Any, what: str, code: str = "invalid_output") -> None:
    """Raise unless the database can store ``document`` (no NUL, which JSON's "\\u0000" makes and
    PostgreSQL refuses in jsonb; no lone surrogate; no number JSON cannot write), naming where."""
    problem = json_value_problem(document)
    if problem is not None:
        raise GenerationError(code, f"{_author(code)} an invalid {what}: {problem}")


def _author(code: str) -> str:
    return "the model wrote" if code == "invalid_output" else "this is"


def speakers_check(
    *, elements: Iterable[dict[str, Any]], names: set[str], what: str, code: str = "invalid_output"
) -> None:
    """Raise if a line of dialogue goes to a character who is not in the cast list."""
    for element in elements:
        if element["type"] == "dialogue" and element["character"] not in names:
            raise GenerationError(
                code,
                f"{what} gives a line to '{bidi_isolated(element['character'][:80])}', who is not in the cast list",
            )


def personas_check(
    *,
    characters: Iterable[dict[str, Any]],
    persona_names: Sequence[str],
    what: str,
    code: str = "invalid_output",
    chosen: str = "chosen personas",
) -> None:
    """Raise if a character is played by a persona the writer did not choose.

    A character without a persona (``persona`` missing or null: one a writer added by hand) passes.
    """
    selected = set(persona_names)
    for character in characters:
        persona = character.get("persona")
        if persona is not None and persona not in selected:
            raise GenerationError(code, f"{what} casts {persona[:100]!r}, which is not one of the {chosen}")


def screenplay_validate(
    *, content: Any, persona_names: Sequence[str], code: str = "invalid_output"
) -> list[CastEntry]:
    """Raise GenerationError(code) unless ``content`` is a screenplay we can save; return its cast.

    For a generation, ``persona_names`` are the personas the writer chose and the model may cast only
    those; for a writer's own version (``code="invalid_request"``), the active personas it names.
    """
    schema_check(document=content, schema=screenplay_schema, what="screenplay", code=code)
    characters = content.get("characters", [])
    names = {character["name"] for character in characters}
    for scene in content["scenes"]:
        speakers_check(elements=scene["elements"], names=names, what="the screenplay", code=code)
    chosen = "chosen personas" if code == "invalid_output" else "active personas"
    personas_check(
        characters=characters, persona_names=persona_names, what="the screenplay", code=code, chosen=chosen
    )
    return cast_entries(characters, persona_names)


def characters_merged(content: dict[str, Any]) -> dict[str, Any]:
    """``content`` (a model's screenplay, valid by the schema) with each character listed under two
    spellings ("SAM SPADE" and "Sam Spade": ``stories.validation.character_key``) made one, as first
    listed: its persona and description, else the other's, and every line of the other's given to it.
    A page and every export print both cues alike, so they are one character. Two spellings played by
    two different personas are left as they are (merged, one persona would lose its part)."""
    characters = content.get("characters") or []
    first: dict[str, dict[str, Any]] = {}
    renamed: dict[str, str] = {}
    kept: list[dict[str, Any]] = []
    for character in characters:
        key = character_key(character["name"])
        earlier = first.get(key)
        persona, earlier_persona = character.get("persona"), (earlier or {}).get("persona")
        if earlier is None or (
            persona is not None and earlier_persona is not None and persona != earlier_persona
        ):
            first.setdefault(key, character)
            kept.append(character)
            continue
        merged = {**character, **{name: value for name, value in earlier.items() if value is not None}}
        kept[kept.index(earlier)] = first[key] = merged
        renamed[character["name"]] = earlier["name"]
    if not renamed:
        return content
    scenes = [
        {**scene, "elements": [_cue_renamed(element, renamed) for element in scene["elements"]]}
        for scene in content["scenes"]
    ]
    return {**content, "characters": kept, "scenes": scenes}


def _cue_renamed(element: dict[str, Any], renamed: dict[str, str]) -> dict[str, Any]:
    if element.get("type") != "dialogue" or element.get("character") not in renamed:
        return element
    return {**element, "character": renamed[element["character"]]}


def cast_entries(characters: list[dict[str, Any]], persona_names: Sequence[str]) -> list[CastEntry]:
    """One cast member per selected persona that plays a part, in the order the personas were chosen."""
    played: dict[str, str] = {}
    for character in characters:
        if character.get("persona") is not None:
            played.setdefault(character["persona"], character["name"])
    ordered = [name for name in persona_names if name in played]
    return [CastEntry(persona=name, character_name=played[name], order=i) for i, name in enumerate(ordered)]

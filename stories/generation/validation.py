"""Checking a finished screenplay against the contract before it may be saved."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator

from stories.generation.errors import GenerationError
from stories.generation.prompt import screenplay_schema


@dataclass(frozen=True)
class CastEntry:
    persona: str
    character_name: str
    order: int


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(screenplay_schema())


def screenplay_validate(*, content: Any, persona_names: Sequence[str]) -> list[CastEntry]:
    """Raise GenerationError("invalid_output") unless ``content`` is a screenplay we can save; return its cast."""
    error = next(iter(_validator().iter_errors(content)), None)
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "the screenplay"
        raise GenerationError(
            "invalid_output", f"the model wrote an invalid screenplay at {where}: {error.message[:300]}"
        )
    names = {character["name"] for character in content.get("characters", [])}
    for scene in content["scenes"]:
        for element in scene["elements"]:
            if element["type"] == "dialogue" and element["character"] not in names:
                raise GenerationError(
                    "invalid_output",
                    f"the model gave a line to {element['character'][:80]!r}, who is not in the cast list",
                )
    return _cast(content.get("characters", []), persona_names)


def _cast(characters: list[dict[str, Any]], persona_names: Sequence[str]) -> list[CastEntry]:
    """One cast member per selected persona that plays a part, in the order the personas were chosen."""
    selected = set(persona_names)
    played: dict[str, str] = {}
    for character in characters:
        persona = character.get("persona")
        if persona is None:
            continue
        if persona not in selected:
            raise GenerationError(
                "invalid_output", f"the model cast {persona[:100]!r}, which is not one of the chosen personas"
            )
        played.setdefault(persona, character["name"])
    ordered = [name for name in persona_names if name in played]
    return [CastEntry(persona=name, character_name=played[name], order=i) for i, name in enumerate(ordered)]

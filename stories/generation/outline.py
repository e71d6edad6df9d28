"""The outline of parallel mode: title, logline, cast and one line per scene, written before any scene.

Every scene call is given the whole outline, so scenes written at the same time still agree on who is
who and what happens where. An outline can also be rebuilt from a saved screenplay, which is how one
scene of a saved version is rewritten with the same context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.conf import settings

from stories.errors import GenerationError
from stories.generation.prompt import schema_require_all, screenplay_schema
from stories.generation.validation import personas_check, schema_check, speakers_check


@dataclass(frozen=True)
class OutlineScene:
    heading: str
    summary: str
    characters: tuple[str, ...]
    change: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "heading": self.heading,
            "summary": self.summary,
            "characters": list(self.characters),
            "change": self.change,
        }


@dataclass(frozen=True)
class Outline:
    title: str
    logline: str
    characters: tuple[dict[str, Any], ...]
    scenes: tuple[OutlineScene, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "logline": self.logline,
            "characters": [dict(character) for character in self.characters],
            "scenes": [scene.as_dict() for scene in self.scenes],
        }

    def character_names(self) -> set[str]:
        return {character["name"] for character in self.characters}


def outline_schema() -> dict[str, Any]:
    """What the outline call replies: the screenplay's header and one entry per scene, no elements."""
    contract = screenplay_schema()["properties"]
    scene = {
        "type": "object",
        "required": ["heading", "summary", "characters", "change"],
        "additionalProperties": False,
        "properties": {
            "heading": contract["scenes"]["items"]["properties"]["heading"],
            "summary": {"type": "string", "minLength": 1, "maxLength": 1000},
            "characters": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 80}},
            "change": {"type": "string", "maxLength": 1000},
        },
    }
    return {
        "type": "object",
        "required": ["title", "logline", "characters", "scenes"],
        "additionalProperties": False,
        "properties": {
            "title": contract["title"],
            "logline": contract["logline"],
            "characters": contract["characters"],
            "scenes": {"type": "array", "minItems": 1, "items": scene},
        },
    }


def scene_schema() -> dict[str, Any]:
    """What a scene call replies: one scene of the contract."""
    return screenplay_schema()["properties"]["scenes"]["items"]


@cache
def parallel_step_schema() -> dict[str, Any]:
    """What every call of parallel mode replies, outline and scene calls alike: one of the two, the other null.

    One schema for both steps because a different ``output_config.format`` misses the prompt cache (the
    structured-outputs page: changing the format invalidates the cache; on Bedrock, a changed schema
    alone misses it), and the scene calls should read the prefix the outline call wrote. Every field is
    required, so the model writes them in the order we need (cache_rules and prompt.schema_require_all).
    """
    return {
        "type": "object",
        "required": ["outline", "scene"],
        "additionalProperties": False,
        "properties": {
            "outline": {"anyOf": [schema_require_all(outline_schema()), {"type": "null"}]},
            "scene": {"anyOf": [schema_require_all(scene_schema()), {"type": "null"}]},
        },
    }


def step_part(*, document: Any, part: str) -> Any:
    """The outline or the scene of a step reply (``{"outline": ..., "scene": ...}``).

    A bare outline or scene (the offline back-end, or a model that ignored the wrapper) is taken as is.
    """
    if isinstance(document, dict) and document and set(document) <= {"outline", "scene"}:
        return document.get(part)
    return document


def outline_parse(*, document: Any, persona_names: Sequence[str]) -> Outline:
    """Check the model's outline; raise GenerationError("invalid_output") saying what is wrong."""
    schema_check(document=document, schema=outline_schema, what="outline")
    limit = settings.STORY_PARALLEL_MAX_SCENES
    if len(document["scenes"]) > limit:
        raise GenerationError(
            "invalid_output", f"the outline has {len(document['scenes'])} scenes; at most {limit} are allowed"
        )
    personas_check(characters=document["characters"], persona_names=persona_names, what="the outline")
    names = {character["name"] for character in document["characters"]}
    scenes = tuple(
        OutlineScene(
            heading=scene["heading"],
            summary=scene["summary"],
            # A scene may list an extra (a waiter, a crowd); only the cast's names guide the writing.
            characters=tuple(name for name in dict.fromkeys(scene["characters"]) if name in names),
            change=scene["change"],
        )
        for scene in document["scenes"]
    )
    return Outline(
        title=document["title"],
        logline=document["logline"],
        characters=tuple(document["characters"]),
        scenes=scenes,
    )


def outline_from_screenplay(*, content: dict[str, Any]) -> Outline:
    """The outline a saved screenplay implies: its header, and each scene's heading, summary and speakers."""
    scenes = []
    for scene in content["scenes"]:
        speakers = [e["character"] for e in scene.get("elements", []) if e.get("type") == "dialogue"]
        first_action = next((e["text"] for e in scene.get("elements", []) if e.get("type") == "action"), "")
        scenes.append(
            OutlineScene(
                heading=scene["heading"],
                summary=(scene.get("summary") or first_action or scene["heading"])[:1000],
                characters=tuple(dict.fromkeys(speakers)),
                change="",
            )
        )
    return Outline(
        title=content.get("title", ""),
        logline=content.get("logline", ""),
        characters=tuple(content.get("characters", [])),
        scenes=tuple(scenes),
    )


def scene_check(*, document: Any, outline: Outline, index: int) -> dict[str, Any]:
    """Check one written scene against the contract and the outline's cast; return it as it will be saved."""
    schema_check(document=document, schema=scene_schema, what=f"scene {index + 1}")
    speakers_check(elements=document["elements"], names=outline.character_names(), what=f"scene {index + 1}")
    planned = outline.scenes[index]
    # The outline's heading and summary are the plan every other scene was written against.
    return {
        "heading": document.get("heading") or planned.heading,
        "summary": planned.summary,
        "elements": document["elements"],
    }

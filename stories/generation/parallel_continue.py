"""Parallel mode's answer to a step cut off at max_tokens: keep its whole items and ask for the rest.

Like single mode's continuation (stories.generation.single), the reply so far goes back as a finished assistant
turn, with the same system prompt and output schema (so the cached prefix still holds), and a user turn
asks for the step object again: the same header (title, logline and cast; or a scene's heading and
summary) and only the items after those already kept (outline entries, or a scene's elements). The
last item of a cut reply may itself be cut, so it is always dropped and written again.
"""

from __future__ import annotations

import json
from typing import Any

import jiter

from stories.errors import GenerationError
from stories.generation.outline import step_part
from stories.generation.prompt import Prompt
from stories.generation.stream import characters_merge, screenplay_text_parse

# The list each step's reply grows: an outline's scene entries, a scene's elements.
_ITEMS = {"outline": "scenes", "scene": "elements"}
_ITEM_NAMES = {"outline": "scene entries", "scene": "elements"}
_HEADERS = {"outline": "the same title, logline and every character", "scene": "the same heading and summary"}


def part_stitch(sofar: dict[str, Any] | None, text: str, *, part: str) -> dict[str, Any]:
    """The part so far with what a reply cut at max_tokens completed (its header, its whole items)."""
    key = _ITEMS[part]
    start = text.find("{")
    try:
        parsed = jiter.from_json(text[max(start, 0) :].encode(), partial_mode=True) if start >= 0 else None
    except ValueError:
        parsed = None
    document = step_part(document=parsed, part=part)
    piece: dict[str, Any] = {}
    if isinstance(document, dict) and isinstance(document.get(key), list):
        piece = {**document, key: document[key][:-1]}
    merged = part_merge(sofar, piece, part=part) if sofar is not None else piece
    if len(merged.get(key, [])) <= len((sofar or {}).get(key, [])):
        raise GenerationError(
            "invalid_output",
            f"the output limit cut the {part} off before a whole one of its {_ITEM_NAMES[part]}; "
            "raise max_tokens",
        )
    return merged


def part_merge(sofar: dict[str, Any], document: Any, *, part: str) -> dict[str, Any]:
    """The earlier parts' header and items, then a continuation's new items (and, for an outline, cast)."""
    key = _ITEMS[part]
    later = document if isinstance(document, dict) else {}
    merged = {**later, **{name: value for name, value in sofar.items() if name != key}}
    if part == "outline":
        merged["characters"] = characters_merge(sofar.get("characters", []), later.get("characters"))
    new_items = later.get(key)
    merged[key] = [*sofar.get(key, []), *(new_items if isinstance(new_items, list) else [])]
    return merged


def part_continue_prompt(*, prompt: Prompt, sofar: dict[str, Any], part: str) -> Prompt:
    """The prompt for the rest of a cut-off step: the step's own prompt, what was kept, and the ask."""
    key, done = _ITEMS[part], len(sofar.get(_ITEMS[part], []))
    ask = (
        f"Your reply was cut off by the output limit after {done} complete {_ITEM_NAMES[part]}. Continue "
        f'it: reply with the whole JSON object again, with {_HEADERS[part]}, and in "{key}" only the '
        f"{_ITEM_NAMES[part]} after the first {done}, to the end. Reply with the JSON object only."
    )
    kept = json.dumps({"outline": None, "scene": None, part: sofar}, ensure_ascii=False)
    messages = [prompt.messages[0], {"role": "assistant", "content": kept}, {"role": "user", "content": ask}]
    return Prompt(system=prompt.system, messages=messages)


def part_parse(text: str, *, part: str, sofar: dict[str, Any] | None, what: str) -> Any:
    """A finished step reply's outline or scene, merged with what earlier replies cut at max_tokens kept."""
    try:
        document = step_part(document=screenplay_text_parse(text), part=part)
    except ValueError as error:
        raise GenerationError("invalid_output", f"{what} is not valid JSON: {error}") from None
    return document if sofar is None else part_merge(sofar, document, part=part)

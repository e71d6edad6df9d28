"""Screenplays of a chosen size for the benchmarks, valid against contract/screenplay.schema.json.

The fake model server writes them and the save benchmark stores them. The text is plain English of a
realistic density (about four characters a token), so token counts and stream times are realistic.
"""

from __future__ import annotations

import json
import re
from typing import Any

_ACTION = (
    "Rain needles the window. {who} crosses the room, stops at the desk and turns over the photograph "
    "nobody was meant to find."
)
_LINES = (
    "You kept this for ten years and never said a word to me.",
    "I kept it because I was afraid of what it would mean if I threw it away.",
    "Then tell me now, before the others get here and the story changes again.",
    "Some stories are safer unfinished. This is one of them, believe me.",
)
_MARKER = re.compile(r"BENCH\[id=([\w-]+);personas=([\w,.-]*);scenes=(\d+);lines=(\d+)\]")


def marker(*, run_id: str, personas: list[str], scenes: int, lines: int) -> str:
    """The tag a benchmark puts in a plot, so that the fake model writes the matching screenplay."""
    return f"BENCH[id={run_id};personas={','.join(personas)};scenes={scenes};lines={lines}]"


def marker_parse(text: str) -> tuple[str, list[str], int, int] | None:
    found = _MARKER.search(text)
    if found is None:
        return None
    run_id, personas, scenes, lines = found.groups()
    return run_id, [p for p in personas.split(",") if p], int(scenes), int(lines)


def screenplay_build(*, personas: list[str], scenes: int, lines: int) -> dict[str, Any]:
    """A screenplay with one character per persona, ``scenes`` scenes of ``lines`` dialogue lines each."""
    characters: list[dict[str, Any]] = [
        {
            "name": f"CHARACTER {index + 1}",
            "persona": name,
            "description": "A tired witness who knows more than they say, and says it slowly.",
        }
        for index, name in enumerate(personas)
    ] or [{"name": "NARRATOR", "persona": None, "description": "The voice that tells it."}]
    names = [character["name"] for character in characters]
    return {
        "title": "The Photograph",
        "logline": "An old photograph brings a family's buried promise back into the light.",
        "characters": characters,
        "scenes": [_scene(index, names, lines) for index in range(scenes)],
    }


def _scene(index: int, names: list[str], lines: int) -> dict[str, Any]:
    elements: list[dict[str, Any]] = [
        {"type": "action", "text": _ACTION.format(who=names[index % len(names)])}
    ]
    for line in range(lines):
        elements.append(
            {
                "type": "dialogue",
                "character": names[(index + line) % len(names)],
                "text": _LINES[line % len(_LINES)],
            }
        )
    elements.append({"type": "transition", "text": "CUT TO:"})
    return {
        "heading": f"INT. HOUSE ON THE HILL, ROOM {index + 1} - NIGHT",
        "summary": "The photograph changes hands, and with it the story everyone agreed to tell.",
        "elements": elements,
    }


def screenplay_text(screenplay: dict[str, Any]) -> tuple[str, int]:
    """The JSON the model writes, and the offset just past its first scene (where a parser sees it whole)."""
    text = json.dumps(screenplay, ensure_ascii=False)
    first = json.dumps(screenplay["scenes"][0], ensure_ascii=False)
    return text, text.index(first) + len(first)

"""The offline model's outline and scene calls (parallel mode), so that mode also runs without a key.

The outline is the offline screenplay's header and scene plan; a scene is written from its outline entry
(the plot sentence it stands for and the characters present), so a rewritten outline or a writer's
instructions change what the scene says. Same pacing and max_tokens behaviour as the whole-screenplay call.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator
from typing import Any

from stories.generation.backends.base import BackendEvent, Brief, ModelCall
from stories.generation.backends.offline_screenplay import (
    offline_document_stream,
    offline_screenplay,
    plot_words,
)

_OPENERS = [
    "We don't have long.",
    "You heard me.",
    "I keep thinking about it.",
    "Tell me I'm wrong.",
    "Then we do it my way.",
    "Not like this.",
]
_PARENTHETICALS = ["quietly", "beat", "firmly", "smiling"]


async def offline_part_stream(call: ModelCall) -> AsyncIterator[BackendEvent]:
    brief = call.brief
    document = offline_outline(brief) if brief.task == "outline" else offline_scene(brief)
    if brief.continue_after:
        # A continuation after max_tokens: the same header, only the items not yet kept.
        items = "scenes" if brief.task == "outline" else "elements"
        document = {**document, items: document[items][brief.continue_after :]}
    async for event in offline_document_stream(call, document):
        yield event


def offline_outline(brief: Brief) -> dict[str, Any]:
    screenplay = offline_screenplay(brief)
    scenes = []
    for scene in screenplay["scenes"]:
        speakers = [e["character"] for e in scene["elements"] if e["type"] == "dialogue"]
        scenes.append(
            {
                "heading": scene["heading"],
                "summary": scene["summary"],
                "characters": list(dict.fromkeys(speakers)),
                "change": "Nothing is the same afterwards.",
            }
        )
    return {
        "title": screenplay["title"],
        "logline": screenplay["logline"],
        "characters": screenplay["characters"],
        "scenes": scenes,
    }


def offline_scene(brief: Brief) -> dict[str, Any]:
    outline = brief.outline or {"characters": [], "scenes": [{"heading": "INT. ROOM - DAY", "summary": ""}]}
    planned = outline["scenes"][brief.scene_index]
    seed = hashlib.sha256(f"{brief.scene_index}\n{planned}\n{brief.instructions}".encode()).hexdigest()
    rng = random.Random(seed)
    names = [c["name"] for c in outline["characters"]]
    speakers = [name for name in planned.get("characters", []) if name in names] or names
    summary = planned.get("summary") or planned["heading"]
    elements: list[dict[str, Any]] = [{"type": "action", "text": summary[:5000]}]
    if brief.instructions:
        elements.append({"type": "action", "text": f"This time: {brief.instructions[:4000]}"})
    for turn in range(min(4, 2 * len(speakers))):
        line: dict[str, Any] = {"type": "dialogue", "character": speakers[turn % len(speakers)]}
        if rng.random() < 0.25:
            line["parenthetical"] = rng.choice(_PARENTHETICALS)
        line["text"] = f"{rng.choice(_OPENERS)} {_idea(rng, summary)}"
        elements.append(line)
    if brief.scene_index == len(outline["scenes"]) - 1:
        elements.append({"type": "transition", "text": "FADE OUT."})
    return {"heading": planned["heading"], "summary": summary[:1000], "elements": elements}


def _idea(rng: random.Random, beat: str) -> str:
    words = [w for w in plot_words(beat) if len(w) > 3]
    return f"This is about the {rng.choice(words).lower()}." if words else "It matters."

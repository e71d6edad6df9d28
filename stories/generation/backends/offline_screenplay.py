"""The offline model's screenplay: no network, no key; a plausible screenplay from the plot and the personas.

It is a development and demo aid, not an AI: the scenes follow the plot's sentences and the personas
speak in turn. It streams at ``STORY_OFFLINE_TOKENS_PER_SECOND`` and honours max_tokens the way a real
model does (stop_reason "max_tokens"), so continuation works the same with it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from collections.abc import AsyncGenerator
from typing import Any

from django.conf import settings

from stories.generation.backends.base import (
    BackendEvent,
    Brief,
    CallFinished,
    ModelCall,
    TextDelta,
    Usage,
)
from storyproject.tokens import text_within_tokens, token_estimate

_DELTA_CHARS = 12
_PLACES = [
    "INT. KITCHEN",
    "EXT. CITY STREET",
    "INT. OFFICE",
    "EXT. ROOFTOP",
    "INT. TRAIN CARRIAGE",
    "EXT. HARBOUR",
    "INT. BACK ROOM",
    "EXT. PARK",
]
_TIMES = ["DAY", "NIGHT", "DUSK", "MORNING"]
_LINES = [
    "We don't have long. {idea}",
    "You heard me. {idea}",
    "I keep thinking about it. {idea}",
    "Tell me I'm wrong. {idea}",
    "Then we do it my way. {idea}",
    "Not like this. {idea}",
]
_PARENTHETICALS = ["quietly", "beat", "to herself", "firmly", "smiling"]


async def offline_document_stream(
    call: ModelCall, document: dict[str, Any]
) -> AsyncGenerator[BackendEvent, None]:
    """Stream ``document`` as JSON text, paced like a model and cut at max_tokens like one."""
    whole = json.dumps(document, ensure_ascii=False)
    text = text_within_tokens(whole, call.max_tokens)
    truncated = len(text) < len(whole)
    rate = settings.STORY_OFFLINE_TOKENS_PER_SECOND
    for start in range(0, len(text), _DELTA_CHARS):
        delta = text[start : start + _DELTA_CHARS]
        if rate:
            await asyncio.sleep(token_estimate(delta) / rate)
        yield TextDelta(delta)
    prompt_text = json.dumps([call.system, call.messages])
    usage = Usage(input_tokens=token_estimate(prompt_text), output_tokens=token_estimate(text))
    yield CallFinished(stop_reason="max_tokens" if truncated else "end_turn", usage=usage)


def offline_screenplay(brief: Brief) -> dict[str, Any]:
    """A screenplay that matches the contract, the same every time for the same brief."""
    seed = hashlib.sha256(f"{brief.title}\n{brief.plot}".encode()).hexdigest()
    rng = random.Random(seed)
    characters = [
        {
            "name": _character_name(member.display_name),
            "persona": member.name,
            "description": _first(member.context),
        }
        for member in brief.cast
    ]
    beats = _beats(brief.plot)
    scenes = [_scene(rng, index, beat, characters) for index, beat in enumerate(beats)]
    scenes[-1]["elements"].append({"type": "transition", "text": "FADE OUT."})
    title = brief.title or _title_from(brief.plot)
    return {
        "title": title[:200],
        "logline": _first(brief.plot)[:1000],
        "characters": [{key: value for key, value in c.items() if value} for c in characters],
        "scenes": scenes,
    }


def _scene(rng: random.Random, index: int, beat: str, characters: list[dict[str, Any]]) -> dict[str, Any]:
    heading = f"{rng.choice(_PLACES)} - {rng.choice(_TIMES)}"
    elements: list[dict[str, Any]] = [{"type": "action", "text": beat[:5000]}]
    # No cast (a request that names no persona, as claude_check's against the fake server): action alone.
    turn_at = index % len(characters) if characters else 0
    speakers = characters[turn_at:] + characters[:turn_at]
    for turn in range(min(4, 2 * len(speakers))):
        speaker = speakers[turn % len(speakers)]
        line: dict[str, Any] = {"type": "dialogue", "character": speaker["name"]}
        if rng.random() < 0.25:
            line["parenthetical"] = rng.choice(_PARENTHETICALS)
        line["text"] = rng.choice(_LINES).format(idea=_idea(rng, beat))
        elements.append(line)
    return {"heading": heading, "summary": beat[:1000], "elements": elements}


def _beats(plot: str) -> list[str]:
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", plot) if s.strip()]
    if len(sentences) < 3:
        sentences = [*sentences, "Things get worse before they get better.", "It ends where it began."]
    return sentences[:12]


def _idea(rng: random.Random, beat: str) -> str:
    words = [w for w in re.findall(r"[A-Za-z']+", beat) if len(w) > 3]
    if not words:
        return "It matters."
    return f"This is about the {rng.choice(words).lower()}."


def _character_name(display_name: str) -> str:
    return (display_name.upper().strip() or "SOMEONE")[:80]


def _first(text: str) -> str:
    first = re.split(r"(?<=[.!?])\s+|\n+", text.strip(), maxsplit=1)[0]
    return first[:1000]


def _title_from(plot: str) -> str:
    words = re.findall(r"[A-Za-z0-9']+", plot)[:5]
    return " ".join(words).title() or "Untitled"

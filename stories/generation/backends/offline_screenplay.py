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
import unicodedata
from collections.abc import AsyncGenerator
from typing import Any

from django.conf import settings

from personas.context import CONTEXT_FIELDS
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
            "description": _description(member.context),
        }
        for member in brief.cast
    ]
    beats = _beats(brief.plot)
    scenes = [_scene(rng, index, beat, characters) for index, beat in enumerate(beats)]
    scenes[-1]["elements"].append({"type": "transition", "text": "FADE OUT."})
    title = brief.title or _title_from(brief.plot)
    return {
        "title": _cut(title, 200),
        "logline": _first(brief.plot)[:1000],
        "characters": [{key: value for key, value in c.items() if value} for c in characters],
        "scenes": scenes,
    }


def _scene(rng: random.Random, index: int, beat: str, characters: list[dict[str, Any]]) -> dict[str, Any]:
    heading = f"{rng.choice(_PLACES)} - {rng.choice(_TIMES)}"
    elements: list[dict[str, Any]] = [{"type": "action", "text": _cut(beat, 5000)}]
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
    return {"heading": heading, "summary": _cut(beat, 1000), "elements": elements}


# A sentence ends at . ! ? before a space, or at a full stop that needs none: the Chinese and Japanese
# full stop, exclamation and question marks (U+3002, U+FF01, U+FF1F), Devanagari's danda, Arabic's
# question mark and Urdu's full stop.
_SENTENCE_END = re.compile("(?<=[.!?])\\s+|(?<=[\u3002\uff01\uff1f\u0964\u061f\u06d4])\\s*|\n+")
_APOSTROPHES = "'\u2019"
_TITLE_WORDS = 5
# English words that carry no idea of their own: a title does not end on one ("A Lighthouse Keeper And
# A"), and a line about the plot does not pick one ("This is about the until.").
_FUNCTION_WORDS = frozenset(
    (  # noqa: SIM905 (a sentence of words reads better than eighty quoted ones)
        "a an the and or but nor so yet of to in on at for with by from as into onto upon over under about "
        "after before since until while when where then than that this these those there which who whom "
        "whose what is are was were be been being has have had do does did not no his her hers their its "
        "our your my me him them they she he it we you i us"
    ).split()
)
_TITLE_MAX_CHARS = 60
# The context's paragraphs that describe the character (personas/context.py), not the model's orders.
_DESCRIBING_LABELS = frozenset(label for key, label in CONTEXT_FIELDS if key != "system_prompt")


def _beats(plot: str) -> list[str]:
    sentences = [s.strip() for s in _SENTENCE_END.split(plot) if s.strip()]
    if len(sentences) < 3:
        sentences = [*sentences, "Things get worse before they get better.", "It ends where it began."]
    return sentences[:12]


def _idea(rng: random.Random, beat: str) -> str:
    words = [w for w in plot_words(beat) if len(w) > 3 and w.lower() not in _FUNCTION_WORDS]
    if not words:
        return "It matters."
    return f"This is about the {rng.choice(words).lower()}."


def plot_words(text: str) -> list[str]:
    """The words of ``text`` in any script: runs of letters, digits, apostrophes and the combining
    marks that belong to them (Devanagari's vowel signs, Thai's tone marks). ``[A-Za-z']`` made a
    Japanese or Arabic plot's title "Untitled" and cut "Zoë" to "Zo"."""
    words: list[str] = []
    word = ""
    for char in text:
        if char.isalnum() or char in _APOSTROPHES or (word and unicodedata.category(char).startswith("M")):
            word += char
        elif word:
            words.append(word.strip(_APOSTROPHES))
            word = ""
    words.append(word.strip(_APOSTROPHES))
    return [w for w in words if w]


def _character_name(display_name: str) -> str:
    return _cut(display_name.upper().strip() or "SOMEONE", 80)


def _first(text: str) -> str:
    first = _SENTENCE_END.split(text.strip(), maxsplit=1)[0]
    return _cut(first, 1000)


def _description(context: str) -> str:
    """The first sentence of the context's first paragraph about the character, without its label.

    The context's first paragraph is the persona's instructions to a model ("Instructions: You are
    ..."): a screenplay's cast list read "CAPTAIN OKAFOR - Instructions: You are Captain Okafor."."""
    for paragraph in context.split("\n\n"):
        label, _, text = paragraph.partition(":")
        if label in _DESCRIBING_LABELS and text.strip():
            return _first(text)
    return ""


def _title_from(plot: str) -> str:
    """The plot's first words, each capitalised, within ``_TITLE_MAX_CHARS`` (a Chinese or Japanese
    clause is one "word", with no spaces in it), not ending on a word such as "and" or "a"."""
    words = plot_words(plot)[:_TITLE_WORDS]
    while len(words) > 1 and words[-1].lower() in _FUNCTION_WORDS:
        words.pop()
    title = ""
    for word in words:
        word = word[:1].upper() + word[1:].lower()
        if title and len(title) + 1 + len(word) > _TITLE_MAX_CHARS:
            break
        title = f"{title} {word}" if title else word
    return _cut(title, _TITLE_MAX_CHARS) or "Untitled"


def _cut(text: str, limit: int) -> str:
    """At most ``limit`` characters, never cutting a letter from what is drawn with it: its combining
    marks (a vowel sign, a tone mark), an emoji's skin tone, or what a joiner or a virama ties to it
    (a ZWJ sequence, a Devanagari conjunct)."""
    end = min(limit, len(text))
    while 0 < end < len(text) and _tied(text[end - 1], text[end]):
        end -= 1
    return text[:end]


def _tied(before: str, after: str) -> bool:
    return (
        unicodedata.category(after).startswith("M")
        or "\U0001f3fb" <= after <= "\U0001f3ff"  # an emoji's skin tone
        or "\u200d" in (before, after)  # a zero-width joiner
        or unicodedata.combining(before) == 9  # a virama
    )

"""A persona's *context*: the text about a persona that goes into a prompt.

Pure functions, no Django state, so the generation pipeline, the cache, the admin preview and the
benchmarks all derive the same text the same way.

The context is built from ``config_data`` in this order, one labelled paragraph per field, most
important first so that shortening (which cuts from the end) drops the least essential text:

1. ``Instructions:`` ``system_prompt``
2. ``Description:`` ``description``
3. ``Personality:`` ``personality``
4. ``Voice:`` ``voice``
5. ``Example lines:`` ``example_lines``, one ``- `` bullet each
6. ``Scenario:`` ``scenario``
7. ``Backstory:`` ``backstory``

Older shapes still work: a config holding only a flat ``system_prompt``, and the older nested
``context`` object (its fields fill in whatever the top level lacks; a plain string under ``context``
counts as the description). ``summary``, ``tags``, ``private`` and ``extensions`` are never part of
the context. Missing, empty and non-text values are skipped.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping
from typing import Any

from storyproject.tokens import token_estimate

# (config key, label), in the order they appear in the context.
CONTEXT_FIELDS: tuple[tuple[str, str], ...] = (
    ("system_prompt", "Instructions"),
    ("description", "Description"),
    ("personality", "Personality"),
    ("voice", "Voice"),
    ("example_lines", "Example lines"),
    ("scenario", "Scenario"),
    ("backstory", "Backstory"),
)
SHORTENED_MARKER = "[shortened]"

# A sentence ends at . ! ? or an ellipsis followed by whitespace or the end of the text, or at a CJK
# full stop, exclamation or question mark (no space follows those), either optionally followed by
# closing quotes or brackets; a line break is a boundary too. Escapes keep the source ASCII.
_CLOSERS = "[\"'\u201d\u2019\u300d\u300f)\\]]*"
_SENTENCE_END = re.compile(rf"[.!?\u2026]{_CLOSERS}(?=\s|$)|[\u3002\uff01\uff1f]{_CLOSERS}|\n")
_WORD_END = re.compile(r"\S(?=\s)")


def persona_context_text(config: Mapping[str, Any]) -> str:
    """The prompt context of a persona config, as documented in this module's docstring."""
    # As ``_merged_fields`` then one paragraph per field, without copying the config or cleaning each
    # text twice: this runs for every persona of a cold batch read. A top-level field with content wins
    # (it has content exactly when its paragraph is not empty); else the older nested shape's.
    nested = config.get("context")
    if isinstance(nested, str):
        nested = {"description": nested}
    elif not isinstance(nested, Mapping):
        nested = None
    paragraphs = []
    for key, label in CONTEXT_FIELDS:
        paragraph = _paragraph(label, config.get(key))
        if not paragraph and nested is not None:
            paragraph = _paragraph(label, nested.get(key))
        if paragraph:
            paragraphs.append(paragraph)
    return "\n\n".join(paragraphs)


def persona_summary(config: Mapping[str, Any]) -> str:
    """One line for pickers: ``summary``, else the first sentence of the description, the personality or,
    for a persona of the older flat shape that has nothing else, its instructions (``system_prompt``)."""
    fields = _merged_fields(config)
    for key in ("summary", "description", "personality", "system_prompt"):
        text = _text(config.get(key) if key == "summary" else fields.get(key))
        if text:
            return text if key == "summary" else _first_sentence(text)
    return ""


def context_shorten(text: str, budget_tokens: int) -> tuple[str, bool]:
    """``text`` cut at the last sentence boundary that fits ``budget_tokens``, and whether it was cut.

    A cut text ends with ``[shortened]`` (counted in the budget). When not even the first sentence
    fits, the cut falls at a word boundary instead, and failing that mid-word.
    """
    if budget_tokens < 1:
        raise ValueError("budget_tokens must be at least 1")
    if token_estimate(text) <= budget_tokens:
        return text, False
    for pattern in (_SENTENCE_END, _WORD_END):
        cut = _longest_fitting_prefix(text, [m.end() for m in pattern.finditer(text)], budget_tokens)
        if cut:
            return cut, True
    return _hard_cut(text, budget_tokens), True


def context_field_nested(config: Mapping[str, Any], key: str) -> bool:
    """Whether context field ``key`` reaches the model from the older nested ``context`` (the top level
    has nothing in it, the nested shape has): the persona editor shows and edits it there."""
    if _has_content(config.get(key)):
        return False
    nested = config.get("context")
    if isinstance(nested, str):
        return key == "description" and _has_content(nested)
    return isinstance(nested, Mapping) and _has_content(nested.get(key))


def context_field_value(config: Mapping[str, Any], key: str) -> Any:
    """The value of context field ``key`` that reaches the model: the top level's, else the nested one's."""
    if not context_field_nested(config, key):
        return config.get(key)
    nested = config["context"]
    return nested if isinstance(nested, str) else nested[key]


def _merged_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    nested = config.get("context")
    fields: dict[str, Any] = dict(nested) if isinstance(nested, Mapping) else {}
    if isinstance(nested, str):
        fields["description"] = nested
    for key, _ in CONTEXT_FIELDS:
        if _has_content(config.get(key)):
            fields[key] = config[key]
    return fields


def _has_content(value: object) -> bool:
    if isinstance(value, list):
        return any(_text(item) for item in value)
    return bool(_text(value))


def _text(value: object) -> str:
    return value.replace("\r\n", "\n").strip() if isinstance(value, str) else ""


def _paragraph(label: str, value: object) -> str:
    if isinstance(value, list):
        lines = [f"- {text}" for text in map(_text, value) if text]
        return f"{label}:\n" + "\n".join(lines) if lines else ""
    text = _text(value)
    return f"{label}: {text}" if text else ""


# A summary made from the description is one line in a picker: a description with no sentence end
# (a card's list of traits) was the whole description, up to 20,000 characters on one button.
SUMMARY_DERIVED_MAX_CHARS = 200


def _first_sentence(text: str) -> str:
    match = _SENTENCE_END.search(text)
    sentence = text[: match.end()].strip() if match else text
    if len(sentence) <= SUMMARY_DERIVED_MAX_CHARS:
        return sentence
    cut = sentence[: SUMMARY_DERIVED_MAX_CHARS - 1]
    words = cut.rsplit(None, 1)[0] if len(cut.split(None, 1)) > 1 else cut
    return words.rstrip(" ,;:") + "…"


def _longest_fitting_prefix(text: str, ends: list[int], budget: int) -> str:
    # The estimate never shrinks as the prefix grows, so the longest fitting cut is found by bisection.
    ends = [end for end in ends if text[:end].strip()]
    count = bisect.bisect_right(ends, budget, key=lambda end: token_estimate(_with_marker(text[:end])))
    return _with_marker(text[: ends[count - 1]]) if count else ""


def _hard_cut(text: str, budget: int) -> str:
    ends = range(1, len(text) + 1)
    count = bisect.bisect_right(ends, budget, key=lambda end: token_estimate(_with_marker(text[:end])))
    return _with_marker(text[:count]) if count else SHORTENED_MARKER


def _with_marker(prefix: str) -> str:
    return prefix.rstrip() + " " + SHORTENED_MARKER

"""Field-by-field differences between two states of a persona: a revision against the one before it
(the admin's history), or a stored persona against an imported file (the import preview).

A persona's *state* is an ordered mapping from a label an editor recognises ("Voice", "Example lines")
to the text of that part, so that a diff names the part that changed instead of showing two JSON blobs.
Pure functions: no database, no Django state.
"""

from __future__ import annotations

import difflib
import json
import re
import unicodedata
from dataclasses import dataclass

from storyproject.diffs import DiffBudget

# The config's parts in the order the editor's form shows them; keys outside this list follow, by name.
PART_LABELS = {
    "system_prompt": "Instructions (system_prompt)",
    "description": "Description",
    "personality": "Personality",
    "voice": "Voice",
    "example_lines": "Example lines",
    "scenario": "Scenario",
    "backstory": "Backstory",
    "summary": "Summary",
    "tags": "Tags",
    "private": "Private",
    "extensions": "Extensions",
}
# Scripts written without spaces between words: Thai, Lao, Myanmar, Khmer, kana and the CJK ideographs.
_UNSPACED = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
    "\U00020000-\U0003134f]"
)


@dataclass(frozen=True)
class Segment:
    op: str  # "same", "del" or "ins"
    text: str


@dataclass(frozen=True)
class FieldChange:
    label: str
    segments: list[Segment]


def persona_state(*, name: str, display_name: str, is_active: bool, config_data: object) -> dict[str, str]:
    """The parts of a persona as labelled texts, in the editor's order; absent parts are left out."""
    state = {"Key": name, "Display name": display_name, "Active": "yes" if is_active else "no"}
    if not isinstance(config_data, dict):
        return {**state, "Raw JSON": _json_text(config_data)}
    for key, label in PART_LABELS.items():
        if key in config_data:
            state[label] = _part_text(key, config_data[key])
    for key in sorted(set(config_data) - set(PART_LABELS)):
        state[f"Other key: {key}"] = _json_text(config_data[key])
    return state


def state_changes(
    *, before: dict[str, str] | None, after: dict[str, str], budget: DiffBudget | None = None
) -> list[FieldChange]:
    """The parts that differ between ``before`` (None: nothing before) and ``after``, with word diffs.

    ``budget``: what the page's word diffs may still spend (``storyproject.diffs``), shared by the
    callers that diff many states for one page; past it, a changed part is shown whole, old then new.
    """
    before = before or {}
    budget = budget or DiffBudget()
    labels = [*after, *(label for label in before if label not in after)]
    return [
        FieldChange(label=label, segments=_segments(before.get(label, ""), after.get(label, ""), budget))
        for label in labels
        if before.get(label) != after.get(label)
    ]


# The history page shows at most this much of one revision's changed text, and this much unchanged text
# either side of a change: a persona whose config is near PERSONA_CONFIG_MAX_BYTES, edited 200 times, made
# a page of 24 MB (each revision's whole old and new text). A revision's own page shows all of it.
REVISION_CHARS_SHOWN = 4_000
UNCHANGED_CONTEXT_CHARS = 200
# One removal or addition shows this much of itself at most: the rest of the budget goes to the next.
SEGMENT_CHARS_SHOWN = 1_000


def changes_abridged(changes: list[FieldChange], *, chars: int = REVISION_CHARS_SHOWN) -> list[FieldChange]:
    """``changes`` cut to about ``chars`` characters of text, long unchanged stretches to their ends;
    each cut is a segment of op ``"cut"`` saying what was left out."""
    left, abridged = chars, []
    for index, change in enumerate(changes):
        if left <= 0:
            rest = len(changes) - index
            more = (
                f"[{rest:,} more part{'s' if rest > 1 else ''} changed: open the revision to see all of it]"
            )
            abridged.append(FieldChange(label="…", segments=[Segment("cut", more)]))
            break
        segments: list[Segment] = []
        for position, segment in enumerate(change.segments):
            text = segment.text
            if left <= 0:
                hidden = sum(len(later.text) for later in change.segments[position:])
                segments.append(
                    Segment("cut", f"[{hidden:,} more characters: open the revision to see all of it]")
                )
                break
            if segment.op == "same":
                if len(text) > 2 * UNCHANGED_CONTEXT_CHARS:
                    hidden = len(text) - 2 * UNCHANGED_CONTEXT_CHARS
                    segments += [
                        Segment("same", text[:UNCHANGED_CONTEXT_CHARS]),
                        Segment("cut", f"[{hidden:,} unchanged characters]"),
                        Segment("same", text[-UNCHANGED_CONTEXT_CHARS:]),
                    ]
                    left -= 2 * UNCHANGED_CONTEXT_CHARS
                else:
                    segments.append(segment)
                    left -= len(text)
                continue
            shown = min(len(text), left, SEGMENT_CHARS_SHOWN)
            segments.append(Segment(segment.op, text[:shown]))
            left -= shown
            if shown < len(text):
                hidden = len(text) - shown
                segments.append(
                    Segment("cut", f"[{hidden:,} more characters: open the revision to see all of it]")
                )
        abridged.append(FieldChange(label=change.label, segments=segments))
    return abridged


def _part_text(key: str, value: object) -> str:
    if key == "tags" and _strings(value):
        return ", ".join(value)  # type: ignore[arg-type]
    if key == "example_lines" and _strings(value):
        return "\n".join(value)  # type: ignore[arg-type]
    return value if isinstance(value, str) else _json_text(value)


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _json_text(value: object) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _words(text: str) -> list[str]:
    """The units a change is shown in: a word with the spaces after it, so two edits are never split by
    a shared space; in a script written without spaces, each letter with its marks. A Japanese or Thai
    text was one "word", and a change of one letter showed all of it removed and written again."""
    words: list[str] = []
    for char in text:
        mark = unicodedata.category(char).startswith("M")
        if words and (char.isspace() or mark or _joins(words[-1], char)):
            words[-1] += char
        else:
            words.append(char)
    return words


def _joins(word: str, char: str) -> bool:
    """Whether ``char`` goes on the word before it: neither starts a unit of its own."""
    return not word[-1].isspace() and not _UNSPACED.match(char) and not _UNSPACED.match(word[0])


def _segments(old: str, new: str, budget: DiffBudget) -> list[Segment]:
    old_words, new_words = _words(old), _words(new)
    if not budget.spend(old_words, new_words):
        return [segment for segment in (Segment("del", old), Segment("ins", new)) if segment.text]
    matcher = difflib.SequenceMatcher(None, old_words, new_words, autojunk=False)
    segments: list[Segment] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            segments.append(Segment("same", "".join(old_words[i1:i2])))
            continue
        if i2 > i1:
            segments.append(Segment("del", "".join(old_words[i1:i2])))
        if j2 > j1:
            segments.append(Segment("ins", "".join(new_words[j1:j2])))
    return segments

"""The screenplay as the writers read it: typed scenes and elements, and the text clean-up they share.

A stored version follows ``stories/contract/screenplay.schema.json``, but exports must not fail on an
older or hand-edited version: missing or mistyped fields are read as empty and unknown element types
are skipped, so every export works from the same tolerant reading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

# Removed from every exported string: C0/C1 controls (except tab, turned into a space), surrogates,
# the private-use planes (screenplain uses private-use characters as its own emphasis markers) and
# the two non-characters that XML 1.0 forbids. Line separators are handled by ``splitlines``.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0e-\x1b\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ue000-\uf8ff\ufffe\uffff\U000f0000-\U0010ffff]"
)
# Tabs, and line separators left in a string that was not split into lines, become spaces.
_SPACES = re.compile("[\t\n\x0b\x0c\r\x1c-\x1e\x85\u2028\u2029]")


@dataclass(frozen=True)
class ExportMeta:
    """What goes on the title page, besides the screenplay itself."""

    title: str
    author: str = ""
    credit: str = "Written by"
    draft_date: date | None = None


@dataclass(frozen=True)
class Element:
    kind: str  # "action", "dialogue" or "transition"
    text: str
    character: str = ""
    parenthetical: str = ""


@dataclass(frozen=True)
class Scene:
    heading: str
    summary: str = ""
    elements: list[Element] = field(default_factory=list)


def line_clean(line: str) -> str:
    """One line without invisible characters, tabs as spaces, stripped."""
    return _SPACES.sub(" ", _INVISIBLE.sub("", line)).strip()


def text_lines(text: str) -> list[str]:
    """The cleaned lines of ``text``; blank lines are kept as empty strings."""
    return [line_clean(line) for line in text.splitlines()]


def one_line(text: str) -> str:
    """``text`` on a single line: every run of whitespace (newlines included) becomes one space.

    Zero-width spaces go too: invisible, and not whitespace to ``split``, one next to a space would keep
    that space at a name's end ("INT. " + U+200B), where a reader keeps it and the name no longer matches.
    """
    return " ".join(_INVISIBLE.sub("", text).replace("\u200b", "").split())


def text_paragraphs(text: str) -> list[list[str]]:
    """Runs of non-blank cleaned lines, as a writer's blank lines separate paragraphs."""
    paragraphs: list[list[str]] = [[]]
    for line in text_lines(text):
        if line:
            paragraphs[-1].append(line)
        elif paragraphs[-1]:
            paragraphs.append([])
    return [lines for lines in paragraphs if lines]


def screenplay_scenes(content: object) -> list[Scene]:
    """The scenes of a stored screenplay, read tolerantly (see the module docstring)."""
    scenes = content.get("scenes") if isinstance(content, dict) else None
    if not isinstance(scenes, list):
        return []
    return [_scene(raw) for raw in scenes if isinstance(raw, dict)]


def _scene(raw: dict) -> Scene:
    elements = raw.get("elements")
    return Scene(
        heading=_str(raw.get("heading")),
        summary=_str(raw.get("summary")),
        elements=[
            element
            for element in map(_element, elements if isinstance(elements, list) else [])
            if element is not None
        ],
    )


def _element(raw: object) -> Element | None:
    if not isinstance(raw, dict) or raw.get("type") not in ("action", "dialogue", "transition"):
        return None
    return Element(
        kind=raw["type"],
        text=_str(raw.get("text")),
        character=_str(raw.get("character")),
        parenthetical=_str(raw.get("parenthetical")),
    )


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""

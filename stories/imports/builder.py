"""Building a contract screenplay from the paragraphs a Fountain or FDX reader finds, one at a time.

Both readers feed the same builder, so both give the same shape and the same errors: every problem is
a ``ScreenplayImportError`` that names where it is (a line of Fountain, a paragraph of FDX) and what
to change, checked against the contract's limits (stories/contract/screenplay.schema.json) as the
paragraph arrives rather than after the whole file was read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from stories.errors import GenerationError
from storyproject.untrusted import text_problem, text_visible

# The contract's maxLength of each field (stories/contract/screenplay.schema.json).
MAX_TITLE = 200
MAX_LOGLINE = 1000
MAX_HEADING = 200
MAX_SUMMARY = 1000
MAX_NAME = 80
MAX_PARENTHETICAL = 200
MAX_TEXT = 5000
ZERO_WIDTH_SPACE = "\u200b"


class ScreenplayImportError(GenerationError):
    """Text that cannot become a screenplay; ``where`` names the line (or paragraph), when there is one."""

    def __init__(self, message: str, *, where: str = "") -> None:
        super().__init__("invalid_request", f"{where}: {message}" if where else message)
        self.where = where


@dataclass
class ScreenplayBuilder:
    """Collects scenes and speakers; ``content()`` returns the contract JSON."""

    title: str = ""
    logline: str = ""
    scenes: list[dict[str, Any]] = field(default_factory=list)
    # Elements before the first heading (a "FADE IN:", a cold open) join the first scene.
    _before_first: list[dict[str, Any]] = field(default_factory=list)
    _speakers: dict[str, None] = field(default_factory=dict)
    _element_count: int = 0
    # Where an empty scene heading was read, while nothing has been written after it yet.
    _empty_heading_at: str = ""

    def set_title(self, text: str, *, where: str) -> None:
        title = _checked(text, MAX_TITLE, "the title", where)
        # A title of marks alone (U+200E, a zero-width space) draws nothing: read as no title, so the
        # edited version's title, or "Untitled", as a story's title is.
        self.title = title if text_visible(title) else ""

    def set_logline(self, text: str, *, where: str) -> None:
        self.logline = _checked(text, MAX_LOGLINE, "the logline", where)

    def heading(self, text: str, *, where: str) -> None:
        heading = _checked(text, MAX_HEADING, "a scene heading", where)
        # An empty heading (Final Draft leaves one after a last transition) opens a scene only once
        # something is written in it: a scene of nothing would be imported as an empty "SCENE".
        self._empty_heading_at = "" if heading else where
        if heading:
            self._scene_open(heading, where)

    def _scene_open(self, heading: str, where: str) -> None:
        if len(self.scenes) >= settings.STORY_IMPORT_MAX_SCENES:
            raise ScreenplayImportError(
                f"more than {settings.STORY_IMPORT_MAX_SCENES} scenes (STORY_IMPORT_MAX_SCENES)", where=where
            )
        self.scenes.append({"heading": heading, "elements": self._before_first})
        self._before_first = []

    def summary(self, text: str, *, where: str) -> None:
        summary = _checked(text, MAX_SUMMARY, "a scene summary", where)
        if summary and self.scenes:
            self.scenes[-1]["summary"] = summary

    def action(self, text: str, *, where: str, kind: str = "action") -> None:
        text = _checked(text, MAX_TEXT, f"this {kind}", where)
        if text:
            self._element_add({"type": kind, "text": text}, where)

    def dialogue(self, *, character: str, parenthetical: str, text: str, where: str) -> None:
        # A cue of invisible characters only reads as no name, which the exporters write as UNNAMED.
        name = _checked(character, MAX_NAME, "a character name", where) or "UNNAMED"
        parenthetical = _checked(parenthetical, MAX_PARENTHETICAL, "a parenthetical", where)
        text = _checked(text, MAX_TEXT, "this speech", where)
        if not text and parenthetical:
            # A direction with no words after it ("(nods)") is kept as what the character "says".
            text, parenthetical = f"({parenthetical})", ""
        if not text:
            return
        element = {"type": "dialogue", "character": name, "text": text}
        if parenthetical:
            element["parenthetical"] = parenthetical
        self._speaker_add(name, where)
        self._element_add(element, where)

    def _element_add(self, element: dict[str, Any], where: str) -> None:
        limit = settings.STORY_IMPORT_MAX_ELEMENTS
        if self._element_count >= limit:
            raise ScreenplayImportError(
                f"more than {limit} elements: action paragraphs, speeches, transitions "
                "(STORY_IMPORT_MAX_ELEMENTS)",
                where=where,
            )
        self._element_count += 1
        self._elements().append(element)

    def _speaker_add(self, name: str, where: str) -> None:
        limit = settings.STORY_IMPORT_MAX_CHARACTERS
        if name not in self._speakers and len(self._speakers) >= limit:
            raise ScreenplayImportError(
                f"more than {limit} characters speak (STORY_IMPORT_MAX_CHARACTERS)", where=where
            )
        self._speakers.setdefault(name)

    def content(self) -> dict[str, Any]:
        if not self.scenes:
            raise ScreenplayImportError(
                "this is not a screenplay we can read: it has no scene heading "
                "(a line such as INT. KITCHEN - NIGHT, or one forced with a leading period)"
            )
        content: dict[str, Any] = {"title": self.title or "Untitled"}
        if self.logline:
            content["logline"] = self.logline
        # Fountain and FDX have no character list: the speakers, in order of their first line.
        content["characters"] = [{"name": name} for name in self._speakers]
        content["scenes"] = self.scenes
        return content

    def _elements(self) -> list[dict[str, Any]]:
        if self._empty_heading_at:
            where, self._empty_heading_at = self._empty_heading_at, ""
            self._scene_open("SCENE", where)
        return self.scenes[-1]["elements"] if self.scenes else self._before_first


def _checked(text: str, limit: int, what: str, where: str) -> str:
    problem = text_problem(text)
    if problem is not None:
        raise ScreenplayImportError(f"{what} {problem}", where=where)
    if len(text) > limit:
        raise ScreenplayImportError(f"{what} is longer than {limit} characters ({len(text)})", where=where)
    return text


def one_line(text: str) -> str:
    """A single-line field as the exporters write it: invisible separators gone, whitespace collapsed."""
    return " ".join(text.replace(ZERO_WIDTH_SPACE, "").split())


def text_block(lines: list[str]) -> str:
    """Lines of an action or a speech: each stripped, blank lines at either end dropped."""
    cleaned = [line.replace(ZERO_WIDTH_SPACE, "").strip() for line in lines]
    while cleaned and not cleaned[0]:
        cleaned.pop(0)
    while cleaned and not cleaned[-1]:
        cleaned.pop()
    return "\n".join(cleaned)


def parenthetical_inner(text: str) -> str:
    """A parenthetical without its outer parentheses, as the contract stores it."""
    inner = one_line(text)
    if inner.startswith("(") and inner.endswith(")"):
        inner = inner[1:-1].strip()
    return inner

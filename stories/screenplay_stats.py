"""The shape of a screenplay: an estimated page count, scenes, and what each character says.

Pages are estimated the way screenwriters do from the industry layout (Courier 12 pt, US letter): about
55 printed lines a page, action ~60 columns wide, dialogue ~35, parentheticals ~25 (a wide Chinese,
Japanese or Korean character takes two), a blank line between paragraphs and before each scene heading. It is an estimate (the PDF export's own count may
differ by a page or two on a feature), cheap enough to show on every story page.
"""

from __future__ import annotations

import re
import textwrap
import unicodedata
from dataclasses import dataclass, field

from stories.exports.screenplay import Element, Scene, screenplay_scenes, text_lines

LINES_PER_PAGE = 55
ACTION_WIDTH = 60
DIALOGUE_WIDTH = 35
PARENTHETICAL_WIDTH = 25
# Chinese and Japanese write without spaces: each ideograph or kana counts as a word, as word processors
# count them (hiragana, katakana, the CJK ideographs and their extensions). Korean spaces its words.
_IDEOGRAPHIC = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")


@dataclass
class CharacterStats:
    name: str
    lines: int = 0  # speeches: each dialogue element, as a script breakdown counts them
    words: int = 0
    scenes: int = 0
    _scenes_seen: set[int] = field(default_factory=set, repr=False)


@dataclass(frozen=True)
class ScreenplayStats:
    pages: float
    scenes: int
    characters: list[CharacterStats]

    def as_json(self) -> dict[str, object]:
        return {
            "pages": self.pages,
            "scenes": self.scenes,
            "characters": [
                {"name": c.name, "lines": c.lines, "words": c.words, "scenes": c.scenes}
                for c in self.characters
            ],
        }


def screenplay_stats(content: object) -> ScreenplayStats:
    """Pages (one decimal), scene count, and per speaking character their speeches, words and scenes."""
    scenes = screenplay_scenes(content)
    printed = 0
    speakers: dict[str, CharacterStats] = {}
    for index, scene in enumerate(scenes):
        printed += _scene_lines(scene)
        for element in scene.elements:
            if element.kind == "dialogue":
                stats = speakers.setdefault(element.character, CharacterStats(name=element.character))
                stats.lines += 1
                stats.words += word_count(element.text)
                stats._scenes_seen.add(index)
    for stats in speakers.values():
        stats.scenes = len(stats._scenes_seen)
    ranked = sorted(speakers.values(), key=lambda c: (-c.words, c.name))
    return ScreenplayStats(pages=round(printed / LINES_PER_PAGE, 1), scenes=len(scenes), characters=ranked)


def word_count(text: str) -> int:
    """Words separated by spaces, each ideograph or kana one word; a run of punctuation is none.

    A Chinese or Japanese speech of forty characters counted as one word (it has no space), so its
    speaker came last in the shape's ranking whatever they said."""
    ideographs = len(_IDEOGRAPHIC.findall(text))
    others = _IDEOGRAPHIC.sub(" ", text).split()
    return ideographs + sum(1 for word in others if any(char.isalnum() for char in word))


def _scene_lines(scene: Scene) -> int:
    # The heading and the blank line before it, then each element and its blank line.
    return 2 + sum(_element_lines(element) + 1 for element in scene.elements)


def _element_lines(element: Element) -> int:
    if element.kind == "dialogue":
        cue = 1
        parenthetical = _wrapped(element.parenthetical, PARENTHETICAL_WIDTH) if element.parenthetical else 0
        return cue + parenthetical + _wrapped(element.text, DIALOGUE_WIDTH)
    return _wrapped(element.text, ACTION_WIDTH)


def _wrapped(text: str, width: int) -> int:
    return sum(_line_count(line, width) for line in text_lines(text)) or 1


def _line_count(line: str, width: int) -> int:
    if not any(_columns(char) == 2 for char in line):
        return max(1, len(textwrap.wrap(line, width)))
    # Wide characters (Chinese, Japanese, Korean, full-width forms) take two columns of a monospaced
    # page and a line may break between any two of them: textwrap counted one column each, which made
    # a Chinese screenplay half as many pages as it prints.
    lines, column, spaced = 1, 0, False
    for unit in _wrap_units(line):
        if unit.isspace():
            spaced = column > 0
            continue
        columns = sum(_columns(char) for char in unit)
        if column and column + spaced + columns > width:
            lines, column = lines + 1, 0
        elif column:
            columns += spaced
        lines += (column + columns - 1) // width
        column = (column + columns - 1) % width + 1
        spaced = False
    return lines


def _wrap_units(line: str) -> list[str]:
    """What a line may break between: runs of spaces, each wide character, and words of the others."""
    units: list[str] = []
    for char in line:
        joins = units and _columns(char) == 1 and char.isspace() == units[-1][-1].isspace()
        if joins and _columns(units[-1][-1]) == 1:
            units[-1] += char
        else:
            units.append(char)
    return units


def _columns(char: str) -> int:
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1

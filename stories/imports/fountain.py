"""Fountain text (https://fountain.io/syntax) into the screenplay contract, read with screenplain.

screenplain decides what every paragraph is, exactly as it does for our own exports and the PDF, so
what a writer sees in the editor's preview is what a Fountain reader sees. This module only feeds
screenplain's paragraphs to the builder one at a time, to know the line each one starts on, and turns
its rich text back into the text the exporter wrote: the zero-width spaces the exporter puts where
Fountain has no escape are removed, ``\\*`` is a literal star, and emphasis a writer typed stays as
its markers (``*italic*``, ``**bold**``, ``_underline_``), which the exporter writes back escaped.

What Fountain cannot express is listed in docs/exports.md ("Importing").
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from typing import Any

from screenplain import types
from screenplain.parsers.fountain import InputParagraph, parse_title_page
from screenplain.richstring import Bold, Italic, RichString, Underline, parse_emphasis

from stories.imports.builder import (
    ScreenplayBuilder,
    ScreenplayImportError,
    one_line,
    parenthetical_inner,
    text_block,
)

_LINE_BREAK = re.compile("\r\n|\n|\r")
# screenplain's patterns (a heading's, a scene number's, dual dialogue's, centered text's) take time
# that grows with the square of a run of whitespace inside a line: 40,000 spaces took 5 s, a megabyte
# would take most of an hour. A run means nothing to a reader past its first few characters.
MAX_WHITESPACE_RUN = 64
_LONG_WHITESPACE_RUN = re.compile(rf"(\s{{{MAX_WHITESPACE_RUN}}})\s+")
_MARKERS = ((Bold, "**"), (Italic, "*"), (Underline, "_"))


def screenplay_from_fountain(text: str, *, edited: dict[str, Any] | None = None) -> dict[str, Any]:
    """The contract JSON for Fountain ``text``; raises ScreenplayImportError naming the line.

    ``edited``, the version an editor's text was edited from, gives what the text does not say: its
    title when the text has none, and its logline when the text has no title page at all (a title page
    without a logline removed it). Without either, the title is "Untitled".
    """
    # A boneyard comment becomes as many line breaks as it held, so later line numbers stay true.
    text = _spans_replaced(text, "/*", "*/", lambda span: "\n" * span.count("\n"))
    lines = [_LONG_WHITESPACE_RUN.sub(r"\1", line.expandtabs(4)) for line in _LINE_BREAK.split(text)]
    builder = ScreenplayBuilder()
    body_start = _title_page(lines, builder)
    for paragraph, line_number in _paragraphs(lines, body_start):
        _add(builder, paragraph, where=f"line {line_number}")
    if edited is not None:
        builder.title = builder.title or _text_field(edited, "title")
        if body_start == 0:
            builder.logline = _text_field(edited, "logline")
    return builder.content()


def _text_field(content: dict[str, Any], key: str) -> str:
    value = content.get(key)
    return value if isinstance(value, str) else ""


def _title_page(lines: list[str], builder: ScreenplayBuilder) -> int:
    """Read a leading title page into the builder; return the index of the body's first line."""
    head = list(itertools.takewhile(lambda line: line != "", lines))
    # "EXT. PARK: NIGHT" is a key and a value to screenplain's title page reader: a first scene whose
    # heading has a colon lost its heading, its text joining the next scene.
    title_page = parse_title_page(head) if head and not _reads_as_heading(head[0]) else None
    if not title_page:
        return 0
    if "Title" in title_page:
        builder.set_title(
            one_line(" ".join(_plain_text(value) for value in title_page["Title"])), where="line 1"
        )
    if "Logline" in title_page:
        builder.set_logline(
            one_line(" ".join(_plain_text(value) for value in title_page["Logline"])), where="the title page"
        )
    return len(head)


def _reads_as_heading(line: str) -> bool:
    """Whether screenplain reads this line, as a paragraph of its own, as a scene heading."""
    return bool(InputParagraph([line]).append_slug([]))


def _paragraphs(lines: list[str], start: int) -> Iterator[tuple[object, int]]:
    """screenplain's paragraphs with the line each starts on, built the way its ``parse_body`` builds them.

    Each is yielded as soon as it is final, so that a limit the builder enforces (scenes, speakers)
    stops the reading there: a file of 50,000 one-line speakers was read to its end (2 s) before the
    first speaker too many was refused.
    """
    paragraphs: list[Any] = []
    starts: dict[int, int] = {}
    done = 0
    numbered = enumerate(lines[start:], start=start + 1)
    for blank, group in itertools.groupby(numbered, lambda item: item[1] in ("", " ")):
        if blank:
            continue
        block = list(group)
        as_string = _spans_replaced("\n".join(line for _number, line in block), "[[", "]]", lambda _span: "")
        if as_string in ("", " "):
            continue
        count = len(paragraphs)
        InputParagraph(_sharp_s_cue_forced(as_string.split("\n"))).update_list(paragraphs)
        # A paragraph may add one, add several (sections), or change the previous one (a synopsis, a
        # dual dialogue): whatever is new or changed is reported once, with this line.
        for paragraph in paragraphs[max(count - 1, 0) :]:
            starts.setdefault(id(paragraph), block[0][0])
        # screenplain only ever changes (or replaces) the last paragraph: the ones before it are final.
        for paragraph in paragraphs[done : len(paragraphs) - 1]:
            yield paragraph, starts[id(paragraph)]
        done = max(done, len(paragraphs) - 1)
    for paragraph in paragraphs[done:]:
        yield paragraph, starts[id(paragraph)]


def _sharp_s_cue_forced(lines: list[str]) -> list[str]:
    """The paragraph with a character cue in capitals but for its "ß" forced (``@``), as screenplain
    reads the same cue in capitals alone.

    German capitals keep "ß" (its capital, "ẞ", is rare), and "ß" is a lower-case letter: "GROßMANN"
    above a line of dialogue was not upper case to screenplain (nor to other Fountain readers), so the
    speech was read as action with the name in it. Such a cue is a character now, named as typed.
    """
    first = lines[0]
    if len(lines) < 2 or "ß" not in first or first.startswith(("@", "!", ".", ">", "~", "=", "#", "[")):
        return lines
    name = first.split("(", 1)[0].replace("ß", "ẞ")
    if not name.isupper() or first.isupper() or _reads_as_heading(first):
        return lines
    return ["@" + first, *lines[1:]]


def _spans_replaced(text: str, opening: str, closing: str, replace: Callable[[str], str]) -> str:
    """``text`` with each ``opening ... closing`` span replaced, as screenplain's ``/\\*.*?\\*/`` and
    ``\\[\\[.*?\\]\\]`` replace them (the shortest span from the leftmost opening), in linear time.

    Those expressions look for a closing from every opening: a megabyte of ``/* `` or ``[[`` with none
    took the regex engine most of an hour.
    """
    parts: list[str] = []
    position = 0
    while (start := text.find(opening, position)) >= 0:
        end = text.find(closing, start + len(opening))
        if end < 0:
            break  # no closing after this opening, so none after any later one either
        end += len(closing)
        parts.extend([text[position:start], replace(text[start:end])])
        position = end
    parts.append(text[position:])
    return "".join(parts)


def _add(builder: ScreenplayBuilder, paragraph: object, *, where: str) -> None:
    if isinstance(paragraph, types.Slug):
        builder.heading(one_line(_plain(paragraph.line)), where=where)
        if paragraph.synopsis:
            builder.summary(one_line(_plain_text(paragraph.synopsis)), where=where)
    elif isinstance(paragraph, types.Action):
        builder.action(text_block([_plain(line) for line in paragraph.lines]), where=where)
    elif isinstance(paragraph, types.Transition):
        builder.action(one_line(_plain(paragraph.line)), where=where, kind="transition")
    elif isinstance(paragraph, types.DualDialog):
        _dialog(builder, paragraph.left, where=where)
        _dialog(builder, paragraph.right, where=where)
    elif isinstance(paragraph, types.Dialog):
        _dialog(builder, paragraph, where=where)
    # Sections and page breaks shape an outline or a printout, not the screenplay: left out.


def _dialog(builder: ScreenplayBuilder, dialog: types.Dialog, *, where: str) -> None:
    """One speech per parenthetical: a direction in the middle of a speech starts a new element."""
    character = one_line(_plain(dialog.character))
    parenthetical: list[str] = []
    words: list[str] = []
    for is_parenthetical, line in dialog.blocks:
        text = _plain(line)
        if is_parenthetical and words:
            _speech(builder, character, parenthetical, words, where)
            parenthetical, words = [], []
        (parenthetical if is_parenthetical else words).append(text)
    if parenthetical or words:
        _speech(builder, character, parenthetical, words, where)


def _speech(
    builder: ScreenplayBuilder, character: str, parenthetical: list[str], words: list[str], where: str
) -> None:
    builder.dialogue(
        character=character,
        parenthetical=parenthetical_inner(" ".join(parenthetical)),
        text=text_block(words),
        where=where,
    )


def _plain(rich: RichString) -> str:
    """The text a writer typed: emphasis written back as its Fountain markers."""
    parts = []
    for segment in rich.segments:
        text = segment.text
        for style, marker in _MARKERS:
            if style in segment.styles:
                text = f"{marker}{text}{marker}"
        parts.append(text)
    return "".join(parts)


def _plain_text(value: str) -> str:
    # Title page values and synopses are raw strings in screenplain: unescape the stars ourselves.
    return _plain(parse_emphasis(value))


__all__ = ["ScreenplayImportError", "screenplay_from_fountain"]

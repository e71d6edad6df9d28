"""Fountain (https://fountain.io/syntax) from a screenplay, written so that model text stays text.

The model writes whatever it likes inside an action or a line of dialogue, so every string is
escaped before it is placed: it can never start a scene heading, a page break, a note, a boneyard,
a section, a synopsis, a lyric, centered text or emphasis. Where Fountain has an escape we use it
(``\\*`` for a literal asterisk, ``!`` to force action, ``@`` to force a character, ``.`` to force a
heading, ``>`` to force a transition); where it has none (``[[``, ``]]``, a line that starts with
``=``, ``#``, ``~``, ``>``, ``(``, a name that ends with ``^``) a zero-width space goes between the
characters, which every reader shows as nothing. Underscores are left alone: ``_word_`` is
underlined by Fountain readers, which is emphasis, never structure.
"""

from __future__ import annotations

import re

from stories.exports.screenplay import (
    Element,
    ExportMeta,
    Scene,
    one_line,
    screenplay_scenes,
    text_lines,
    text_paragraphs,
)

ZERO_WIDTH_SPACE = "\u200b"

# Readers (screenplain among them) take an unforced line as a heading when it starts like this.
_HEADING = re.compile(r"^(?:INT|EXT|EST|INT\.?/EXT\.?|I/E)[ .]", re.IGNORECASE)
_NOTE_BRACKETS = re.compile(r"\[(?=\[)|\](?=\])")
# A line starting with one of these means something in Fountain even in the middle of a paragraph.
_LINE_MARKERS = ("!", "=", "#", "~", ">", "(")


def fountain_from_screenplay(*, content: object, meta: ExportMeta) -> str:
    """The screenplay as Fountain text: a title page, then every scene, paragraphs blank-line separated."""
    logline = content.get("logline") if isinstance(content, dict) else None
    paragraphs = [_title_page(meta, logline if isinstance(logline, str) else "")]
    for scene in screenplay_scenes(content):
        paragraphs.extend(_scene(scene))
    return "\n\n".join(paragraphs) + "\n"


def fountain_scenes(*, scenes: list[object]) -> str:
    """Scenes alone as Fountain (no title page), for writing a screenplay out as it streams."""
    paragraphs = [p for scene in screenplay_scenes({"scenes": scenes}) for p in _scene(scene)]
    return "\n\n".join(paragraphs) + "\n"


def _title_page(meta: ExportMeta, logline: str) -> str:
    lines = [f"Title: {_inline(one_line(meta.title)) or 'Untitled'}"]
    if _inline(one_line(logline)):
        # Not one of Fountain's documented keys, which allow others; our importer reads it back.
        lines.append(f"Logline: {_inline(one_line(logline))}")
    author = _inline(one_line(meta.author))
    if author:
        lines.append(f"Credit: {_inline(one_line(meta.credit)) or 'Written by'}")
        lines.append(f"Author: {author}")
    if meta.draft_date:
        lines.append(f"Draft date: {meta.draft_date.isoformat()}")
    return "\n".join(lines)


def _scene(scene: Scene) -> list[str]:
    paragraphs = [_heading(scene.heading)]
    summary = _inline(one_line(scene.summary))
    if summary:
        # A synopsis right after its heading: readers keep it out of the printed script.
        paragraphs.append("= " + summary)
    for element in scene.elements:
        paragraphs.extend(_element(element))
    return paragraphs


def _element(element: Element) -> list[str]:
    if element.kind == "dialogue":
        return [_dialogue(element)]
    if element.kind == "transition":
        transition = _transition(element.text)
        return [transition] if transition else []
    return _action(element.text)


def _heading(text: str) -> str:
    # A forced heading is a period and an alphanumeric, so leading periods ("...LATER") are dropped.
    heading = _inline(one_line(text).lstrip(". ")) or "SCENE"
    if heading.endswith("#"):
        # "#12#" at the end of a heading would become a scene number.
        heading += ZERO_WIDTH_SPACE
    if _HEADING.match(heading) and heading.split(" ", 1)[0].isupper():
        return heading
    return "." + heading


def _action(text: str) -> list[str]:
    result = []
    for lines in text_paragraphs(text):
        first, *rest = [_inline(line) for line in lines]
        if _action_needs_force(first):
            first = "!" + first
        result.append("\n".join([first, *map(_line_start_escaped, rest)]))
    return result


def _action_needs_force(line: str) -> bool:
    """Whether a reader could take this first line of an action for something else."""
    capitals = line.replace("ß", "ẞ")  # "STRAßE" is capitals: our importer reads it as a cue
    return (
        not line[0].isalnum()  # a marker: . ! @ # ~ = > [ ( and the like
        or capitals.isupper()  # all caps reads as a character cue or a transition
        or capitals.split("(", 1)[0].isupper()  # "BOB (quietly)" reads as a cue too
        or bool(_HEADING.match(line))
    )


def _dialogue(element: Element) -> str:
    lines = [_cue(element.character)]
    parenthetical = _parenthetical(element.parenthetical)
    if parenthetical:
        lines.append(parenthetical)
    body = _trim_blank(text_lines(element.text))
    # Two spaces keep a blank line inside dialogue; an empty speech is one such line, so the cue
    # still has dialogue under it and stays a cue.
    lines.extend(_line_start_escaped(_inline(line)) if line else "  " for line in body or [""])
    return "\n".join(lines)


def _cue(name: str) -> str:
    cue = _inline(one_line(name)) or "UNNAMED"
    if cue.endswith("^"):
        # A trailing caret would merge this speech with the previous one as dual dialogue.
        cue += ZERO_WIDTH_SPACE
    plain = (
        cue[0].isalnum()
        and cue.isupper()
        and cue.split("(", 1)[0].isupper()  # what readers test: the name before any extension
        and not _HEADING.match(cue)
    )
    return cue if plain else "@" + cue


def _parenthetical(text: str) -> str:
    inner = one_line(text)
    if inner.startswith("(") and inner.endswith(")"):
        inner = inner[1:-1].strip()
    return f"({_inline(inner)})" if inner else ""


def _transition(text: str) -> str:
    transition = _inline(one_line(text))
    if not transition:
        return ""
    if transition.endswith("<"):
        # "> ... <" is centered text, not a transition.
        transition += ZERO_WIDTH_SPACE
    plain = (
        # Readers (screenplain) ask the text before "TO:" to be upper case: "李小龍TO:" is not.
        transition[: -len("TO:")].isupper()
        and transition.endswith("TO:")
        and len(transition) > len("TO:")
        and transition[0].isalnum()
        and not _HEADING.match(transition)
    )
    return transition if plain else "> " + transition


def _inline(text: str) -> str:
    """Escape what Fountain reads anywhere in a line: emphasis and boneyard (*), notes ([[ ]])."""
    return _NOTE_BRACKETS.sub(lambda match: match.group(0) + ZERO_WIDTH_SPACE, text.replace("*", "\\*"))


def _line_start_escaped(line: str) -> str:
    return ZERO_WIDTH_SPACE + line if line.startswith(_LINE_MARKERS) else line


def _trim_blank(lines: list[str]) -> list[str]:
    while lines and not lines[0]:
        lines = lines[1:]
    while lines and not lines[-1]:
        lines = lines[:-1]
    return lines

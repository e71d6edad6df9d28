"""Final Draft XML (FDX) into the screenplay contract, parsed with defusedxml.

defusedxml refuses a document type declaration, entities and external references, so a hostile file
cannot expand into gigabytes or read local files. A paragraph's text is the text of all its ``Text``
runs (Final Draft splits a paragraph into runs at every change of style). FDX has no line numbers we
can rely on, so errors name the paragraph (its position in the script, counting from 1).

expat, under defusedxml, reads UTF-8, UTF-16, ISO-8859-1 and ASCII itself, and no multi-byte encoding
declared in the XML declaration (Shift_JIS, EUC-JP, Big5, GB2312: what Final Draft files written in
Japan, Taiwan or China may use), and none of those under another name (``utf8``). Those are decoded here
into UTF-8 first; an encoding Python does not know, or bytes that are not in it, are an import error that
names it.
"""

from __future__ import annotations

import codecs
import re
import xml.etree.ElementTree as ET
from typing import Any

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from stories.exports.fdx import CHARACTER, DIALOGUE, PARENTHETICAL, SCENE_HEADING, TRANSITION
from stories.imports.builder import (
    ScreenplayBuilder,
    ScreenplayImportError,
    one_line,
    parenthetical_inner,
    text_block,
)


def screenplay_from_fdx(data: bytes) -> dict[str, Any]:
    """The contract JSON for an FDX document; raises ScreenplayImportError naming the paragraph."""
    root = _root(data)
    builder = ScreenplayBuilder()
    _title(root, builder)
    body = root.find("Content")
    paragraphs = list(body.iter("Paragraph")) if body is not None else []
    _Reader(builder).read(paragraphs)
    return builder.content()


# The XML declaration's encoding, where the file starts with one in an ASCII-compatible encoding.
_DECLARED = re.compile(rb"""\A(?:\xef\xbb\xbf)?\s*<\?xml\s[^>]*?\bencoding\s*=\s*["']([^"']{1,40})["']""")
# The names expat reads itself (case-blind). It knows no aliases: "utf8", "UTF_8" or "u8" were read as an
# unknown single-byte encoding, and the first letter past ASCII was "not well-formed XML".
_EXPAT_READS = frozenset({"UTF-8", "UTF-16", "ISO-8859-1", "US-ASCII"})


def _expat_readable(data: bytes) -> bytes:
    """``data``, or its text in UTF-8 when it declares an encoding by a name expat cannot read itself."""
    declared = _DECLARED.match(data)
    if declared is None:
        return data
    name = declared.group(1).decode("ascii", "replace")
    try:
        codec = codecs.lookup(name)
    except LookupError:
        raise ScreenplayImportError(f"the file declares an encoding we do not know ({name})") from None
    if name.upper() in _EXPAT_READS:
        return data
    try:
        text = data.decode(codec.name)
    except (LookupError, UnicodeError, ValueError):  # not a text encoding (rot13, zlib), or not in it
        raise ScreenplayImportError(
            f"the file is not readable as the encoding it declares ({name})"
        ) from None
    # The first "encoding=" is the declaration's: it now says what the bytes are.
    return re.sub(r"""(encoding\s*=\s*["'])[^"']*""", r"\1UTF-8", text.lstrip("\ufeff"), count=1).encode()


def _root(data: bytes) -> ET.Element:
    try:
        root = fromstring(_expat_readable(data), forbid_dtd=True)
    except ET.ParseError as error:
        _utf8_check(data)
        line, column = error.position
        raise ScreenplayImportError(
            f"this is not well-formed XML (column {column})", where=f"line {line}"
        ) from None
    except DefusedXmlException:
        raise ScreenplayImportError("the file declares a DTD or entities, which are refused") from None
    except (LookupError, ValueError):  # an encoding expat refuses that the check above did not see
        raise ScreenplayImportError("the file's text encoding cannot be read; save it as UTF-8") from None
    if root.tag != "FinalDraft":
        raise ScreenplayImportError(
            f"this is XML but not a Final Draft document (its root is <{root.tag[:40]}>)"
        )
    return root


def _utf8_check(data: bytes) -> None:
    """Refuse, naming the byte, a file expat reads as UTF-8 (no UTF-16 mark, no other encoding declared)
    that is not: expat's "not well-formed XML" at an accent said nothing of the encoding."""
    declared = _DECLARED.match(data)
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or (
        declared is not None and declared.group(1).upper() not in (b"UTF-8", b"UTF8", b"UTF_8")
    ):
        return
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ScreenplayImportError(
            f"the file is not UTF-8 text (byte {error.start + 1} cannot be read), which an FDX is unless "
            "its XML declaration names another encoding; save it as UTF-8 and import it again",
            where=f"line {line}",
        ) from None


def _title(root: ET.Element, builder: ScreenplayBuilder) -> None:
    # Our exporter (and Final Draft's default title page) puts the title in the first non-empty paragraph.
    for paragraph in root.iterfind("TitlePage/Content/Paragraph"):
        title = one_line(_text(paragraph))
        if title:
            builder.set_title(title, where="the title page")
            return


def _text(paragraph: ET.Element) -> str:
    """The text of the paragraph's outermost ``Text`` runs, each read once with whatever it contains.

    A run inside another run is part of the outer one's text already: reading it again repeated it,
    and runs nested thousands deep multiplied a small file's text by their depth.
    """
    parts: list[str] = []
    stack = list(reversed(paragraph))  # a walk without recursion: nesting depth is the file's choice
    while stack:
        element = stack.pop()
        if element.tag == "Text":
            parts.append("".join(element.itertext()))
        else:
            stack.extend(reversed(element))
    return "".join(parts)


class _Reader:
    """Walks the script's paragraphs, grouping a Character with the Parenthetical and Dialogue after it."""

    def __init__(self, builder: ScreenplayBuilder) -> None:
        self.builder = builder
        self.character = ""
        self.parenthetical = ""
        self.words: list[str] = []
        self.where = ""

    def read(self, paragraphs: list[ET.Element]) -> None:
        for number, paragraph in enumerate(paragraphs, start=1):
            if paragraph.find(".//Paragraph") is not None:
                # A wrapper (Final Draft's dual dialogue): its own paragraphs come next in the walk.
                continue
            self.paragraph(paragraph.get("Type", ""), _text(paragraph), where=f"paragraph {number}")
        self.flush()

    def paragraph(self, kind: str, text: str, *, where: str) -> None:
        if kind in (PARENTHETICAL, DIALOGUE) and self.character:
            self.speech_part(kind, text, where)
            return
        self.flush()
        if kind == SCENE_HEADING:
            self.builder.heading(one_line(text), where=where)
        elif kind == CHARACTER:
            # An empty one (Final Draft leaves one where Enter was pressed after a speech) names no one:
            # it is skipped, and a Dialogue after it, which nobody speaks, is read as action.
            self.character, self.where = one_line(text), where
        elif kind == TRANSITION:
            self.builder.action(one_line(text), where=where, kind="transition")
        else:
            # Action, General, Shot and any other type: one action each, so no text is lost.
            self.builder.action(text_block(text.splitlines()), where=where)

    def speech_part(self, kind: str, text: str, where: str) -> None:
        if kind == PARENTHETICAL:
            if self.words:
                self.speech_flush()
            self.parenthetical = " ".join(filter(None, [self.parenthetical, one_line(text)]))
        else:
            self.words.extend(text.splitlines() or [""])

    def flush(self) -> None:
        if self.character:
            self.speech_flush()
            self.character = ""

    def speech_flush(self) -> None:
        self.builder.dialogue(
            character=self.character,
            parenthetical=parenthetical_inner(self.parenthetical),
            text=text_block(self.words),
            where=self.where,
        )
        self.parenthetical, self.words = "", []


__all__ = ["screenplay_from_fdx"]

"""Imports of a screenplay from Fountain or Final Draft (FDX) into the contract's JSON.

``screenplay_import`` is the one entry point: bytes (an upload) or text (pasted Fountain) in, the
contract's JSON out, or a ``ScreenplayImportError`` that says what is wrong and where. Limits
(``STORY_IMPORT_MAX_BYTES``, ``STORY_IMPORT_MAX_SCENES``, ``STORY_IMPORT_MAX_ELEMENTS``,
``STORY_IMPORT_MAX_CHARACTERS``) are read at call time.
"""

from __future__ import annotations

import codecs
from typing import Any, Literal

from django.conf import settings

from stories.exports.screenplay import one_line as export_line
from stories.imports.builder import ScreenplayImportError
from stories.imports.fdx import screenplay_from_fdx
from stories.imports.fountain import screenplay_from_fountain
from stories.validation import character_key

ImportFormat = Literal["fountain", "fdx"]
IMPORT_EXTENSIONS: dict[str, ImportFormat] = {
    ".fountain": "fountain",
    ".spmd": "fountain",
    ".txt": "fountain",
    ".fdx": "fdx",
}

__all__ = [
    "IMPORT_EXTENSIONS",
    "ScreenplayImportError",
    "characters_carried_over",
    "import_format_for",
    "screenplay_from_fdx",
    "screenplay_from_fountain",
    "screenplay_import",
]


def import_format_for(filename: str) -> ImportFormat:
    """The format a file name says; a name we do not read is refused naming the ones we do."""
    lowered = filename.lower()
    for extension, fmt in IMPORT_EXTENSIONS.items():
        if lowered.endswith(extension):
            return fmt
    raise ScreenplayImportError(
        f"{filename[:80]!r} is not a file we can import; use one of: {', '.join(IMPORT_EXTENSIONS)}"
    )


def import_too_large(size: int, *, what: str = "file") -> ScreenplayImportError:
    """The one wording of STORY_IMPORT_MAX_BYTES, for a file, pasted text and the editor's text alike (the
    editor's page says it too, before sending: static/js/screenplay-editor.js)."""
    return ScreenplayImportError(
        f"the {what} is {size} bytes; the limit is {settings.STORY_IMPORT_MAX_BYTES} bytes (STORY_IMPORT_MAX_BYTES)"
    )


def screenplay_import(
    *, data: bytes | str, fmt: ImportFormat, edited: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The contract JSON for a Fountain or FDX document, within the size and scene limits; ``edited``,
    for Fountain, is the version the text was edited from (``screenplay_from_fountain``)."""
    size = len(data.encode() if isinstance(data, str) else data)
    if size > settings.STORY_IMPORT_MAX_BYTES:
        raise import_too_large(size, what="text" if isinstance(data, str) else "file")
    if isinstance(data, bytes) and _blank(data):
        # An empty upload was read as a document: "not well-formed XML (column 0)" for an FDX.
        raise ScreenplayImportError("the file is empty")
    if fmt == "fdx" or (edited is None and _final_draft_document(data)):
        # A Final Draft file under another name (``x.fdx.txt``, as a mail client saves it) or pasted:
        # read as Fountain, it was refused for having "no scene heading", which said nothing of why.
        return screenplay_from_fdx(data.encode() if isinstance(data, str) else data)
    return screenplay_from_fountain(_text(data), edited=edited)


def _final_draft_document(data: bytes | str) -> bool:
    """Whether the document is Final Draft's XML: a ``<FinalDraft`` root in its first kilobyte (after
    an XML declaration, comments, a byte-order mark). No Fountain screenplay begins with an element."""
    head = data[:1024] if isinstance(data, str) else data[:1024].decode("utf-8", errors="replace")
    return head.lstrip("\ufeff \t\r\n").startswith("<") and "<FinalDraft" in head


def _blank(data: bytes) -> bool:
    """Nothing but a byte-order mark and white space: as empty as an empty file to whoever saved it (an
    editor's new file, saved with its mark)."""
    return not data.decode(_encoding_by_mark(data), errors="replace").strip()


def _text(data: bytes | str) -> str:
    """The document's text, read the same way whether it was uploaded or pasted.

    A file is UTF-8, unless a byte-order mark says it is UTF-16 or UTF-32 (Windows editors save
    "Unicode" text as UTF-16 with a mark); the mark itself is dropped. Pasted text (an editor's copy of
    such a file) keeps the mark as U+FEFF, which made "Title:" on the first line no title page key, so
    it is dropped there too.
    """
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    encoding = _encoding_by_mark(data)
    if encoding == "utf-8-sig" and 0 in data[:2]:
        # UTF-16 without a mark: text in ASCII letters reads as UTF-8 with a NUL after (or before) every
        # one, which was refused as a character name holding a NUL.
        raise ScreenplayImportError(
            f"the file is not UTF-8 text (byte {data.index(0) + 1} is a NUL, as in UTF-16 without a "
            "byte-order mark); save it as UTF-8 and import it again"
        )
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        name = _ENCODING_NAMES[encoding]
        marked = "" if encoding == "utf-8-sig" else f"starts with a {name} byte-order mark but "
        raise ScreenplayImportError(
            f"the file {marked}is not {name} text (byte {error.start + 1} cannot be read); "
            "save it as UTF-8 and import it again"
        ) from None


# Longest marks first: UTF-32 LE's mark starts with UTF-16 LE's.
_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_ENCODING_NAMES = {"utf-8-sig": "UTF-8", "utf-16": "UTF-16", "utf-32": "UTF-32"}


def _encoding_by_mark(data: bytes) -> str:
    """The codec a leading byte-order mark names (``utf-16`` and ``utf-32`` read the mark's byte
    order and drop it); without one, ``utf-8-sig`` (UTF-8, dropping its own mark if there is one)."""
    for mark, encoding in _BYTE_ORDER_MARKS:
        if data.startswith(mark):
            return encoding
    return "utf-8-sig"


def characters_carried_over(*, parsed: dict[str, Any], base: object) -> list[dict[str, Any]]:
    """The base version's characters (personas, descriptions) first, then new speakers without a persona.

    Fountain has no character list, so an edit would otherwise drop every persona and description.
    A base character whose name Fountain cannot hold as it is (a run of spaces, a zero-width space) is
    read back under the name its cue is written as: it takes that name, keeping its persona, when no
    other character has it.
    """
    characters = base.get("characters") if isinstance(base, dict) else None
    listed = [c for c in characters if isinstance(c, dict)] if isinstance(characters, list) else []
    # A version may list a name twice, or written two ways ("ANA" and "Ana": stories.validation's
    # character_key; a model's may, a writer's no longer can): its first entry is kept, so that an
    # edit of it can be saved.
    kept: list[dict[str, Any]] = []
    keys: set[str] = set()
    for character in listed:
        name = character.get("name")
        if not isinstance(name, str) or character_key(name) not in keys:
            keys.add(character_key(name) if isinstance(name, str) else "")
            kept.append(character)
    known: set[object] = {character.get("name") for character in kept}
    speakers = {c["name"] for c in parsed["characters"]}
    for i, character in enumerate(kept):
        name = character.get("name")
        read = (export_line(name) or "UNNAMED") if isinstance(name, str) else name
        if name not in speakers and read in speakers and read not in known:
            kept[i] = {**character, "name": read}
            known.add(read)
    return kept + [c for c in parsed["characters"] if c["name"] not in known]

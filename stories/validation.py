"""Checks for text that the database cannot store.

PostgreSQL rejects NUL bytes in text and JSON, and no database driver can encode a lone UTF-16
surrogate (JSON lets a client send "\\ud800"). Both would surface as a 500 at save time, so every
boundary that accepts text from outside runs it through here first and gives the client a 400.
Version numbers given as text (a page's ``?version=``, the diff's ``?from=``) are read here too.
"""

from __future__ import annotations

import re
import unicodedata

from django.core.exceptions import ValidationError
from django.utils.deconstruct import deconstructible

# The one NUL and lone-surrogate check (storyproject.untrusted), used here for every stored text.
from storyproject.untrusted import one_line_problem, text_problem, text_visible

__all__ = [
    "VERSION_NUMBER_MAX",
    "StorableTextValidator",
    "json_problem",
    "text_clean_or_reject",
    "text_field_clean",
    "text_field_problem",
    "text_problem",
    "text_visible",
    "title_problem",
    "version_number_parse",
]


def title_problem(title: str) -> str | None:
    """Why ``title`` cannot be a story's title (as a predicate: "contains ..."), or None when it can.

    A title is one line, as the pages' title field (a text input, which drops line breaks) and every
    import (``one_line``) make it: a newline or another control character from the API or the
    WebSocket is refused, never quoted back.
    """
    problem = text_problem(title)  # NUL and lone surrogates first, as for any text (text_field_problem)
    if problem is not None:
        return problem
    problem = one_line_problem(title)
    if problem is not None:
        return f"{problem}; a title is one line"
    if title and not text_visible(title):
        return "has no visible character; a title is something to read"
    return None


# What cannot be in text a writer types (a plot, instructions): C0 control characters but tab, line
# feed and carriage return, DEL, and the C1 controls. No keyboard or text area makes them; pasted or
# sent through the API, they reach the prompt and the pages as invisible characters or escape
# sequences (a terminal's, in generate_screenplay's output).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


# The white space trimmed around a text field: what str.strip() drops but the control characters a field
# refuses (VT, FF, U+001C-U+001F and U+0085 are white space to Python). Those were cut off a plot, a
# title or instructions and the text taken, where anywhere inside it the same character is refused.
TRIMMED_SPACE = (
    " \t\n\r\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


def text_trimmed(text: str) -> str:
    """``text`` without the white space around it, its control characters kept (to be refused)."""
    return text.strip(TRIMMED_SPACE)


def text_field_problem(text: str) -> str | None:
    """Why ``text`` cannot be a writer's free text, a plot or instructions (as a predicate: "contains
    ..."), or None when it can. Lines and tabs are kept; the control character found is named by its
    code point, never quoted back."""
    problem = text_problem(text)
    if problem is not None:
        return problem
    found = _CONTROL.search(text)
    if found is None:
        return None
    return (
        f"contains a control character (U+{ord(found.group()):04X}); only tabs and line breaks may be in it"
    )


def text_field_clean(text: str) -> str:
    """``text`` without the control characters ``text_field_problem`` refuses (tabs and line breaks
    stay), for free text the writer did not type: an imported logline becomes a story's plot this way,
    as an imported title loses them on its one line (``one_line``)."""
    return _CONTROL.sub("", text)


# The largest version number the database stores (a PositiveIntegerField: PostgreSQL's integer).
VERSION_NUMBER_MAX = 2**31 - 1


def version_number_parse(raw: str) -> int | None:
    """``raw`` as a version number from 1 to VERSION_NUMBER_MAX, or None when it is not one.

    Every interface applies the same rule: None is a 400; a number that names no version of the story
    is a 404, however large, as long as the database could store it. ASCII digits only: ``int()``
    would also read a full-width or Arabic-Indic digit.
    """
    raw = raw.strip()
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(VERSION_NUMBER_MAX)):
        return None
    number = int(raw)
    return number if 0 < number <= VERSION_NUMBER_MAX else None


def text_clean_or_reject(value: str, *, field: str = "text") -> str:
    """Return ``value`` unchanged when the database can store it; raise ValidationError otherwise.

    The error names the field and the problem but never echoes the value: echoing a lone surrogate
    would make the error response itself unencodable.
    """
    problem = text_problem(value)
    if problem is not None:
        raise ValidationError(f"{field} {problem}.", code="unstorable_text")
    return value


def json_problem(value: object, *, max_depth: int = 32) -> str | None:
    """Like ``text_problem`` for every key and string inside a JSON value, bounded in depth."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            return f"is nested deeper than {max_depth} levels"
        if isinstance(item, str):
            problem = text_problem(item)
            if problem is not None:
                return problem
        elif isinstance(item, dict):
            stack.extend((key, depth + 1) for key in item)
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return None


@deconstructible
class StorableTextValidator:
    """A model/form/serializer validator wrapping ``text_clean_or_reject``."""

    def __init__(self, field: str = "text") -> None:
        self.field = field

    def __call__(self, value: object) -> None:
        if isinstance(value, str):
            text_clean_or_reject(value, field=self.field)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StorableTextValidator) and other.field == self.field

    def __hash__(self) -> int:
        return hash(self.field)


def character_key(name: str) -> str:
    """What makes two character names one character: the name composed (NFC) and case-folded, so
    "ANA", "Ana" and "ana" (or "RENÉE" typed with a combining accent) are one name. A screenplay prints
    a cue in capitals: such names cannot be told apart on the page."""
    return unicodedata.normalize("NFC", name).casefold()

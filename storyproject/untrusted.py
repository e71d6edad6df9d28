"""Text and JSON from outside, checked so that a hostile value is an error naming the problem.

Python's json module accepts what the database cannot store or cannot even parse without failing:
NUL in strings and keys (PostgreSQL refuses it in jsonb), lone surrogates such as "\\ud800" (no codec
encodes them), NaN, Infinity and 1e400 (parsed as inf; ``json.dumps`` writes "Infinity", which is not
JSON and which PostgreSQL refuses), integers past 4,300 digits (CPython's int max str digits: a
``ValueError``, not a ``JSONDecodeError``) and deep nesting (a ``RecursionError``). Each of those was a
500 in the admin; every boundary that takes JSON text from outside parses it with
``json_loads_untrusted``, and ``json_value_problem`` checks values built some other way. A key given
twice in one object is refused too: json.loads keeps the last without a word, so an editor's raw JSON
or a card with "description" twice lost the first one silently.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from urllib.parse import unquote_to_bytes

MAX_DEPTH = 32
# Far more than any persona or request needs (2**63 has 19 digits), far below CPython's 4,300.
MAX_INT_DIGITS = 64
_INT_LIMIT = 10**MAX_INT_DIGITS
_SURROGATE = re.compile("[\ud800-\udfff]")


class UntrustedJSONError(ValueError):
    """The text is not JSON we accept. The message names the problem and where, never the value."""


class _TooDeepError(UntrustedJSONError):
    """Nested deeper than the parser can go (a few hundred levels: Python's recursion limit)."""


_DEEPER_THAN_MAX = f"The JSON is nested deeper than {MAX_DEPTH} levels."


def json_loads_untrusted(text: str | bytes) -> object:
    """Parse ``text``; raise ``UntrustedJSONError`` for invalid JSON or a value we cannot store."""
    try:
        value = json_parse_untrusted(text)
    except _TooDeepError:
        # Past MAX_DEPTH, which json_value_problem refuses below: the same answer at any depth.
        raise UntrustedJSONError(_DEEPER_THAN_MAX) from None
    problem = json_value_problem(value)
    if problem is not None:
        raise UntrustedJSONError(problem)
    return value


def json_parse_untrusted(text: str | bytes, *, constants_allowed: bool = True) -> object:
    """Parse ``text`` within the limits on its shape (nesting, integer length, a key twice); raise
    ``UntrustedJSONError`` past them. Its strings and numbers are left to the caller, who checks them
    with ``json_value_problem`` or field by field (the API's serializers name the field), except that
    without ``constants_allowed`` NaN, Infinity and -Infinity (not JSON; json.loads takes them) are
    refused here."""
    try:
        return json.loads(
            text,
            parse_int=_int_parse,
            parse_constant=None if constants_allowed else _constant_refuse,
            object_pairs_hook=_object_without_repeated_keys,
        )
    except RecursionError:
        # Not MAX_DEPTH: the parser itself takes a few hundred levels; only json_value_problem holds a
        # value to MAX_DEPTH (a socket message or an API body was told "deeper than 32 levels" at 2,000
        # while 500 were read).
        raise _TooDeepError("The JSON is nested too deeply to be read.") from None
    except json.JSONDecodeError as error:
        if error.msg.startswith("Unexpected UTF-8 BOM"):
            # json.loads's own words end in Python's advice to itself ("decode using utf-8-sig").
            raise UntrustedJSONError(
                "The text is not valid JSON: it starts with a byte order mark (U+FEFF)."
            ) from None
        raise UntrustedJSONError(
            f"The text is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}."
        ) from None
    except UnicodeDecodeError:
        raise UntrustedJSONError("The JSON is not UTF-8 text.") from None


def json_value_problem(value: object) -> str | None:
    """Why a JSON-like value cannot be stored, naming where in it; None when it can."""
    stack: list[tuple[object, tuple[str, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if len(path) > MAX_DEPTH:
            return _DEEPER_THAN_MAX
        problem = _scalar_problem(item)
        if problem is not None:
            return f"{_where(path)}: {problem}"
        if isinstance(item, dict):
            stack.extend((key, (*path, "(a key)")) for key in item)
            stack.extend((child, (*path, str(key))) for key, child in item.items())
        elif isinstance(item, list):
            stack.extend((child, (*path, str(index))) for index, child in enumerate(item))
    return None


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored or sent on (as a predicate: "contains ..."); None when it can."""
    if "\x00" in text:
        return "contains a NUL (\\u0000) character, which cannot be stored"
    if _SURROGATE.search(text):
        return "contains an unpaired UTF-16 surrogate (\\ud800-\\udfff), which is not valid Unicode"
    return None


def text_storable(text: str) -> str:
    """``text`` with each NUL and lone surrogate replaced by U+FFFD: text received (a model's reply)
    that must be kept as it came, as far as any database can store it."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    return _SURROGATE.sub("\ufffd", text)


def _scalar_problem(item: object) -> str | None:
    if isinstance(item, str):
        return text_problem(item)
    if isinstance(item, float) and not math.isfinite(item):
        return "holds a number that is not finite (NaN, Infinity, or beyond ±1.8e308)"
    if isinstance(item, int) and not isinstance(item, bool) and abs(item) >= _INT_LIMIT:
        return f"holds an integer longer than {MAX_INT_DIGITS} digits"
    return None


def _int_parse(digits: str) -> int:
    # Checked before int() converts it: past 4,300 digits int() raises, and long before that it is slow.
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise UntrustedJSONError(f"The JSON holds an integer longer than {MAX_INT_DIGITS} digits.")
    return int(digits)


def _constant_refuse(name: str) -> float:
    raise UntrustedJSONError(f"The JSON holds {name}, which is not a JSON number.")


def _object_without_repeated_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    value = dict(pairs)
    if len(value) == len(pairs):
        return value
    seen: set[str] = set()
    repeated = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
    raise UntrustedJSONError(
        f'The JSON has the key "{_where((repeated,))}" twice in one object (only the last would be kept): '
        "remove one."
    )


def _where(path: tuple[str, ...]) -> str:
    # Keys are untrusted too: escaped (json.dumps' ASCII escapes) and cut, so the message stays printable.
    return "/".join(json.dumps(part[:40])[1:-1] for part in path) or "(top level)"


def text_quoted(value: str, *, limit: int = 80) -> str:
    """``value`` quoted for a message (``repr``: control characters and lone surrogates escaped), cut to
    ``limit`` characters with its length said: a command line or a request can carry 5,000 characters,
    which an error line should not repeat."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit] + '…'!r} ({len(value)} characters)"


# Characters that draw nothing: spaces and separators, control and format characters (direction marks
# and overrides, isolates, zero-width spaces and joiners, the soft hyphen).
_UNSEEN_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cf", "Cc"})


# What cannot be in one line of text: C0 and C1 control characters (newline, tab, escape...), DEL, and
# the Unicode line and paragraph separators.
_NOT_ONE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line_problem(text: str) -> str | None:
    """Why ``text`` is not one line of text (as a predicate: "contains ..."), or None when it is: a
    story's title, a persona's display name. The character is named by its code point, never quoted."""
    found = _NOT_ONE_LINE.search(text)
    if found is None:
        return None
    return f"contains a line break or another control character (U+{ord(found.group()):04X})"


# Letters, symbols and marks that draw nothing although their category is not one of those above: the
# Hangul fillers (U+115F, U+1160, U+3164, U+FFA0: letters, and the usual way to make a "blank" name),
# the Braille blank (U+2800), and the default-ignorable marks (the combining grapheme joiner, Khmer's
# inherent vowels, Mongolian and other variation selectors), which Unicode asks renderers not to show.
_BLANK = re.compile(
    "[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u2800\u3164\ufe00-\ufe0f\uffa0\U000e0100-\U000e01ef]"
)


def text_visible(text: str) -> bool:
    """Whether ``text`` draws anything: a story title or a persona's display name made only of marks
    such as U+200F, or of Hangul fillers (U+3164), was saved, and the link or button naming it had no
    text to click on."""
    return any(unicodedata.category(c) not in _UNSEEN_CATEGORIES and not _BLANK.match(c) for c in text)


def form_body_is_text(body: bytes, encoding: str) -> bool:
    """Whether every name and value of a urlencoded form ``body`` is text in ``encoding`` once
    percent-decoded (Django decodes them with ``errors="replace"``, ``QueryDict``)."""
    try:
        for part in body.split(b"&"):
            unquote_to_bytes(part.replace(b"+", b" ")).decode(encoding)
    except UnicodeDecodeError:
        return False
    return True

"""The one token estimate, for text whose exact count the model has not reported (yet).

Persona contexts and their budgets, the prompt-cache minimum (stories.generation.cache_rules), the
progress of a streaming call and the usage of a call cut off before its final count all use it.
Pure, no Django state.
"""

from __future__ import annotations

import bisect
import re

_MIDDLE_CHARS = re.compile("[\u0080-\u2fff]")
_WIDE_CHARS = re.compile("[^\x00-\u2fff]")


def token_estimate(text: str) -> int:
    """Estimated Claude tokens in ``text``, rounded up.

    The rule: one token per 3.8 ASCII characters, 0.6 per character from U+0080 to U+2FFF (accented
    Latin, Greek, Cyrillic, ...) and 1.2 per character from U+3000 up (CJK, emoji). docs/personas.md
    ("Persona contexts") gives how far it is from a real BPE tokenizer on known texts.
    """
    if not text:
        return 0
    # Counting with compiled patterns keeps this C-speed: it runs on every context built.
    middle = 0 if text.isascii() else len(_MIDDLE_CHARS.findall(text))
    wide = 0 if text.isascii() else len(_WIDE_CHARS.findall(text))
    ascii_chars = len(text) - middle - wide
    # In 190ths of a token (1/3.8 = 50/190, 0.6 = 114/190, 1.2 = 228/190): exact, no float rounding.
    return -(-(50 * ascii_chars + 114 * middle + 228 * wide) // 190)


def text_within_tokens(text: str, max_tokens: int) -> str:
    """The longest start of ``text`` whose estimate is at most ``max_tokens``."""
    if token_estimate(text) <= max_tokens:
        return text
    end = bisect.bisect_right(range(len(text) + 1), max_tokens, key=lambda n: token_estimate(text[:n])) - 1
    return text[:end]

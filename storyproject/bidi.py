"""Text from outside shown inside our own sentences, its right-to-left marks kept to itself.

A persona's display name may hold right-to-left letters or an override (U+202E) left open: inside a
sentence ("The persona “X (key)” was changed successfully."), an open override draws the rest of the
sentence backwards. Unicode's isolates (FSI ... PDI, UAX #9 rules X5c and X6a) keep the text to itself
in plain text and HTML alike (a page's <title>, a message, a breadcrumb, an attribute), and the closing
PDI also ends any embedding or override opened inside. A PDI in the text itself would close the isolate
early, and an isolate the text opens would take our PDI: such unmatched marks are balanced first
(an HTML <bdi> is defeated by a stray PDI in the same way).
"""

from __future__ import annotations

import unicodedata

FSI, PDI = "\u2068", "\u2069"
_ISOLATE_INITIATORS = frozenset("\u2066\u2067\u2068")  # LRI, RLI, FSI
# The bidirectional classes that can reorder the text around them: right-to-left letters and the
# explicit embeddings, overrides and isolates. Text without any is returned as it is.
_REORDERING = frozenset({"R", "AL", "LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI"})


def bidi_isolated(text: str) -> str:
    """``text`` between FSI and PDI, its unmatched isolate marks balanced, when it could reorder
    what surrounds it; otherwise ``text`` unchanged."""
    if not any(unicodedata.bidirectional(char) in _REORDERING for char in text):
        return text
    kept, open_isolates = [], 0
    for char in text:
        if char in _ISOLATE_INITIATORS:
            open_isolates += 1
        elif char == PDI:
            if not open_isolates:
                continue  # it would close our isolate
            open_isolates -= 1
        kept.append(char)
    return FSI + "".join(kept) + PDI * open_isolates + PDI

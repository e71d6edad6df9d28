"""A bound on what one page's diffs may ask of ``difflib.SequenceMatcher``.

SequenceMatcher's time grows with the pairs of equal items it can match (each line or word of one side
against its copies on the other), and far faster than that when they repeat: a scene of 1,000 copies of
one line against the same with every other line changed took 17 s; a persona field of 1,500 copies of
one word, 44 s. Ordinary text stays far below the bound (a scene has a few dozen pairs, a 1,000-word
persona backstory about 7,500). Past it, a caller shows the part whole: old deleted, new inserted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

# At the worst (one item repeated about 140 times on both sides), about 0.05 s of SequenceMatcher.
MAX_EQUAL_PAIRS = 20_000
MAX_EQUAL_PAIRS_IN_ALL = 200_000


class DiffBudget:
    """The equal pairs a page's diffs may still match: at most ``MAX_EQUAL_PAIRS`` in one diff and
    ``MAX_EQUAL_PAIRS_IN_ALL`` over all of them."""

    def __init__(self) -> None:
        self.left = MAX_EQUAL_PAIRS_IN_ALL

    def spend(self, old: Sequence[str], new: Sequence[str]) -> bool:
        """Whether ``old`` and ``new`` may be matched item by item (their pairs are then spent)."""
        counts = Counter(new)
        pairs = sum(counts[item] for item in old)
        if pairs > min(MAX_EQUAL_PAIRS, self.left):
            return False
        self.left -= pairs
        return True

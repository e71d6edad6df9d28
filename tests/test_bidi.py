"""storyproject.bidi: outside text isolated inside our own sentences."""

from __future__ import annotations

import pytest

from storyproject.bidi import bidi_isolated


@pytest.mark.parametrize("text", ["Sam Marlowe", "Zoë “the ghost”", "京都の詩人", ""])
def test_text_that_cannot_reorder_its_surroundings_is_left_as_it_is(text: str) -> None:
    assert bidi_isolated(text) == text


@pytest.mark.parametrize(
    ("text", "isolated"),
    [
        ("\u202eMallory", "\u2068\u202eMallory\u2069"),
        ("\u05e9\u05dc\u05d5\u05dd", "\u2068\u05e9\u05dc\u05d5\u05dd\u2069"),  # Hebrew
        # A PDI of its own would close the isolate and let the override after it loose: dropped.
        ("Mallory\u2069 \u202eevil", "\u2068Mallory \u202eevil\u2069"),
        # An isolate it opens is closed, so the last PDI closes ours.
        ("\u2067evil", "\u2068\u2067evil\u2069\u2069"),
        # Balanced isolates inside are kept.
        ("a \u2067b\u2069 c", "\u2068a \u2067b\u2069 c\u2069"),
    ],
)
def test_text_that_could_reorder_its_surroundings_is_isolated_and_balanced(text: str, isolated: str) -> None:
    assert bidi_isolated(text) == isolated

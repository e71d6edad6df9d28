"""A token estimate for text whose exact count the model has not reported yet."""

from __future__ import annotations

# Claude's tokenizer averages about four characters of English per token.
CHARS_PER_TOKEN = 4


def token_estimate(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN

"""Anthropic's prompt-cache rules as the prompts need them: where a breakpoint can pay, and the hit rate.

Rules (https://platform.claude.com/docs/en/build-with-claude/prompt-caching): a ``cache_control``
breakpoint caches the whole prefix up to it, in the order tools, system, messages; at most four
breakpoints a request; a prefix shorter than the model's minimum is silently not cached (both cache
counts stay 0); an entry lives five minutes, refreshed by every hit; and any change before a breakpoint,
including a different ``output_config.format``, misses it.

The per-model minimums live in the model registry (``models_registry.py``), with their sources.
"""

from __future__ import annotations

from typing import Any

from stories.generation.models_registry import model_get
from storyproject.tokens import token_estimate

MAX_BREAKPOINTS = 4
# A model the registry does not know: assume the largest minimum rather than mark prefixes that may
# never be cached.
_UNKNOWN_MODEL_MIN_TOKENS = 4096
# Our estimate (four characters a token) runs below the real count for JSON-heavy text, so a prefix
# estimated at this share of the minimum may well reach it; a breakpoint that misses costs nothing.
_ESTIMATE_MARGIN = 0.8
EPHEMERAL = {"type": "ephemeral"}


def min_cacheable_tokens(model: str) -> int:
    """The shortest prefix ``model`` caches, from the model registry (the one place listing models)."""
    known = model_get(model)
    return known.min_cache_tokens if known is not None else _UNKNOWN_MODEL_MIN_TOKENS


def cache_breakpoints_mark(*, model: str, blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``blocks`` (system text blocks, stable first) with ``cache_control`` where the prefix can be cached.

    The last block of the run is marked when the prefix up to it may reach the model's minimum; an
    earlier block is marked only when it does too, so a later call that shares only that part still
    reads it. At most ``MAX_BREAKPOINTS - 1`` marks: one is left for the caller.
    """
    floor = min_cacheable_tokens(model) * _ESTIMATE_MARGIN
    marked: list[dict[str, Any]] = []
    tokens = 0
    for block in blocks:
        tokens += token_estimate(block["text"])
        marked.append({key: value for key, value in block.items() if key != "cache_control"})
        if block.get("cache_control") and tokens >= floor:
            marked[-1]["cache_control"] = EPHEMERAL
    marks = [i for i, block in enumerate(marked) if "cache_control" in block]
    # Over the limit, the longest prefixes keep their marks: they save the most.
    for index in marks[: max(len(marks) - (MAX_BREAKPOINTS - 1), 0)]:
        del marked[index]["cache_control"]
    return marked


def cache_hit_rate(*, cache_read: int, cache_write: int, input_tokens: int) -> float | None:
    """The share of prompt tokens read from the cache: read / (read + write + input), None with none."""
    prompt = cache_read + cache_write + input_tokens
    return cache_read / prompt if prompt else None

"""Anthropic's prompt-cache rules as the prompts need them: where a breakpoint can pay, and the hit rate.

Rules (https://platform.claude.com/docs/en/build-with-claude/prompt-caching): a ``cache_control``
breakpoint caches the whole prefix up to it, in the order tools, system, messages; at most four
breakpoints a request; a prefix shorter than the model's minimum is silently not cached (both cache
counts stay 0); an entry lives five minutes, refreshed by every hit; and any change before a breakpoint,
including a different ``output_config.format``, misses it.

``min_cacheable_tokens`` is the one place that knows the per-model minimums until the model registry
(h6) lands; then it should read the registry instead.
"""

from __future__ import annotations

from typing import Any

from stories.generation.tokens import token_estimate

MAX_BREAKPOINTS = 4
# Minimum cacheable prefix by model family, the most specific prefix first. From the prompt-caching
# page's table (Opus 4.6/4.5 and Haiku 4.5: 4,096; Sonnet 4.x, Opus 4.1/4: 1,024; Haiku 3.x: 2,048)
# and the 5.x models' 512 (Sonnet 5: 1,024) as listed in news.creeta.com's summary of the same page.
_MIN_CACHEABLE_TOKENS = (
    ("claude-opus-4-6", 4096),
    ("claude-opus-4-5", 4096),
    ("claude-haiku-4", 4096),
    ("claude-opus-4-7", 2048),
    ("claude-opus-4", 1024),
    ("claude-sonnet-4", 1024),
    ("claude-sonnet-5", 1024),
    ("claude-opus-5", 512),
    ("claude-3-7-sonnet", 1024),
    ("claude-3-5-haiku", 2048),
    ("claude-3-haiku", 2048),
)
# A model not listed: assume the largest minimum rather than mark prefixes that may never be cached.
_UNKNOWN_MODEL_MIN_TOKENS = 4096
# Our estimate (four characters a token) runs below the real count for JSON-heavy text, so a prefix
# estimated at this share of the minimum may well reach it; a breakpoint that misses costs nothing.
_ESTIMATE_MARGIN = 0.8
EPHEMERAL = {"type": "ephemeral"}


def min_cacheable_tokens(model: str) -> int:
    """The shortest prefix ``model`` caches; the lead points this at the model registry (h6) later."""
    for prefix, tokens in _MIN_CACHEABLE_TOKENS:
        if model.startswith(prefix):
            return tokens
    return _UNKNOWN_MODEL_MIN_TOKENS


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

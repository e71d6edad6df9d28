from __future__ import annotations

import pytest

from stories.generation.cache_rules import cache_breakpoints_mark, cache_hit_rate, min_cacheable_tokens


@pytest.mark.parametrize(
    ("model", "tokens"),
    [
        ("claude-sonnet-4-6", 1024),
        ("claude-opus-4-6", 4096),
        ("claude-haiku-4-5", 4096),
        ("claude-sonnet-5-5", 512),
        ("claude-opus-5-5", 512),
        # Not in the registry: the largest minimum, so no breakpoint is marked that may never pay.
        ("claude-opus-4-1", 4096),
        ("some-future-model", 4096),
    ],
)
def test_each_model_has_its_minimum_cacheable_prefix(model: str, tokens: int) -> None:
    assert min_cacheable_tokens(model) == tokens


def _block(chars: int, *, wanted: bool = True) -> dict[str, object]:
    block: dict[str, object] = {"type": "text", "text": "x" * chars}
    if wanted:
        block["cache_control"] = {"type": "ephemeral"}
    return block


def test_a_breakpoint_is_kept_only_where_the_prefix_may_reach_the_minimum() -> None:
    # Four characters a token: 2,000 characters is 500 tokens, under Sonnet's 1,024; 4,000 more pass it.
    blocks = [_block(2000), _block(4000), _block(100, wanted=False)]
    marked = cache_breakpoints_mark(model="claude-sonnet-4-6", blocks=blocks)
    assert ["cache_control" in block for block in marked] == [False, True, False]
    # For Opus 4.6 (4,096) the whole 1,525 tokens are too few: nothing is marked.
    marked = cache_breakpoints_mark(model="claude-opus-4-6", blocks=blocks)
    assert not any("cache_control" in block for block in marked)


def test_at_most_three_breakpoints_are_marked_leaving_one_of_the_apis_four() -> None:
    marked = cache_breakpoints_mark(model="claude-opus-5-5", blocks=[_block(4000) for _ in range(5)])
    assert ["cache_control" in block for block in marked] == [False, False, True, True, True]


def test_the_hit_rate_is_the_share_of_prompt_tokens_read_from_the_cache() -> None:
    assert cache_hit_rate(cache_read=900, cache_write=0, input_tokens=100) == 0.9
    assert cache_hit_rate(cache_read=0, cache_write=0, input_tokens=0) is None

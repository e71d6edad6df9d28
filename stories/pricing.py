"""What a model call cost, from token usage and the per-model prices in ``settings.STORY_PRICES``."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings

_PER_MILLION = Decimal(1_000_000)


def usage_cost_usd(
    *,
    model: str,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> Decimal | None:
    """The cost in dollars, or None for a model with no configured price (unknown, not free)."""
    prices = settings.STORY_PRICES.get(model)
    if prices is None:
        return None
    # Decimal from str keeps the configured prices exact (0.3 stays 0.3, not 0.299999...).
    total = (
        input_tokens * Decimal(str(prices["input"]))
        + output_tokens * Decimal(str(prices["output"]))
        + cache_read_tokens * Decimal(str(prices["cache_read"]))
        + cache_write_tokens * Decimal(str(prices["cache_write"]))
    )
    return total / _PER_MILLION

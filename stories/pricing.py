"""What a model call cost, from token usage and the per-model prices in the model registry."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings

from stories.generation.models_registry import model_get

_PER_MILLION = Decimal(1_000_000)


def usage_cost_usd(
    *,
    model: str,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> Decimal | None:
    """The cost in dollars, or None for a model with no known price (unknown, not free)."""
    if model == settings.OFFLINE_MODEL:
        return Decimal(0)
    prices = model_get(model)
    if prices is None:
        return None
    # Output tokens include any thinking tokens: the API bills them as output.
    total = (
        input_tokens * prices.input
        + output_tokens * prices.output
        + cache_read_tokens * prices.cache_read
        + cache_write_tokens * prices.cache_write
    )
    return total / _PER_MILLION

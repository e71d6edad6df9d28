from __future__ import annotations

from decimal import Decimal

import pytest

from stories.generation.models_registry import MODELS
from stories.pricing import usage_cost_usd


def test_cost_adds_every_kind_of_token_at_its_price() -> None:
    cost = usage_cost_usd(
        model="claude-sonnet-5-5",
        input_tokens=1_000_000,
        output_tokens=100_000,
        cache_read_tokens=1_000_000,
        cache_write_tokens=100_000,
    )
    # Sonnet 5.5: $2 input, $10 output, $0.10 cache read, $2.50 5-minute cache write per million.
    assert cost == Decimal("2") + Decimal("1") + Decimal("0.1") + Decimal("0.25")


@pytest.mark.parametrize(
    ("model", "input_price"),
    [("claude-sonnet-5-5", "2"), ("claude-opus-5-5", "4"), ("claude-haiku-5-5", "0.10")],
)
def test_the_5_5_models_have_a_price(model: str, input_price: str) -> None:
    # Issue 15: these three had no price, so their runs showed no cost at all.
    assert usage_cost_usd(model=model, input_tokens=1_000_000, output_tokens=0) == Decimal(input_price)


def test_every_registry_model_is_priced_and_caching_costs_more_to_write_than_to_read() -> None:
    for model in MODELS.values():
        assert model.cache_write > model.input > model.cache_read > 0, model.id
        assert usage_cost_usd(model=model.id, input_tokens=1, output_tokens=1) is not None


def test_the_offline_model_is_free_and_an_unknown_model_has_no_price() -> None:
    assert usage_cost_usd(model="offline", input_tokens=10, output_tokens=10) == 0
    assert usage_cost_usd(model="someone-elses-model", input_tokens=10, output_tokens=10) is None

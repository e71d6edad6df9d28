from __future__ import annotations

from decimal import Decimal

from stories.pricing import usage_cost_usd


def test_cost_adds_every_kind_of_token_at_its_price() -> None:
    cost = usage_cost_usd(
        model="claude-sonnet-4-5",
        input_tokens=1_000_000,
        output_tokens=100_000,
        cache_read_tokens=1_000_000,
        cache_write_tokens=100_000,
    )
    assert cost == Decimal("3") + Decimal("1.5") + Decimal("0.3") + Decimal("0.375")


def test_the_offline_model_is_free_and_an_unknown_model_has_no_price() -> None:
    assert usage_cost_usd(model="offline", input_tokens=10, output_tokens=10) == 0
    assert usage_cost_usd(model="someone-elses-model", input_tokens=10, output_tokens=10) is None

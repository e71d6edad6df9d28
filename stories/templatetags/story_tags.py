"""Small display helpers for the story pages. Every output is plain text, left to auto-escaping."""

from __future__ import annotations

from decimal import Decimal

from django import template

from stories.generation.cache_rules import cache_hit_rate
from stories.generation.requests import model_label
from stories.models import GenerationRun
from stories.pricing import usage_cost_usd
from storyproject.bidi import bidi_isolated as _bidi_isolated

register = template.Library()


@register.filter
def bidi_isolated(text: object) -> str:
    """Untrusted text inside the page's own words: isolated, its stray isolate marks balanced, when it
    holds right-to-left text or marks (storyproject.bidi). A stray U+2069 in a title closed the
    isolate around it (a ``<bdi>`` or the title's own U+2068 ... U+2069), and an override after it drew
    the page's words backwards."""
    return _bidi_isolated(str(text))


@register.filter
def parenthetical(text: object) -> str:
    """A parenthetical as it is printed, in parentheses whether or not the model wrote them."""
    value = str(text or "").strip()
    if not value or (value.startswith("(") and value.endswith(")")):
        return value
    return f"({value})"


@register.filter
def run_cost(run: GenerationRun | None) -> Decimal | None:
    if run is None:
        return None
    return usage_cost_usd(
        model=run.model,
        input_tokens=run.input_tokens,
        output_tokens=run.output_tokens,
        cache_read_tokens=run.cache_read_tokens,
        cache_write_tokens=run.cache_write_tokens,
    )


@register.filter
def run_cache_hit(run: GenerationRun) -> str:
    """The share of the run's prompt tokens read from the prompt cache, or a dash with no prompt tokens."""
    rate = cache_hit_rate(
        cache_read=run.cache_read_tokens, cache_write=run.cache_write_tokens, input_tokens=run.input_tokens
    )
    return "—" if rate is None else f"{rate:.0%}"


@register.filter
def usd(amount: Decimal | None) -> str:
    """Dollars with enough digits to show a fraction of a cent; an unknown price shows a dash."""
    if amount is None:
        return "—"
    if amount == 0:
        return "$0.00"
    return f"${amount:.4f}" if amount < 1 else f"${amount:.2f}"


@register.filter
def ms(value: int | None) -> str:
    """A stage timing in milliseconds, or a dash when the stage did not run."""
    if value is None:
        return "—"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value} ms"


# Models as people see them: the built-in offline model is never passed off as an AI.
register.filter("model_label", model_label)


@register.filter
def share(value: int, most: int) -> int:
    """``value`` as a whole percentage of ``most`` (0 to 100), for a bar's width."""
    if not most:
        return 0
    return max(0, min(100, round(100 * value / most)))

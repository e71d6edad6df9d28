"""The Claude models this deployment knows: the one place that lists models, prices and capabilities.

Plain data with no Django state, so ``storyproject.settings`` can check ``STORY_MODEL``/``STORY_MODELS``
against it at start-up. Change a price or add a model here and nowhere else.

Sources (read 2026-11-26):
- Prices, dollars per million tokens (input, output, 5-minute cache write, cache read):
  https://platform.claude.com/docs/en/about-claude/pricing and each model's overview page
  (platform.claude.com/docs/en/models/<model>/overview). Sonnet 5.5's cache read fell from $0.20 to
  $0.10 on 2026-10-07. Haiku 5.5 has two price bands; the one here is for prompts up to 100,000
  tokens, which every prompt of this app is (STORY_MAX_PLOT_CHARS and the persona budget keep it
  far below).
- Retirement dates: the installed SDK's ``anthropic/_data/deprecated_models.py`` (anthropic 2.14:
  claude-sonnet-4-5 on 2026-11-30, claude-opus-4-5 on 2027-01-22), which is also what makes the SDK
  warn on every call to those models.
- Thinking: platform.claude.com/docs/en/build-with-claude/thinking-troubleshooting ("Thinking support,
  defaults, and rejected configurations by model") and the 5.5 models' "What's new" pages: the 4.x
  models think only when asked; Sonnet 5.5 and Haiku 5.5 think adaptively unless told otherwise
  (Sonnet 5.5 rejects ``"disabled"`` with a 400 and takes ``"between_tools"`` as its lowest
  setting); Opus 5.5 always thinks (``"disabled"`` and ``"enabled"`` are both 400s). Manual
  ``"enabled"`` + ``budget_tokens`` is the only mode of the 4.5 models and a 400 on the 5.x ones.
  Thinking tokens are output tokens and count toward ``max_tokens`` (the SDK's ThinkingConfigParam
  docstring says so).
- Minimum cacheable prompt: 1,024 tokens on Sonnet 4.x, 4,096 on Opus 4.5/4.6 and Haiku 4.5
  (build-with-claude/prompt-caching, as quoted in anthropics/anthropic-sdk-python issue 1194; that
  issue and third-party tables report 2,048 in practice on Sonnet 4.6); 512 on the 5.5 models
  (build-with-claude/prompt-caching, "Cache limitations", as quoted in public notes of October 2026:
  "512 tokens for Claude Fable 5.1, Claude Mythos 5.1, Claude Opus 5.5, Claude Opus 5, Claude Sonnet
  5.5, Claude Fable 5, Claude Mythos 5, and Claude Haiku 5.5"; models/opus-5-5/migration-guide,
  "Lower prompt caching minimum": "512 tokens, down from 1,024 tokens on Claude Opus 4.8").
  ``tests/fake_anthropic.py`` keeps the same minimums in its own table (``API_MODELS``).
- Max output (the largest ``max_tokens`` a request may ask for; the API answers more with a 400
  invalid_request_error, "max_tokens: N > M, which is the maximum allowed number of output tokens"):
  128K on the 5.5 models and on Sonnet 4.6 and Opus 4.6 (platform.claude.com/docs/en/models/<model>/overview,
  "Max output: 128K tokens"), 64K on Haiku 4.5 (the comparison table of models/sonnet-5-5/overview),
  Sonnet 4.5 and Opus 4.5 (the models overview of the 4.6 generation: "Max output 64K tokens").
- The 5.x tokenizer counts about 30 % more tokens for the same text than Haiku 4.5's (Haiku 5.5's
  "What's new" page); ``tokens_per_char_factor`` carries that for estimates.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from storyproject.untrusted import text_quoted

# A model this close to its retirement date is refused already: a deployment started now must not
# break on its own a few days later (claude-sonnet-4-5, retiring 2026-11-30, is refused from 11-23).
RETIREMENT_NOTICE = datetime.timedelta(days=7)

ThinkingMode = Literal["budget", "adaptive"]


@dataclass(frozen=True)
class ClaudeModel:
    id: str
    label: str
    input: Decimal
    output: Decimal
    cache_write: Decimal  # a 5-minute cache write
    cache_read: Decimal
    min_cache_tokens: int
    # The largest max_tokens the API takes for this model (thinking included).
    max_output: int
    structured_outputs: bool
    # What a request that says nothing about thinking gets.
    thinks_by_default: bool
    # How thinking is turned on: "budget" ({"type": "enabled", "budget_tokens": N}) or "adaptive".
    thinking_on: ThinkingMode
    # The ``thinking`` parameter that turns it off; None where it cannot be turned off.
    thinking_off: dict[str, str] | None
    retires: datetime.date | None = None
    tokens_per_char_factor: float = 1.0
    legacy: bool = False


_OFF = {"type": "disabled"}

MODELS: dict[str, ClaudeModel] = {
    model.id: model
    for model in (
        ClaudeModel(
            id="claude-sonnet-5-5",
            label="Claude Sonnet 5.5",
            input=Decimal("2"),
            output=Decimal("10"),
            cache_write=Decimal("2.50"),
            cache_read=Decimal("0.10"),
            min_cache_tokens=512,
            max_output=128_000,
            structured_outputs=True,
            thinks_by_default=True,
            thinking_on="adaptive",
            # "disabled" is a 400 on Sonnet 5.5; without tools, "between_tools" means no thinking.
            thinking_off={"type": "between_tools"},
            tokens_per_char_factor=1.3,
        ),
        ClaudeModel(
            id="claude-opus-5-5",
            label="Claude Opus 5.5",
            input=Decimal("4"),
            output=Decimal("20"),
            cache_write=Decimal("5"),
            cache_read=Decimal("0.20"),
            min_cache_tokens=512,
            max_output=128_000,
            structured_outputs=True,
            thinks_by_default=True,
            thinking_on="adaptive",
            thinking_off=None,
            tokens_per_char_factor=1.3,
        ),
        ClaudeModel(
            id="claude-haiku-5-5",
            label="Claude Haiku 5.5",
            input=Decimal("0.10"),
            output=Decimal("0.50"),
            cache_write=Decimal("0.125"),
            cache_read=Decimal("0.01"),
            min_cache_tokens=512,
            max_output=128_000,
            structured_outputs=True,
            thinks_by_default=True,
            thinking_on="adaptive",
            thinking_off=_OFF,
            tokens_per_char_factor=1.3,
        ),
        ClaudeModel(
            id="claude-sonnet-4-6",
            label="Claude Sonnet 4.6 (legacy)",
            input=Decimal("3"),
            output=Decimal("15"),
            cache_write=Decimal("3.75"),
            cache_read=Decimal("0.30"),
            min_cache_tokens=1024,
            max_output=128_000,
            structured_outputs=True,
            thinks_by_default=False,
            thinking_on="adaptive",
            thinking_off=_OFF,
            legacy=True,
        ),
        ClaudeModel(
            id="claude-opus-4-6",
            label="Claude Opus 4.6 (legacy)",
            input=Decimal("5"),
            output=Decimal("25"),
            cache_write=Decimal("6.25"),
            cache_read=Decimal("0.50"),
            min_cache_tokens=4096,
            max_output=128_000,
            structured_outputs=True,
            thinks_by_default=False,
            thinking_on="adaptive",
            thinking_off=_OFF,
            legacy=True,
        ),
        ClaudeModel(
            id="claude-haiku-4-5",
            label="Claude Haiku 4.5 (legacy)",
            input=Decimal("1"),
            output=Decimal("5"),
            cache_write=Decimal("1.25"),
            cache_read=Decimal("0.10"),
            min_cache_tokens=4096,
            max_output=64_000,
            structured_outputs=True,
            thinks_by_default=False,
            thinking_on="budget",
            thinking_off=_OFF,
            legacy=True,
        ),
        ClaudeModel(
            id="claude-opus-4-5",
            label="Claude Opus 4.5 (deprecated)",
            input=Decimal("5"),
            output=Decimal("25"),
            cache_write=Decimal("6.25"),
            cache_read=Decimal("0.50"),
            min_cache_tokens=4096,
            max_output=64_000,
            structured_outputs=True,
            thinks_by_default=False,
            thinking_on="budget",
            thinking_off=_OFF,
            retires=datetime.date(2027, 1, 22),
            legacy=True,
        ),
        # Retired: kept only so that runs already recorded with it keep their price.
        ClaudeModel(
            id="claude-sonnet-4-5",
            label="Claude Sonnet 4.5 (retired)",
            input=Decimal("3"),
            output=Decimal("15"),
            cache_write=Decimal("3.75"),
            cache_read=Decimal("0.30"),
            min_cache_tokens=1024,
            max_output=64_000,
            structured_outputs=True,
            thinks_by_default=False,
            thinking_on="budget",
            thinking_off=_OFF,
            retires=datetime.date(2026, 11, 30),
            legacy=True,
        ),
    )
}

# The current Sonnet (its page calls it "Latest"; Sonnet 4.6 is "Legacy").
DEFAULT_MODEL = "claude-sonnet-5-5"


def model_get(model_id: str) -> ClaudeModel | None:
    return MODELS.get(model_id)


def model_refusal(model_id: str, *, today: datetime.date | None = None) -> str | None:
    """Why ``model_id`` may not be used for new calls, or None when it may."""
    model = MODELS.get(model_id)
    if model is None:
        return f"{text_quoted(model_id)} is not a known Claude model (known: {', '.join(usable_models(today=today))})"
    day = today or datetime.datetime.now(datetime.UTC).date()
    if model.retires is not None and day >= model.retires - RETIREMENT_NOTICE:
        return f"{model_id!r} retires on {model.retires.isoformat()}; choose another model"
    return None


def settings_refusal(*, default: str, models: list[str], offline: str) -> str | None:
    """Why ``STORY_MODEL`` or one of ``STORY_MODELS`` cannot be used, or None when all can."""
    for name, model_id in [("STORY_MODEL", default), *(("STORY_MODELS", m) for m in models)]:
        refusal = None if model_id == offline else model_refusal(model_id)
        if refusal:
            return f"{name}: {refusal}"
    return None


def usable_models(*, today: datetime.date | None = None) -> list[str]:
    """Every model that may be used for new calls, current ones first."""
    day = today or datetime.datetime.now(datetime.UTC).date()
    return [
        model.id
        for model in MODELS.values()
        if model.retires is None or day < model.retires - RETIREMENT_NOTICE
    ]


def supports_structured_output(model_id: str) -> bool:
    model = MODELS.get(model_id)
    return model is not None and model.structured_outputs


def thinking_param(model_id: str, *, budget_tokens: int) -> tuple[dict[str, Any] | None, int]:
    """The ``thinking`` parameter for one call, and the tokens to add to its max_tokens for thinking.

    ``budget_tokens`` 0 asks for no thinking. A model that cannot stop thinking (Opus 5.5) gets the
    parameter left out and a reserve of ``MIN_THINKING_BUDGET`` tokens, since thinking tokens count
    toward max_tokens and would otherwise eat into the screenplay.
    """
    model = MODELS.get(model_id)
    if model is None:
        # Not a model of this registry (start-up refuses those): send nothing the model might reject.
        return None, 0
    if budget_tokens <= 0:
        if model.thinking_off is not None:
            return dict(model.thinking_off), 0
        return None, MIN_THINKING_BUDGET
    budget = max(budget_tokens, MIN_THINKING_BUDGET)
    if model.thinking_on == "budget":
        return {"type": "enabled", "budget_tokens": budget}, budget
    return {"type": "adaptive"}, budget


def max_tokens_limit(model_id: str, *, budget_tokens: int) -> int | None:
    """The largest max_tokens for a call's text that the model can be given whole: its max output less
    the thinking reserve (``thinking_param``). A larger one is cut to the max output on every call
    (``stories.generation.backends.anthropic.max_tokens_for``). None for a model not in the registry."""
    model = MODELS.get(model_id)
    if model is None:
        return None
    _, reserve = thinking_param(model_id, budget_tokens=budget_tokens)
    return model.max_output - reserve


# The API's smallest thinking budget (ThinkingConfigEnabledParam.budget_tokens: "Must be ≥1024").
MIN_THINKING_BUDGET = 1024

"""System checks of the generation settings that can be made at start-up (``manage.py check``, which
``make run``'s migrate and ``make serve`` run; ``make serve`` refuses to start on a warning unless it is
silenced with ``DJANGO_SILENCED_SYSTEM_CHECKS``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Warning, register

from stories.generation.models_registry import max_tokens_limit

# Each max_tokens setting, and the id of its warning.
_MAX_TOKENS_SETTINGS = (("STORY_MAX_MAX_TOKENS", "stories.W001"), ("STORY_MAX_TOKENS", "stories.W002"))


@register()
def max_tokens_within_max_output(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """A max_tokens setting above what a configured Claude model can write: every such call would be cut
    to the model's max output without a word, and a long screenplay end early or cost a continuation."""
    found: list[CheckMessage] = []
    budget = settings.STORY_THINKING_BUDGET_TOKENS
    for model_id in dict.fromkeys([settings.STORY_MODEL, *settings.STORY_MODELS]):
        limit = max_tokens_limit(model_id, budget_tokens=budget)
        if limit is None:
            continue  # the offline model (start-up refuses a model the registry does not know)
        for name, check_id in _MAX_TOKENS_SETTINGS:
            value = getattr(settings, name)
            if value > limit:
                found.append(_over_limit(name, value, model_id, limit, check_id))
    return found


def _over_limit(name: str, value: int, model_id: str, limit: int, check_id: str) -> Warning:
    return Warning(
        f"{name} ({value}) is above what {model_id} can be given: at most {limit} tokens (its max output, "
        "less the tokens set aside for thinking). Its calls are cut to that without a word.",
        hint=f"Set {name} to {limit} or less, or leave {model_id} out of STORY_MODEL and STORY_MODELS.",
        id=check_id,
    )

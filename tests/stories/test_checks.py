"""Start-up checks of the generation settings (stories/checks.py): a max_tokens a model cannot take."""

from __future__ import annotations

from django.core.checks import run_checks
from django.test import override_settings

_CLAUDE = {"ANTHROPIC_API_KEY": "sk-ant-test", "STORY_THINKING_BUDGET_TOKENS": 0}


def _warnings() -> dict[str, str]:
    return {
        message.id: message.msg
        for message in run_checks()
        if message.id and message.id.startswith("stories.")
    }


@override_settings(
    **_CLAUDE,
    STORY_MODEL="claude-sonnet-5-5",
    STORY_MODELS=["claude-sonnet-5-5", "claude-haiku-4-5"],
    STORY_MAX_MAX_TOKENS=100_000,
    STORY_MAX_TOKENS=4096,
)
def test_a_max_max_tokens_above_a_configured_models_max_output_is_a_startup_warning() -> None:
    # Was: every call over Haiku 4.5's 64K was cut to it without a word, at start-up or after.
    assert _warnings() == {
        "stories.W001": "STORY_MAX_MAX_TOKENS (100000) is above what claude-haiku-4-5 can be given: at most "
        "64000 tokens (its max output, less the tokens set aside for thinking). Its calls are cut to that "
        "without a word."
    }


@override_settings(
    **{**_CLAUDE, "STORY_THINKING_BUDGET_TOKENS": 2048},
    STORY_MODEL="claude-haiku-4-5",
    STORY_MODELS=["claude-haiku-4-5"],
    STORY_MAX_MAX_TOKENS=64_000,
    STORY_MAX_TOKENS=63_000,
)
def test_the_thinking_budget_counts_against_the_max_output() -> None:
    warnings = _warnings()
    assert set(warnings) == {"stories.W001", "stories.W002"}
    assert (
        "STORY_MAX_TOKENS (63000)" in warnings["stories.W002"] and "at most 61952" in warnings["stories.W002"]
    )


@override_settings(
    **_CLAUDE,
    STORY_MODEL="claude-sonnet-5-5",
    STORY_MODELS=["claude-sonnet-5-5", "claude-haiku-4-5"],
    STORY_MAX_MAX_TOKENS=64_000,
    STORY_MAX_TOKENS=64_000,
)
def test_settings_within_every_models_max_output_warn_of_nothing() -> None:
    assert _warnings() == {}


@override_settings(
    STORY_MODEL="offline", STORY_MODELS=[], STORY_MAX_MAX_TOKENS=128_000, STORY_MAX_TOKENS=64_000
)
def test_the_offline_model_has_no_max_output_to_warn_about() -> None:
    assert _warnings() == {}

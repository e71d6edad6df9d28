"""The model registry: which models may be used, and what each call says about thinking."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stories.generation import models_registry
from stories.generation.models_registry import DEFAULT_MODEL, model_refusal, thinking_param, usable_models

ROOT = Path(__file__).resolve().parents[3]
TODAY = datetime.date(2026, 11, 26)


def test_the_default_is_the_current_sonnet_and_usable() -> None:
    assert DEFAULT_MODEL == "claude-sonnet-5-5"
    assert model_refusal(DEFAULT_MODEL, today=TODAY) is None
    assert not models_registry.MODELS[DEFAULT_MODEL].legacy


def test_sonnet_4_5_is_refused_from_a_week_before_it_retires() -> None:
    assert model_refusal("claude-sonnet-4-5", today=datetime.date(2026, 11, 22)) is None
    refusal = model_refusal("claude-sonnet-4-5", today=TODAY)
    assert refusal is not None and "retires on 2026-11-30" in refusal
    assert "claude-sonnet-4-5" not in usable_models(today=TODAY)
    assert "claude-opus-4-5" in usable_models(today=TODAY)  # retires 2027-01-22


def test_an_unknown_model_is_refused_naming_the_known_ones() -> None:
    refusal = model_refusal("claude-3-5-haiku-latest", today=TODAY)
    assert refusal is not None and "not a known Claude model" in refusal and DEFAULT_MODEL in refusal


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STORY_MODEL": "claude-sonnet-4-5"}, "STORY_MODEL: 'claude-sonnet-4-5' retires on 2026-11-30"),
        (
            {"STORY_MODELS": "claude-sonnet-5-5,claude-2"},
            "STORY_MODELS: 'claude-2' is not a known Claude model",
        ),
    ],
)
def test_start_up_refuses_a_retiring_or_unknown_model(env: dict[str, str], message: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("STORY_", "DATABASE_URL", "REDIS_URL"))}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**clean, "ANTHROPIC_API_KEY": "sk-ant-test", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and message in result.stderr


@pytest.mark.parametrize(
    ("model", "budget", "thinking", "reserve"),
    [
        # Off: each model's own way of saying so (Sonnet 5.5 rejects "disabled").
        ("claude-sonnet-5-5", 0, {"type": "between_tools"}, 0),
        ("claude-haiku-5-5", 0, {"type": "disabled"}, 0),
        ("claude-sonnet-4-6", 0, {"type": "disabled"}, 0),
        # Opus 5.5 always thinks: nothing to send, and room kept for it in max_tokens.
        ("claude-opus-5-5", 0, None, 1024),
        # On: a budget on the models that only know manual thinking, adaptive on the others.
        ("claude-haiku-4-5", 2048, {"type": "enabled", "budget_tokens": 2048}, 2048),
        ("claude-sonnet-5-5", 2048, {"type": "adaptive"}, 2048),
        ("claude-opus-4-5", 100, {"type": "enabled", "budget_tokens": 1024}, 1024),
    ],
)
def test_thinking_is_set_explicitly_for_every_model(
    model: str, budget: int, thinking: dict[str, object] | None, reserve: int
) -> None:
    assert thinking_param(model, budget_tokens=budget) == (thinking, reserve)

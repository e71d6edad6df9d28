"""Reads on stories, versions, runs and the editable generation settings."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

from stories.models import GenerationRun, GenerationSettings, Story

_SETTINGS_CACHE_KEY = "generation-settings:v1"


@dataclass(frozen=True)
class EffectiveGenerationSettings:
    default_model: str
    default_max_tokens: int
    formatting_rules: str


def generation_settings_get() -> EffectiveGenerationSettings:
    """The editable settings merged over the environment's defaults; cached until the next edit."""
    cached = cache.get(_SETTINGS_CACHE_KEY)
    if isinstance(cached, EffectiveGenerationSettings):
        return cached
    row = GenerationSettings.objects.filter(pk=1).first() or GenerationSettings()
    effective = EffectiveGenerationSettings(
        default_model=row.default_model or settings.STORY_MODEL,
        default_max_tokens=row.default_max_tokens or settings.STORY_MAX_TOKENS,
        formatting_rules=row.formatting_rules,
    )
    cache.set(_SETTINGS_CACHE_KEY, effective, timeout=300)
    return effective


def generation_settings_forget() -> None:
    cache.delete(_SETTINGS_CACHE_KEY)


def story_owned(*, story_id: int, user_id: int) -> bool:
    return Story.objects.filter(pk=story_id, owner_id=user_id).exists()


@dataclass(frozen=True)
class GenerationPace:
    """How fast a model has been writing lately, for the ETA a writer sees."""

    tokens_per_second: float
    expected_output_tokens: int
    ttft_seconds: float

    def estimated_seconds(self) -> float:
        return round(self.ttft_seconds + self.expected_output_tokens / self.tokens_per_second, 1)


_PACE_RUNS = 20


def generation_pace_get(*, model: str, max_tokens: int) -> GenerationPace:
    """The observed pace of the model's last successful runs (one query); a default before any run."""
    rows = list(
        GenerationRun.objects.filter(
            model=model, status=GenerationRun.Status.SUCCEEDED, llm_ms__gt=0, ttft_ms__isnull=False
        ).values_list("output_tokens", "llm_ms", "ttft_ms")[:_PACE_RUNS]
    )
    writing_seconds = sum(max(llm - ttft, 1) for _, llm, ttft in rows) / 1000
    tokens = sum(out for out, _, _ in rows)
    if not rows or tokens <= 0:
        return _pace_default(model=model, max_tokens=max_tokens)
    return GenerationPace(
        tokens_per_second=max(tokens / writing_seconds, 1.0),
        expected_output_tokens=max(tokens // len(rows), 1),
        ttft_seconds=sum(ttft for _, _, ttft in rows) / len(rows) / 1000,
    )


def _pace_default(*, model: str, max_tokens: int) -> GenerationPace:
    offline = model == settings.OFFLINE_MODEL and settings.STORY_OFFLINE_TOKENS_PER_SECOND > 0
    # Before any run: a typical Claude streaming rate, and a screenplay of a few thousand tokens.
    rate = settings.STORY_OFFLINE_TOKENS_PER_SECOND if offline else 60.0
    return GenerationPace(
        tokens_per_second=float(rate), expected_output_tokens=min(max_tokens, 2500), ttft_seconds=1.0
    )

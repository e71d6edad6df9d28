"""Reads on stories, versions, runs and the editable generation settings."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

from stories.models import GenerationSettings

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

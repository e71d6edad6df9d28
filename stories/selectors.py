"""Reads on stories, versions, runs and the editable generation settings."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.core.cache import cache
from django.db.models import Prefetch, QuerySet

from stories.models import GenerationRun, GenerationSettings, ScreenplayVersion, Story, StoryCast

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


# --- Stories, versions and runs as their owner sees them (REST API) ----------------------------
# Every read takes the user and filters by owner in the query itself: another user's object is
# simply not found, so interfaces answer 404 and never reveal that it exists.


def stories_for_user(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[Story]:
    return Story.objects.filter(owner_id=user.pk).prefetch_related(
        Prefetch("cast", queryset=StoryCast.objects.select_related("persona"))
    )


def story_get_for_user(*, user: AbstractBaseUser | AnonymousUser, story_id: int) -> Story | None:
    return stories_for_user(user=user).filter(pk=story_id).first()


def screenplay_versions_for_story(*, story: Story) -> QuerySet[ScreenplayVersion]:
    """Newest first; the content is left out (lists show titles and scene counts only)."""
    return ScreenplayVersion.objects.filter(story=story).order_by("-number")


def screenplay_version_get(*, story: Story, number: int) -> ScreenplayVersion | None:
    return ScreenplayVersion.objects.filter(story=story, number=number).first()


def generation_runs_for_user(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[GenerationRun]:
    return (
        GenerationRun.objects.filter(user_id=user.pk)
        .select_related("version")
        .defer("raw_text", "details")
        .order_by("-created_at", "-id")
    )

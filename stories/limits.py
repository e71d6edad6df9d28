"""Admission control for generations: how many a user may run at once and per rolling hour.

Both counts come from GenerationRun rows, so they hold across sockets and server processes and do
not depend on Redis. A run stuck in ``streaming`` longer than STORY_STREAMING_STALE_SECONDS was left
by a crashed process; it does not count as active, so a crash never locks a writer out.

The check and the creation of the run are two statements: two requests racing within milliseconds
could both be admitted. The limits bound cost and abuse, not exact accounting, so that is accepted.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from stories.errors import GenerationError
from stories.models import GenerationRun

_HOUR = timedelta(hours=1)


def generation_admission_check(*, user_id: int) -> None:
    """Raise GenerationError "busy" or "rate_limited" (retryable, with ``retry_after`` seconds)
    when the user may not start another generation now."""
    now = timezone.now()
    _check_active(user_id=user_id, now=now)
    _check_hourly(user_id=user_id, now=now)


def _check_active(*, user_id: int, now: datetime) -> None:
    limit = settings.STORY_MAX_ACTIVE_PER_USER
    fresh_since = now - timedelta(seconds=settings.STORY_STREAMING_STALE_SECONDS)
    active = GenerationRun.objects.filter(
        user_id=user_id, status=GenerationRun.Status.STREAMING, created_at__gte=fresh_since
    ).count()
    if active >= limit:
        raise GenerationError(
            "busy",
            f"You already have {active} generation(s) running (at most {limit} at a time). "
            "Wait for one to finish or cancel it, then try again.",
            retryable=True,
            retry_after=5,
        )


def _check_hourly(*, user_id: int, now: datetime) -> None:
    limit = settings.STORY_GENERATIONS_PER_HOUR
    recent = list(
        GenerationRun.objects.filter(user_id=user_id, created_at__gt=now - _HOUR)
        .order_by("created_at")
        .values_list("created_at", flat=True)
    )
    if len(recent) < limit:
        return
    # Room opens when enough of the oldest runs leave the window to bring the count below the limit.
    frees_at = recent[len(recent) - limit] + _HOUR
    retry_after = max(1, math.ceil((frees_at - now).total_seconds()))
    raise GenerationError(
        "rate_limited",
        f"You have started {len(recent)} generations in the last hour (at most {limit}). "
        f"Try again in {_spoken_duration(retry_after)} (retry_after={retry_after} seconds).",
        retryable=True,
        retry_after=retry_after,
    )


def _spoken_duration(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"

"""Admission control: how many generations a user may run, and PDFs have built, at once and per
rolling hour.

Both counts come from GenerationRun rows, so they hold across sockets and server processes and do
not depend on Redis. A run stuck in ``streaming`` longer than STORY_STREAMING_STALE_SECONDS was left
by a crashed process; it does not count as active, so a crash never locks a writer out.

Both counts come from one query (``admission_counts``). ``stories.services.generation_run_admit``
reads them under a per-user lock and creates the run before releasing it, so two admissions racing
for the last place cannot both get it.

A PDF build has no row to count: ``export_build_admitted`` counts them in the cache instead (below).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from django.conf import settings
from django.core.cache import cache
from django.db import connections, router
from django.utils import timezone

from stories.errors import GenerationError
from stories.models import GenerationRun
from storyproject.db import model_column

logger = logging.getLogger(__name__)

# The rolling window of STORY_GENERATIONS_PER_HOUR (and of the PDF builds' hourly limit).
RATE_WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class AdmissionCounts:
    """A user's runs as admission sees them, counted in one query."""

    active: int  # streaming and started within STORY_STREAMING_STALE_SECONDS
    recent: int  # started within the last hour, whatever their status
    leased_here: int  # streaming and leased to the ``lease_owner`` asked about, whatever their age


def generation_admission_check(*, user_id: int) -> None:
    """Raise GenerationError "busy" or "rate_limited" (retryable, with ``retry_after`` seconds)
    when the user may not start another generation now."""
    now = timezone.now()
    admission_check(user_id=user_id, now=now, counts=admission_counts(user_id=user_id, now=now))


def admission_counts(*, user_id: int, now: datetime, lease_owner: str = "") -> AdmissionCounts:
    """The user's active, last-hour and (with ``lease_owner``) leased-there runs, in one query.

    Its SQL is written once (``_counts_sql``), its values prepared by their fields as the ORM prepares
    them: building and compiling the ORM's aggregate took most of an admission's CPU time, on the
    path before every model call (docs/performance.md, "Thirteenth step"). The runs it reads: the
    user's started since the earlier of the two windows, and those streaming under ``lease_owner``
    (which add to neither window's count).
    """
    fresh_since = now - timedelta(seconds=settings.STORY_STREAMING_STALE_SECONDS)
    hour_ago = now - RATE_WINDOW
    using = router.db_for_read(GenerationRun)
    database = connections[using]
    field = functools.partial(model_column, GenerationRun)
    when, owner = field("created_at"), field("lease_owner")
    streaming = field("status").get_db_prep_value(GenerationRun.Status.STREAMING, database)
    leased = [streaming, owner.get_db_prep_value(lease_owner, database)]
    parameters = [
        streaming,
        when.get_db_prep_value(fresh_since, database),
        when.get_db_prep_value(hour_ago, database),
        *leased,
        field("user").get_db_prep_value(user_id, database),
        when.get_db_prep_value(min(fresh_since, hour_ago), database),
        *leased,
    ]
    with database.cursor() as cursor:
        cursor.execute(_counts_sql(using), parameters)
        active, recent, leased_here = cursor.fetchone()
    return AdmissionCounts(active=active, recent=recent, leased_here=leased_here if lease_owner else 0)


@functools.cache
def _counts_sql(using: str) -> str:
    quote = connections[using].ops.quote_name
    meta = GenerationRun._meta
    table = quote(meta.db_table)
    # model_column's fields are concrete: each has its column.
    status, created, owner, user = (
        quote(cast(str, model_column(GenerationRun, name).column))
        for name in ("status", "created_at", "lease_owner", "user")
    )
    leased = f"{status} = %s AND {owner} = %s"
    # COUNT(*) FILTER: PostgreSQL, and SQLite from 3.30 (Django's own aggregate filters use it there).
    # Names from the model's own metadata, quoted; every value is a parameter.
    return (
        f"SELECT COUNT(*) FILTER (WHERE {status} = %s AND {created} >= %s), "  # noqa: S608
        f"COUNT(*) FILTER (WHERE {created} > %s), "
        f"COUNT(*) FILTER (WHERE {leased}) "
        f"FROM {table} WHERE {user} = %s AND ({created} >= %s OR ({leased}))"
    )


def admission_check(*, user_id: int, now: datetime, counts: AdmissionCounts) -> None:
    """``generation_admission_check`` on counts already read; a refusal of the hourly limit reads the
    run whose leaving the hour opens room (one more query, only then)."""
    limit = settings.STORY_MAX_ACTIVE_PER_USER
    if counts.active >= limit:
        raise GenerationError(
            "busy",
            f"You already have {counts.active} generation(s) running (at most {limit} at a time). "
            "Wait for one to finish or cancel it, then try again.",
            retryable=True,
            retry_after=5,
        )
    limit = settings.STORY_GENERATIONS_PER_HOUR
    if counts.recent < limit:
        return
    # Room opens when enough of the oldest runs leave the window to bring the count below the limit.
    recent = GenerationRun.objects.filter(user_id=user_id, created_at__gt=now - RATE_WINDOW).order_by(
        "created_at"
    )
    offset = counts.recent - limit
    oldest = list(recent.values_list("created_at", flat=True)[offset : offset + 1])
    frees_at = (oldest[0] if oldest else now) + RATE_WINDOW
    retry_after = max(1, math.ceil((frees_at - now).total_seconds()))
    raise GenerationError(
        "rate_limited",
        f"You have started {counts.recent} generations in the last hour (at most {limit}). "
        f"Try again in {_spoken_duration(retry_after)} (retry_after={retry_after} seconds).",
        retryable=True,
        retry_after=retry_after,
    )


def _spoken_duration(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


# --- PDF builds --------------------------------------------------------------------------------------
# A build that died leaves its "at once" slot behind this long at most (a 300-scene PDF takes 6 s).
_EXPORT_BUILD_SECONDS = 60
_EXPORT_BUSY_RETRY_AFTER_SECONDS = 5
# Slots other requests took in the same instant are looked at again this many times.
_TAKE_ROUNDS = 3


@contextmanager
def export_build_admitted(*, user_id: int) -> Iterator[None]:
    """Around one build of a cached export format (a PDF the cache does not have): ``busy`` past
    STORY_EXPORT_BUILDS_AT_ONCE builds of the user's in flight, ``rate_limited`` past
    STORY_EXPORT_BUILDS_PER_HOUR in the rolling hour (both retryable, with ``retry_after``).

    Each build takes one of the user's hour slots, kept an hour (an hour's build frees it), and one of
    their at-once slots until it ends: keys of the default cache, so with Redis every process counts
    them together (per process otherwise), taken with an atomic ``add`` as the socket slots are
    (stories.ws_sessions). While the cache is down nothing is counted and builds are admitted, as the
    export cache then builds every download (docs/exports.md).
    """
    now = time.time()
    building = _slot_take(
        prefix=f"export-building:{user_id}",
        limit=settings.STORY_EXPORT_BUILDS_AT_ONCE,
        seconds=_EXPORT_BUILD_SECONDS,
        now=now,
        refuse=_export_busy,
    )
    try:
        _slot_take(
            prefix=f"export-built:{user_id}",
            limit=settings.STORY_EXPORT_BUILDS_PER_HOUR,
            seconds=int(RATE_WINDOW.total_seconds()),
            now=now,
            refuse=_export_rate_limited,
        )
        yield
    finally:
        if building is not None:
            cache.delete(building)


def _slot_take(
    *, prefix: str, limit: int, seconds: int, now: float, refuse: Callable[[int, float], GenerationError]
) -> str | None:
    """One of ``limit`` slots, held ``seconds`` (its value: when it frees); ``refuse(limit, frees_at)``
    when all are held; None when none could be taken without being held (the cache is down)."""
    keys = [f"{prefix}:{number}" for number in range(limit)]
    for _ in range(_TAKE_ROUNDS):
        held = cache.get_many(keys)
        free = [key for key in keys if key not in held]
        if not free:
            raise refuse(limit, min(float(value) for value in held.values()))
        for key in free:
            if cache.add(key, now + seconds, seconds):
                return key
    logger.warning("no %s slot could be taken; admitted without one", prefix.split(":")[0])
    return None


def _export_busy(limit: int, frees_at: float) -> GenerationError:
    return GenerationError(
        "busy",
        f"You already have {limit} PDF{'s' if limit != 1 else ''} being built (at most {limit} at a time); "
        "try again in a few seconds.",
        retryable=True,
        retry_after=_EXPORT_BUSY_RETRY_AFTER_SECONDS,
    )


def _export_rate_limited(limit: int, frees_at: float) -> GenerationError:
    retry_after = max(1, math.ceil(frees_at - time.time()))
    return GenerationError(
        "rate_limited",
        f"You have had {limit} PDF{'' if limit == 1 else 's'} built in the last hour (at most {limit}). Try again in "
        f"{_spoken_duration(retry_after)} (retry_after={retry_after} seconds); files already built still "
        "download.",
        retryable=True,
        retry_after=retry_after,
    )

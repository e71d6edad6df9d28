"""Reads on stories, versions, runs and the editable generation settings."""

from __future__ import annotations

import functools
import hashlib
import math
import operator
import statistics
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.core.cache import cache
from django.db.models import (
    Count,
    F,
    IntegerField,
    Max,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Sum,
    TextField,
    Window,
)
from django.db.models.functions import Coalesce, Length, RowNumber
from django.http import Http404
from django.urls import reverse
from django.utils import timezone

from stories.errors import RETRYABLE_CODES, GenerationError
from stories.generation.cache_rules import cache_hit_rate
from stories.generation.requests import allowed_models, model_label
from stories.imports import characters_carried_over, screenplay_import
from stories.models import GenerationRun, GenerationSettings, ScreenplayVersion, Story, StoryCast
from stories.pricing import usage_cost_usd
from storyproject.json_sql import JsonFunc
from storyproject.search import field_folded, search_terms, text_folded_forms, text_search_q

# What the admin edited, not the merge with the environment's defaults: the cache is shared by every
# process (Redis) and outlives a restart, so a merged default (v1) kept the STORY_MODEL of the process
# that cached it, for up to five minutes after a deploy that changed it.
_SETTINGS_CACHE_KEY = "generation-settings:v2"
# The largest id a 404 repeats (a database integer); past it the URL's number is not said.
_ID_SAID_MAX = 2**63 - 1


@dataclass(frozen=True)
class EffectiveGenerationSettings:
    default_model: str
    default_max_tokens: int
    formatting_rules: str


@dataclass(frozen=True)
class _EditedGenerationSettings:
    """The admin's row as it is: an empty field is the environment's default."""

    default_model: str
    default_max_tokens: int | None
    formatting_rules: str


def generation_settings_get() -> EffectiveGenerationSettings:
    """The editable settings merged over the environment's defaults; cached until the next edit."""
    edited = cache.get(_SETTINGS_CACHE_KEY)
    if not isinstance(edited, _EditedGenerationSettings):
        row = GenerationSettings.objects.filter(pk=1).first() or GenerationSettings()
        edited = _EditedGenerationSettings(
            default_model=row.default_model,
            default_max_tokens=row.default_max_tokens,
            formatting_rules=row.formatting_rules,
        )
        cache.set(_SETTINGS_CACHE_KEY, edited, timeout=300)
    # Empty fields fall back to this process's environment, read now.
    return EffectiveGenerationSettings(
        default_model=edited.default_model or settings.STORY_MODEL,
        default_max_tokens=edited.default_max_tokens or settings.STORY_MAX_TOKENS,
        formatting_rules=edited.formatting_rules,
    )


def generation_settings_forget() -> None:
    cache.delete(_SETTINGS_CACHE_KEY)


# --- Pages: the writer's stories, versions and runs ------------------------------------------

SEARCH_MAX_CHARS = 200

# Length choices offered to writers, in max_tokens per model call; bounded by the settings at call time.
_LENGTH_CHOICES = [(1024, "Short"), (2048, "Medium"), (4096, "Long"), (8192, "Very long")]


def story_list_for_user(*, user: AbstractBaseUser | AnonymousUser, search: str = "") -> QuerySet[Story]:
    """The user's stories, most recently updated first, each annotated with ``version_count``."""
    # Counted for the page's stories alone, each on the versions' (story, number) index: as a join and a
    # GROUP BY, every story of the writer was counted and sorted (plots and all) for any page of 20.
    counted = (
        ScreenplayVersion.objects.filter(story=OuterRef("pk"))
        .order_by()
        .values("story")
        .annotate(count=Count("pk"))
        .values("count")
    )
    stories = (
        Story.objects.filter(owner_id=user.pk)
        .annotate(version_count=Coalesce(Subquery(counted), 0))
        .order_by("-updated_at", "-id")
    )
    search = search.strip()[:SEARCH_MAX_CHARS]
    if search:
        stories = stories.filter(text_search_q(("title", "plot"), search))
    return stories


def story_get_for_user(*, user: AbstractBaseUser | AnonymousUser, story_id: int) -> Story:
    """One of the user's stories; another user's story is a 404, exactly like a missing one."""
    story = Story.objects.filter(pk=story_id, owner_id=user.pk).first()
    if story is None:
        raise story_not_found(story_id)
    return story


def story_not_found(story_id: int) -> Http404:
    """The 404 of a story that is not the user's (or none), in words: the API's body said Django's
    "No Story matches the given query.", the server's class name."""
    return Http404(f"No story {_id_said(story_id)} among yours.")


# The shape of every story_details_stamp: 24 hex digits in quotes.
DETAILS_STAMP = r'^"[0-9a-f]{24}"\Z'


def story_details_stamp(*, title: str, plot: str) -> str:
    """A story's title and plot as one opaque string: the settings page's hidden ``details_stamp``. A
    change of either, from anywhere (another tab, a Regenerate), changes it; a version saved does not
    (the API's ``ETag`` stands for all a ``GET`` shows: stories.api.story_etag)."""
    return '"' + hashlib.sha256(f"{title}\0{plot}".encode()).hexdigest()[:24] + '"'


class _ContentTitle(JsonFunc):
    """A version's ``content.title`` as text when it is a string, ``''`` when it has none, else NULL
    (then read from the content itself: ``ScreenplayVersionSummarySerializer``)."""

    output_field = TextField()
    template = (
        "CASE WHEN json_type(%(expressions)s, '$.title') IS NULL THEN '' "
        "WHEN json_type(%(expressions)s, '$.title') = 'text' THEN json_extract(%(expressions)s, '$.title') END"
    )
    postgresql_template = (
        "CASE WHEN %(expressions)s -> 'title' IS NULL THEN '' "
        "WHEN jsonb_typeof(%(expressions)s -> 'title') = 'string' THEN %(expressions)s ->> 'title' END"
    )


class _ContentSceneCount(JsonFunc):
    """How many scenes a version's ``content.scenes`` lists (0 when it is not a list)."""

    output_field = IntegerField()
    template = (
        "CASE WHEN json_type(%(expressions)s, '$.scenes') = 'array' "
        "THEN json_array_length(%(expressions)s, '$.scenes') ELSE 0 END"
    )
    postgresql_template = (
        "CASE WHEN jsonb_typeof(%(expressions)s -> 'scenes') = 'array' "
        "THEN jsonb_array_length(%(expressions)s -> 'scenes') ELSE 0 END"
    )


def story_versions_list(*, story: Story) -> QuerySet[ScreenplayVersion]:
    """The story's versions, newest first, with their runs; contents are not loaded (a list needs none),
    only each one's title (``summary_title``) and number of scenes (``summary_scene_count``), read by
    the database.

    A query, for a page of it to be read (the story page's and the API's pagination): a story can
    hold thousands of versions (a script's edits)."""
    return (
        story.versions.select_related("run")
        .defer("content")
        .annotate(summary_title=_ContentTitle("content"), summary_scene_count=_ContentSceneCount("content"))
        .order_by("-number")
    )


def story_version_get(*, story: Story, number: int, content: bool = True) -> ScreenplayVersion:
    """The story's version ``number`` (a 404 when it has none), its story the one given (not read again).

    Without ``content`` the content is deferred: read only if used, in a query of its own. A cached
    export needs the version's id and date alone, and a screenplay's content may be megabytes.
    """
    versions = ScreenplayVersion.objects.all() if content else ScreenplayVersion.objects.defer("content")
    version = versions.filter(story=story, number=number).first()
    if version is None:
        raise Http404(f"Story {story.pk} has no version {_id_said(number)}.")
    version.story = story
    return version


def story_cast_list(*, story: Story) -> list[StoryCast]:
    return list(story.cast.select_related("persona").order_by("order", "id"))


def run_list_for_user(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[GenerationRun]:
    # The raw model text and diagnostics of a run can be large and the list shows neither; nor its
    # story's plot (up to STORY_MAX_PLOT_CHARS, read again for each run of the story: a page of 50 runs
    # of a story with a 20,000-character plot read 1 MB of plots to show 50 titles).
    return (
        GenerationRun.objects.filter(user_id=_user_pk(user))
        .select_related("story", "version")
        .defer("raw_text", "details", "checkpoint", "story__plot", "version__content")
        # How much text a run kept, for the list's link to it (the text itself is on the run's page).
        .annotate(raw_text_chars=Length("raw_text"))
        .order_by("-created_at", "-id")
    )


def _user_pk(user: AbstractBaseUser | AnonymousUser) -> int:
    # Pages are login-only; were an anonymous user to get here, its pk (None) must match nothing.
    return int(user.pk) if user.pk is not None else 0


def generation_model_choices() -> list[tuple[str, str]]:
    """(model id, label) pairs a writer may pick: exactly what a generation request accepts, the
    default first, the offline model named as such."""
    allowed = allowed_models()
    default = generation_settings_get().default_model
    ordered = [default, *allowed] if default in allowed else allowed
    return [(m, model_label(m)) for m in dict.fromkeys(ordered)]


def generation_length_choices() -> list[tuple[int, str]]:
    """(max_tokens, label) pairs within the configured bounds, always including the default."""
    low, high = settings.STORY_MIN_MAX_TOKENS, settings.STORY_MAX_MAX_TOKENS
    default = generation_settings_get().default_max_tokens
    choices = {value: label for value, label in _LENGTH_CHOICES if low <= value <= high}
    if low <= default <= high:
        choices.setdefault(default, "Default")
    return sorted(choices.items())


# --- Stories, versions and runs as their owner sees them (REST API) ----------------------------
# Every read takes the user and filters by owner in the query itself: another user's object is
# simply not found, so interfaces answer 404 and never reveal that it exists. story_get_for_user,
# story_versions_list and story_version_get above serve the API too.


def stories_for_user(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[Story]:
    return Story.objects.filter(owner_id=user.pk).prefetch_related(
        Prefetch("cast", queryset=StoryCast.objects.select_related("persona"))
    )


# --- Generation ------------------------------------------------------------------------------


def story_owned(*, story_id: int, user_id: int) -> bool:
    return Story.objects.filter(pk=story_id, owner_id=user_id).exists()


def story_find_for_user(*, story_id: int, user_id: int) -> Story | None:
    """One of the user's stories, or None (a rewrite answers ``forbidden``, not 404)."""
    return Story.objects.filter(pk=story_id, owner_id=user_id).first()


def story_version_find(*, story: Story, number: int) -> ScreenplayVersion | None:
    return ScreenplayVersion.objects.filter(story=story, number=number).first()


def story_version_latest(*, story: Story) -> ScreenplayVersion | None:
    return story.versions.order_by("-number").first()


def screenplay_fountain_for_story(*, story: Story, fountain: str, base_version: int | None) -> dict[str, Any]:
    """Fountain text read into the contract, with the characters of the version it was edited from, and
    its title and logline where the text has no title page.

    The editor's preview and its save both read the text through here, so they always agree, on a
    ``base_version`` the story does not have too: both refuse it, as the save's own check would.
    """
    if base_version is None:
        base = story_version_latest(story=story)
    else:
        base = story_version_find(story=story, number=base_version)
        if base is None:
            raise GenerationError("invalid_request", f"the story has no version {base_version}")
    edited = base.content if base is not None and isinstance(base.content, dict) else None
    # Text without a title page keeps the edited version's title and logline, as it keeps its cast.
    content = screenplay_import(data=fountain, fmt="fountain", edited=edited)
    if edited is not None:
        content["characters"] = characters_carried_over(parsed=content, base=edited)
    return content


def story_version_saved_get(*, story_id: int, number: int) -> ScreenplayVersion:
    """The version a run has just saved (its ``saved`` event names it), with its story."""
    return ScreenplayVersion.objects.select_related("story").get(story_id=story_id, number=number)


def run_get(*, run_id: int) -> GenerationRun:
    return GenerationRun.objects.get(pk=run_id)


def run_get_for_user(*, user: AbstractBaseUser | AnonymousUser, run_id: int) -> GenerationRun:
    """One of the user's runs with the model text it kept; another user's run is a 404, like a missing one."""
    runs = GenerationRun.objects.select_related("story", "version").defer("details", "version__content")
    run = runs.filter(pk=run_id, user_id=_user_pk(user)).first()
    if run is None:
        raise Http404(run_not_found_message(run_id))
    return run


def run_not_found_message(run_id: int) -> str:
    """The 404 of a run that is not the writer's (or none), the same for every way of asking for it."""
    return f"No run {_id_said(run_id)} among yours."


def _id_said(value: int) -> str:
    # A URL's number may have thousands of digits (the request line's limit), none of them an id.
    return str(value) if value <= _ID_SAID_MAX else "with that number"


def run_find_for_user(*, run_id: int, user_id: int) -> GenerationRun | None:
    """The writer's run, or None for another's or an unknown one (which are told apart to nobody)."""
    return GenerationRun.objects.filter(pk=run_id, user_id=user_id).only("pk", "status", "started_by").first()


def runs_streaming_of(
    *, user_id: int, started_by: str | None = None, sparing: tuple[str, ...] = ()
) -> list[int]:
    """The ids of the user's runs still going: those ``started_by`` that credential's digest (all when
    None), but none started by one of ``sparing``'s."""
    runs = GenerationRun.objects.filter(user_id=user_id, status=GenerationRun.Status.STREAMING)
    if started_by is not None:
        runs = runs.filter(started_by=started_by)
    if sparing:
        runs = runs.exclude(started_by__in=sparing)
    return list(runs.values_list("id", flat=True))


def story_runs_writing(*, story: Story) -> list[int]:
    """The ids of the runs writing a new version of ``story`` now."""
    runs = GenerationRun.objects.filter(story=story, status=GenerationRun.Status.STREAMING)
    return list(runs.order_by("created_at").values_list("pk", flat=True))


def run_elapsed(*, run_id: int) -> tuple[bool, int | None]:
    """Whether the run is still going (as far as the database knows), and its time in ms from its
    admission to now, or to its end once it has ended (None when its end time was not recorded)."""
    run = GenerationRun.objects.filter(pk=run_id).only("status", "created_at", "finished_at").first()
    if run is None:
        return False, None
    streaming = run.status == GenerationRun.Status.STREAMING
    end = timezone.now() if streaming else run.finished_at
    if end is None:
        return False, None
    return streaming, max(0, int((end - run.created_at).total_seconds() * 1000))


def run_final_events(*, run_id: int) -> list[dict[str, Any]] | None:
    """How a finished run ended, as the events that ended it (rebuilt, ``seq`` null); None while it runs.

    For an attach after the run's event log has expired or was lost (stories.runs.follow): a run that
    saved a version starts with that version's scenes, one ``scene`` event each, so that a client that
    saw nothing of the run (a reload after a restart without Redis) can draw the screenplay.
    """
    run = GenerationRun.objects.filter(pk=run_id).select_related("version").first()
    if run is None or run.status == GenerationRun.Status.STREAMING:
        return None
    address = {"run_id": run.pk, "seq": None}
    if run.status == GenerationRun.Status.CANCELLED:
        return [{"type": "cancelled", **address}]
    if run.status == GenerationRun.Status.FAILED:
        code = run.error_code or "llm_unavailable"
        kept = run.details.get("retryable") if isinstance(run.details, dict) else None
        # As the run's own error said; for a run closed without it (interrupted), as its code always is.
        retryable = kept if isinstance(kept, bool) else code in RETRYABLE_CODES
        error = {"code": code, "message": run.error_message, "retryable": retryable}
        return [{"type": "error", **error, **address}]
    return [
        *_saved_events(run, address),
        {"type": "done", "timings": _run_timings(run), "usage": _run_usage(run), **address},
    ]


def _saved_events(run: GenerationRun, address: dict[str, Any]) -> list[dict[str, Any]]:
    version = getattr(run, "version", None)
    if version is None:
        return []  # a run that saved nothing (--no-save)
    url = reverse("stories:story-detail", args=[version.story_id])
    content = version.content if isinstance(version.content, dict) else {}
    scenes = content.get("scenes")
    if not isinstance(scenes, list):
        scenes = []
    return [
        *({"type": "scene", "index": index, "scene": scene, **address} for index, scene in enumerate(scenes)),
        {
            "type": "saved",
            "story_id": version.story_id,
            "version": version.number,
            "url": url,
            "cast_dropped": run.details.get("cast_dropped", []) if isinstance(run.details, dict) else [],
            **address,
        },
    ]


def _run_timings(run: GenerationRun) -> dict[str, int | None]:
    names = ("context_ms", "prompt_ms", "ttft_ms", "llm_ms", "save_ms", "total_ms")
    return {name: getattr(run, name) for name in names}


def _run_usage(run: GenerationRun) -> dict[str, int]:
    names = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
    return {name: getattr(run, name) for name in names}


def user_active_get(*, username: str) -> AbstractBaseUser | None:
    """The active account a command acts for, or None."""
    return get_user_model().objects.filter(username=username, is_active=True).first()


@dataclass(frozen=True)
class GenerationPace:
    """How fast a model has been writing lately, for the ETA a writer sees."""

    tokens_per_second: float
    expected_output_tokens: int
    ttft_seconds: float
    # A parallel run's whole time as such runs of the model took lately (``generation_pace_parallel``):
    # its calls overlap, so no single-call pace says it.
    run_seconds: float | None = None

    def estimated_seconds(self) -> float:
        if self.run_seconds is not None:
            return self.run_seconds
        return round(self.ttft_seconds + self.expected_output_tokens / self.tokens_per_second, 1)


_PACE_RUNS = 20
_PACE_SECONDS = 60


def generation_pace_get(*, model: str, max_tokens: int) -> GenerationPace:
    """The observed pace of the model's last successful runs; a default before any run.

    One query, whose answer is cached for ``_PACE_SECONDS``: it only sets the ETA a writer sees, and
    every admission asks for it.
    """
    key = f"generation-pace:v1:{model}"
    cached = cache.get(key)
    if isinstance(cached, GenerationPace):
        return cached
    if cached is None:
        cached = _pace_observed(model=model)
        cache.set(key, cached or "none", timeout=_PACE_SECONDS)
    return cached if isinstance(cached, GenerationPace) else _pace_default(model=model, max_tokens=max_tokens)


def _pace_observed(*, model: str) -> GenerationPace | None:
    rows = list(
        GenerationRun.objects.filter(
            model=model,
            status=GenerationRun.Status.SUCCEEDED,
            # One call's pace: a parallel run's llm_ms spans calls that overlap.
            mode=GenerationRun.Mode.SINGLE,
            llm_ms__gt=0,
            ttft_ms__isnull=False,
        ).values_list("output_tokens", "llm_ms", "ttft_ms")[:_PACE_RUNS]
    )
    writing_seconds = sum(max((llm or 0) - (ttft or 0), 1) for _, llm, ttft in rows) / 1000
    tokens = sum(out for out, _, _ in rows)
    if not rows or tokens <= 0:
        return None
    return GenerationPace(
        tokens_per_second=max(tokens / writing_seconds, 1.0),
        expected_output_tokens=max(tokens // len(rows), 1),
        ttft_seconds=sum(ttft or 0 for _, _, ttft in rows) / len(rows) / 1000,
    )


def generation_pace_parallel(pace: GenerationPace, *, model: str, rewrite: bool) -> GenerationPace:
    """``pace`` with the time a parallel run of ``model`` is expected to take: the median of its last
    successful ones of the same kind (a whole screenplay, or one scene rewritten), from start to save.
    Before any: a whole screenplay keeps the single-pass estimate; a scene rewrite, one call writing an
    eighth of a screenplay. One query, cached for ``_PACE_SECONDS`` as the pace is."""
    key = f"generation-pace:v1:{model}:{'rewrite' if rewrite else 'parallel'}"
    cached = cache.get(key)
    if not isinstance(cached, (float, str)):
        cached = _parallel_seconds_observed(model=model, rewrite=rewrite) or "none"
        cache.set(key, cached, timeout=_PACE_SECONDS)
    if isinstance(cached, float):
        return replace(pace, run_seconds=cached)
    if rewrite:
        one_scene = pace.ttft_seconds + pace.expected_output_tokens / 8 / pace.tokens_per_second
        return replace(pace, run_seconds=round(one_scene, 1))
    return pace


def _parallel_seconds_observed(*, model: str, rewrite: bool) -> float | None:
    runs = GenerationRun.objects.filter(
        model=model,
        status=GenerationRun.Status.SUCCEEDED,
        mode=GenerationRun.Mode.PARALLEL,
        total_ms__gt=0,
    )
    # A scene rewrite is recorded with the scene it rewrote (stories.generation.parallel).
    if rewrite:
        runs = runs.filter(details__has_key="regenerated_scene")
    else:
        runs = runs.exclude(details__has_key="regenerated_scene")
    rows = runs.order_by("-created_at").values_list("total_ms", flat=True)[:_PACE_RUNS]
    took = [ms for ms in rows if ms is not None]
    return round(statistics.median(took) / 1000, 1) if took else None


def _pace_default(*, model: str, max_tokens: int) -> GenerationPace:
    offline = model == settings.OFFLINE_MODEL and settings.STORY_OFFLINE_TOKENS_PER_SECOND > 0
    # Before any run: a typical Claude streaming rate, and a screenplay of a few thousand tokens.
    rate = settings.STORY_OFFLINE_TOKENS_PER_SECOND if offline else 60.0
    return GenerationPace(
        tokens_per_second=float(rate), expected_output_tokens=min(max_tokens, 2500), ttft_seconds=1.0
    )


# --- Metrics (stories/metrics.py) ----------------------------------------------------------------

_MEASURE_FIELDS = (
    "status", "model", "mode", "context_ms", "prompt_ms", "ttft_ms", "llm_ms", "save_ms", "total_ms",
    "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "details",
)  # fmt: skip


def generation_run_measures(*, run_id: int) -> GenerationRun | None:
    """A run's outcome, model, mode, timings, usage and details, without its text."""
    return GenerationRun.objects.filter(pk=run_id).only(*_MEASURE_FIELDS).first()


def generation_runs_orphaned(*, limit: int = 100) -> list[int]:
    """Runs still ``streaming`` whose lease has expired (their process died): the longest-dead first.

    One query on the run_streaming partial index: the streaming runs (a few hundred at most), those
    whose lease has expired kept. A run with no lease at all was started before leases existed (or by
    a benchmark) and counts as orphaned too.
    """
    return list(runs_orphaned().order_by("lease_expires_at", "id").values_list("id", flat=True)[:limit])


def runs_orphaned() -> QuerySet[GenerationRun]:
    """The runs still ``streaming`` whose lease has expired, or that never had one."""
    return GenerationRun.objects.filter(status=GenerationRun.Status.STREAMING).filter(
        Q(lease_expires_at__lt=timezone.now()) | Q(lease_expires_at__isnull=True)
    )


def generation_run_orphaned(*, run_id: int) -> bool:
    """Whether no process runs ``run_id`` now: it streams, its lease expired (until one resumes it)."""
    return runs_orphaned().filter(pk=run_id).exists()


def generation_run_taken_over(*, run_id: int, lease_owner: str) -> bool:
    """Whether the run still streams under another process's lease (not merely ended meanwhile)."""
    streaming = GenerationRun.objects.filter(pk=run_id, status=GenerationRun.Status.STREAMING)
    return streaming.exclude(lease_owner=lease_owner).exists()


def generation_runs_active_count() -> int:
    """Runs streaming now; a run older than STORY_STREAMING_STALE_SECONDS was left by a crash (limits.py)."""
    fresh_since = timezone.now() - timedelta(seconds=settings.STORY_STREAMING_STALE_SECONDS)
    return GenerationRun.objects.filter(
        status=GenerationRun.Status.STREAMING, created_at__gte=fresh_since
    ).count()


# --- The generation report (manage.py generation_report) ----------------------------------------
#
# Definitions, also in docs/exports.md ("The generation report"):
# - Stage figures come from succeeded runs that recorded the stage. The median of an even count is
#   the mean of the two middle values; p95 is the nearest-rank percentile (the smallest recorded
#   value with at least 95% of the values at or below it), so it is always a measured value.
# - A stage's share is the sum of that stage over the sum of total_ms, over the runs that recorded
#   both. Time to first token is part of the model time, so the shares do not add up to 100%.
# - Tokens and cost cover every finished run (failed and cancelled runs are paid for too), priced
#   with the model registry's prices; runs of a model without a price are counted as unpriced. A run cut
#   off before the provider's final usage counts its output tokens as estimated from the text it
#   received (GenerationRun.usage_estimated); the report says how many runs that is.
# - Cache hit rate = cache_read / (cache_read + cache_write + input): the share of prompt tokens
#   served from Anthropic's prompt cache (input_tokens counts only the uncached ones).

REPORT_STAGES = ("context_ms", "prompt_ms", "ttft_ms", "llm_ms", "save_ms", "total_ms")
_USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


@dataclass(frozen=True)
class StageStats:
    stage: str
    count: int
    median_ms: float | None
    p95_ms: int | None
    max_ms: int | None
    share: float | None


@dataclass(frozen=True)
class GenerationReport:
    runs: int
    by_status: dict[str, int]
    stages: list[StageStats]
    tokens: dict[str, int]  # totals over finished runs, by usage field
    tokens_per_run: dict[str, float]
    cost_usd: Decimal | None
    cost_per_run_usd: Decimal | None
    unpriced_runs: int
    cache_hit_rate: float | None
    estimated_runs: int  # runs whose output tokens are partly an estimate (cut off mid-stream)


def generation_report_get(*, since: datetime | None = None, model: str | None = None) -> GenerationReport:
    """Measured stage timings, usage and cost of the runs since ``since`` (of ``model``, if given).

    Computed by the database: a few queries whatever the number of runs, none of them a row per run
    (it read every finished run into memory). Counts and token sums by model and status, the stages'
    counts, maxima and sums in one query, and each stage's median and 95th percentile from the two or
    three rows of those ranks (``_stage_ranks``).
    """
    runs = GenerationRun.objects.exclude(status=GenerationRun.Status.STREAMING)
    if since is not None:
        runs = runs.filter(created_at__gte=since)
    if model:
        runs = runs.filter(model=model)
    grouped = (
        runs.order_by()
        .values("model", "status")
        .annotate(
            runs=Count("pk"),
            estimated=Count("pk", filter=Q(usage_estimated=True)),
            **{field: Coalesce(Sum(field), 0) for field in _USAGE_FIELDS},
        )
    )
    groups: list[dict[str, Any]] = [dict(group) for group in grouped]
    count = sum(group["runs"] for group in groups)
    by_status: Counter[str] = Counter()
    for group in groups:
        by_status[group["status"]] += group["runs"]
    tokens = {field: sum(group[field] for group in groups) for field in _USAGE_FIELDS}
    cost, unpriced = _report_cost(groups)
    priced = count - unpriced
    return GenerationReport(
        runs=count,
        by_status=dict(sorted(by_status.items())),
        stages=_stages_stats(runs.filter(status=GenerationRun.Status.SUCCEEDED)),
        tokens=tokens,
        tokens_per_run={field: total / count for field, total in tokens.items()} if count else {},
        cost_usd=cost if priced else None,
        cost_per_run_usd=cost / priced if priced else None,
        unpriced_runs=unpriced,
        cache_hit_rate=_cache_hit_rate(tokens),
        estimated_runs=sum(group["estimated"] for group in groups),
    )


# The admin's runs search: a username, or the start of a story's title. Each is looked up first (in the
# users and stories tables, smaller than the runs'), then the runs by their user's or story's key, which
# their indexes serve. Matching text anywhere in the username or title (as before) read every run, with
# its user and story joined: 35 ms at 22,000 runs on PostgreSQL against 0.1-0.9 ms (docs/known-gaps.md).
RUN_SEARCH_HELP = (
    "A username (the whole of it) or the start of a story's title, in capitals or not: the whole search "
    "is one name or one title's start."
)
# More stories than this starting with the search are matched by a subquery instead of a list of keys
# (a list that long would make a statement too large; the subquery makes the runs be read in order).
_RUN_SEARCH_MAX_STORIES = 500


def generation_runs_search(*, runs: QuerySet[GenerationRun], search: str) -> QuerySet[GenerationRun]:
    """``runs`` whose user is named ``search`` or whose story's title starts with it, ignoring case (as
    ``storyproject.search`` folds it). The search is one phrase (quotes around it are dropped): a title's
    first words, not words to find each anywhere."""
    terms = search_terms(search)
    phrase = " ".join(terms)
    if not phrase:
        return runs
    forms = text_folded_forms(phrase)
    users = list(
        get_user_model()
        .objects.annotate(folded=field_folded("username"))
        .filter(folded__in=forms)
        .values_list("pk", flat=True)
    )
    titled = (
        Story.objects.annotate(folded=field_folded("title"))
        .filter(functools.reduce(operator.or_, (Q(folded__startswith=form) for form in forms)))
        .order_by()
        .values_list("pk", flat=True)
    )
    stories: Any = list(titled[: _RUN_SEARCH_MAX_STORIES + 1])
    if len(stories) > _RUN_SEARCH_MAX_STORIES:
        stories = titled
    return runs.filter(Q(user_id__in=users) | Q(story_id__in=stories))


def generation_run_models() -> list[str]:
    """Every model some recorded run used, sorted."""
    return sorted(GenerationRun.objects.values_list("model", flat=True).distinct().order_by())


def _stages_stats(succeeded: QuerySet[GenerationRun]) -> list[StageStats]:
    aggregates: dict[str, Any] = {}
    for stage in REPORT_STAGES:
        # A stage's share of the total, over the runs that measured both (and a total above zero).
        both = Q(**{f"{stage}__isnull": False}, total_ms__gt=0)
        aggregates |= {
            f"{stage}__count": Count(stage),
            f"{stage}__max": Max(stage),
            f"{stage}__part": Sum(stage, filter=both),
            f"{stage}__whole": Sum("total_ms", filter=both),
        }
    figures = succeeded.order_by().aggregate(**aggregates)
    stats = []
    for stage in REPORT_STAGES:
        count, whole = figures[f"{stage}__count"], figures[f"{stage}__whole"]
        median, p95 = _stage_ranks(succeeded, stage, count)
        stats.append(
            StageStats(
                stage=stage,
                count=count,
                median_ms=median,
                p95_ms=p95,
                max_ms=figures[f"{stage}__max"],
                share=figures[f"{stage}__part"] / whole if whole else None,
            )
        )
    return stats


def _stage_ranks(
    succeeded: QuerySet[GenerationRun], stage: str, count: int
) -> tuple[float | None, int | None]:
    """The median (of the two middle values for an even count) and the 95th percentile (nearest rank) of
    ``stage``'s ``count`` measured values: the rows of those ranks only, numbered by the database."""
    if not count:
        return None, None
    middle = {(count + 1) // 2, count // 2 + 1}
    p95_rank = math.ceil(0.95 * count)
    ranked = (
        succeeded.filter(**{f"{stage}__isnull": False})
        .order_by()
        .annotate(rank=Window(RowNumber(), order_by=[F(stage).asc(), F("pk").asc()]))
        .filter(rank__in=sorted(middle | {p95_rank}))
        .values_list("rank", stage)
    )
    values = dict(ranked)
    median = statistics.median(values[rank] for rank in sorted(middle))
    return median, values[p95_rank]


def _report_cost(groups: list[dict[str, Any]]) -> tuple[Decimal, int]:
    # A price per token: the cost of a model's runs is that of their summed usage.
    cost, unpriced = Decimal(0), 0
    for group in groups:
        group_cost = usage_cost_usd(model=group["model"], **{field: group[field] for field in _USAGE_FIELDS})
        if group_cost is None:
            unpriced += group["runs"]
        else:
            cost += group_cost
    return cost, unpriced


def _cache_hit_rate(tokens: dict[str, int]) -> float | None:
    return cache_hit_rate(
        cache_read=tokens["cache_read_tokens"],
        cache_write=tokens["cache_write_tokens"],
        input_tokens=tokens["input_tokens"],
    )

"""Writes on stories, screenplay versions, casts and generation runs. Every interface writes through here."""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from personas.models import PersonaConfig
from stories.errors import GenerationError
from stories.generation.validation import CastEntry
from stories.limits import generation_admission_check
from stories.metrics import generation_run_observe
from stories.models import GenerationRun, ScreenplayVersion, Story, StoryCast
from stories.validation import text_clean_or_reject


def story_create(*, owner: AbstractBaseUser, title: str, plot: str) -> Story:
    """A story without versions yet; generations add them."""
    return Story.objects.create(
        owner_id=owner.pk,
        title=text_clean_or_reject(title, field="title"),
        plot=text_clean_or_reject(plot, field="plot"),
    )


def story_update(*, story: Story, title: str | None = None, plot: str | None = None) -> Story:
    changed: list[str] = []
    if title is not None:
        story.title = text_clean_or_reject(title, field="title")
        changed.append("title")
    if plot is not None:
        story.plot = text_clean_or_reject(plot, field="plot")
        changed.append("plot")
    if changed:
        story.save(update_fields=[*changed, "updated_at"])
    return story


@transaction.atomic
def story_delete(*, story: Story) -> None:
    """Delete a story with its versions and cast; its runs stay (story set to null) as measurements."""
    story.delete()


# --- Generation: the run record and the one atomic save ------------------------------------


@dataclass
class RunRecord:
    """What a run measured, written to its GenerationRun row whatever the outcome."""

    context_ms: int | None = None
    prompt_ms: int | None = None
    ttft_ms: int | None = None
    llm_ms: int | None = None
    save_ms: int | None = None
    total_ms: int | None = None
    usage: dict[str, int] = field(default_factory=dict)
    # Some call was cut off before its final usage, so its output tokens were estimated.
    usage_estimated: bool = False
    continuations: int = 0
    stop_reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        return {
            "context_ms": self.context_ms,
            "prompt_ms": self.prompt_ms,
            "ttft_ms": self.ttft_ms,
            "llm_ms": self.llm_ms,
            "save_ms": self.save_ms,
            "total_ms": self.total_ms,
            "continuations": self.continuations,
            "usage_estimated": self.usage_estimated,
            "stop_reason": self.stop_reason[:40],
            "details": self.details,
            **self.usage,
        }


def generation_run_start(
    *,
    user_id: int,
    model: str,
    max_tokens: int,
    persona_names: Sequence[str],
    story_id: int | None,
    mode: str = GenerationRun.Mode.SINGLE,
    details: dict[str, Any] | None = None,
) -> GenerationRun:
    return GenerationRun.objects.create(
        user_id=user_id,
        story_id=story_id,
        mode=mode,
        model=model,
        max_tokens=max_tokens,
        persona_names=list(persona_names),
        status=GenerationRun.Status.STREAMING,
        details=details or {},
    )


@transaction.atomic
def generation_run_admit(
    *,
    user_id: int,
    model: str,
    max_tokens: int,
    persona_names: Sequence[str],
    story_id: int | None,
    mode: str = GenerationRun.Mode.SINGLE,
) -> GenerationRun:
    """Check the user's limits and open the run in one transaction, serialized per user.

    The no-op UPDATE on the user's row locks it (a row lock on PostgreSQL, the write lock on SQLite)
    until the run is created, so two processes admitting the same user cannot both squeeze past the
    limit. Raises GenerationError "busy" or "rate_limited" (stories.limits).

    The caller runs the run it gets and calls ``generation_run_release`` once the run is closed.
    """
    get_user_model().objects.filter(pk=user_id).update(last_login=F("last_login"))
    _orphans_close(user_id=user_id)
    generation_admission_check(user_id=user_id)
    run = generation_run_start(
        user_id=user_id,
        model=model,
        max_tokens=max_tokens,
        persona_names=persona_names,
        story_id=story_id,
        mode=mode,
        details={"process": _PROCESS},
    )
    # Registered before the commit: an admission waiting on the user's lock sees the run as running.
    _running_here.add(run.pk)
    return run


def generation_run_release(*, run_id: int) -> None:
    """This process no longer runs ``run_id`` (it is closed, or nothing more can be done to close it)."""
    _running_here.discard(run_id)


def generation_runs_running_here() -> int:
    """How many runs this process is running now (``make serve``'s worker waits for none before it stops)."""
    return len(_running_here)


def generation_run_finish(
    *,
    run_id: int,
    status: str,
    record: RunRecord,
    error_code: str = "",
    error_message: str = "",
    raw_text: str = "",
) -> None:
    """Close a run that saved nothing (failed or cancelled); it keeps the text it paid for."""
    GenerationRun.objects.filter(pk=run_id).update(
        status=status,
        error_code=error_code[:40],
        error_message=error_message[:2000],
        raw_text=raw_text,
        finished_at=timezone.now(),
        **record.fields(),
    )
    _run_observe_after_commit(run_id=run_id)


def _run_observe_after_commit(*, run_id: int) -> None:
    # After the commit: a save that rolls back is counted once, by the failure that follows it.
    transaction.on_commit(functools.partial(generation_run_observe, run_id=run_id), robust=True)


@dataclass(frozen=True)
class ScreenplayDraft:
    """A validated screenplay and where it goes."""

    title: str
    plot: str
    content: dict[str, Any]
    model: str
    max_tokens: int
    cast: Sequence[CastEntry]
    story_id: int | None = None


@transaction.atomic
def screenplay_version_create(
    *, user_id: int, draft: ScreenplayDraft, run_id: int | None = None, record: RunRecord | None = None
) -> ScreenplayVersion:
    """Save the story (new, or the user's own), its next version, its cast and the run, all or nothing.

    The same handful of queries whatever the number of scenes and cast members. The version number comes
    from one UPDATE ... SET latest_version_number = latest_version_number + 1, whose row lock makes
    concurrent saves of one story queue up and get distinct, contiguous numbers.
    """
    started = time.monotonic()
    story, number = _story_next_number(user_id=user_id, draft=draft)
    version = ScreenplayVersion.objects.create(
        story=story,
        number=number,
        content=draft.content,
        model=draft.model,
        max_tokens=draft.max_tokens,
        run_id=run_id,
    )
    _cast_replace(story=story, cast=draft.cast, fresh=draft.story_id is None)
    if run_id is not None:
        _run_succeed(run_id=run_id, story=story, record=record or RunRecord(), started=started)
    return version


def _story_next_number(*, user_id: int, draft: ScreenplayDraft) -> tuple[Story, int]:
    if draft.story_id is None:
        title = draft.title or draft.content.get("title", "") or "Untitled"
        story = Story.objects.create(
            owner_id=user_id, title=title[:200], plot=draft.plot, latest_version_number=1
        )
        return story, 1
    stories = Story.objects.filter(pk=draft.story_id, owner_id=user_id)
    if not stories.update(latest_version_number=F("latest_version_number") + 1, updated_at=timezone.now()):
        raise GenerationError("forbidden", "that story does not exist or is not yours")
    story = stories.only("id", "title", "latest_version_number").get()
    return story, story.latest_version_number


def _cast_replace(*, story: Story, cast: Sequence[CastEntry], fresh: bool) -> None:
    ids = dict(PersonaConfig.objects.filter(name__in=[c.persona for c in cast]).values_list("name", "id"))
    if not fresh:
        # A new version recasts the story: members no longer in it go, the others are updated in place.
        StoryCast.objects.filter(story=story).exclude(persona_id__in=list(ids.values())).delete()
    members = [
        StoryCast(story=story, persona_id=ids[c.persona], character_name=c.character_name[:80], order=c.order)
        for c in cast
        if c.persona in ids
    ]
    StoryCast.objects.bulk_create(
        members,
        update_conflicts=True,
        unique_fields=["story", "persona"],
        update_fields=["character_name", "order"],
    )


def _run_succeed(*, run_id: int, story: Story, record: RunRecord, started: float) -> None:
    # The run update is the transaction's last statement, so save_ms covers the rest of the save.
    record.save_ms = int((time.monotonic() - started) * 1000)
    if record.total_ms is not None:
        record.total_ms += record.save_ms
    GenerationRun.objects.filter(pk=run_id).update(
        status=GenerationRun.Status.SUCCEEDED, story=story, finished_at=timezone.now(), **record.fields()
    )
    _run_observe_after_commit(run_id=run_id)


# --- Runs left behind by a stopped server, or by this one -----------------------------------------

INTERRUPTED_CODE = "interrupted"
INTERRUPTED_MESSAGE = "The server stopped before this generation finished; nothing was saved."
ORPHANED_MESSAGE = "This generation stopped without being recorded as finished; nothing was saved."

# The safety net behind the pipeline's own closing of runs: this server process's runs that it still
# runs. A `streaming` run that this process admitted but no longer runs (a bug, or a close that failed
# while the database was down) is closed at its user's next admission instead of counting as active
# for STORY_STREAMING_STALE_SECONDS. Runs of other processes are left to that cutoff and to
# recover_runs: nothing here says whether another process is alive (that would be a lease, issue 16).
_PROCESS = uuid.uuid4().hex
_running_here: set[int] = set()


def _orphans_close(*, user_id: int) -> None:
    streaming = GenerationRun.objects.filter(user_id=user_id, status=GenerationRun.Status.STREAMING)
    orphans = [
        pk
        for pk, details in streaming.values_list("id", "details")
        if isinstance(details, dict) and details.get("process") == _PROCESS and pk not in _running_here
    ]
    if orphans:
        streaming.filter(pk__in=orphans).update(
            status=GenerationRun.Status.FAILED,
            error_code=INTERRUPTED_CODE,
            error_message=ORPHANED_MESSAGE,
            finished_at=timezone.now(),
        )


def generation_runs_recover(*, older_than_seconds: int = 0) -> int:
    """Mark runs still ``streaming`` as failed with error_code "interrupted"; return how many.

    Run at start-up (``manage.py recover_runs``, called by ``make run`` before daphne): a process
    that was stopped mid-generation leaves its runs in ``streaming`` forever otherwise. With several
    server processes, pass ``older_than_seconds`` so the runs of processes still alive are left alone.
    "interrupted" is not one of the WebSocket error codes on purpose: no client is waiting for these
    runs, and the run list and generation_report should tell a crash apart from a provider outage.
    """
    now = timezone.now()
    cutoff = now - timedelta(seconds=older_than_seconds)
    return GenerationRun.objects.filter(status=GenerationRun.Status.STREAMING, created_at__lte=cutoff).update(
        status=GenerationRun.Status.FAILED,
        error_code=INTERRUPTED_CODE,
        error_message=INTERRUPTED_MESSAGE,
        finished_at=now,
    )

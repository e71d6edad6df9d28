"""Writes on stories, screenplay versions, casts and generation runs. Every interface writes through here."""

from __future__ import annotations

import copy
import functools
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection, router, transaction
from django.db.models import F, QuerySet
from django.http import Http404
from django.utils import timezone

from personas.models import PersonaConfig
from stories.errors import GenerationError, RunTakenOver
from stories.exports.screenplay import one_line
from stories.generation.events import CastDropped
from stories.generation.requests import SceneRewrite
from stories.generation.validation import CastEntry, cast_entries, screenplay_validate
from stories.limits import admission_check, admission_counts
from stories.metrics import generation_run_observe
from stories.models import GenerationRun, ScreenplayVersion, Story, StoryCast
from stories.selectors import (
    runs_orphaned,
    screenplay_fountain_for_story,
    story_not_found,
    story_version_find,
    story_version_latest,
)
from stories.validation import (
    character_key,
    json_problem,
    text_clean_or_reject,
    text_field_clean,
    text_visible,
)
from storyproject.bidi import bidi_isolated
from storyproject.db import (
    lock_wait_bound,
    lock_waits_bounded,
    update_row,
    update_unflushed,
    update_unflushed_async,
)
from storyproject.untrusted import text_storable


def story_create(*, owner: AbstractBaseUser, title: str, plot: str) -> Story:
    """A story without versions yet; generations add them."""
    return Story.objects.create(
        owner_id=owner.pk,
        title=text_clean_or_reject(title, field="title"),
        plot=text_clean_or_reject(plot, field="plot"),
    )


def story_update(
    *,
    story: Story,
    title: str | None = None,
    plot: str | None = None,
    expected: Callable[[Story], bool] | None = None,
) -> Story:
    """Write the fields given, and only them: the story's version counter, which a version saved since
    ``story`` was read has moved on, stays as that save left it.

    ``expected``: whether the story as it is now (read under its row lock) is still the one the writer
    read (the settings page: its title and plot; the API: all a GET shows, If-Match's ETags); when it is
    not (another tab, a Regenerate changed it), nothing is written and ``DetailsChanged`` says the title
    and plot now. Checked and written under the story's row lock."""
    if expected is not None:
        with transaction.atomic():
            _story_expected_check(story=story, expected=expected)
            return story_update(story=story, title=title, plot=plot)
    changed: list[str] = []
    if title is not None:
        story.title = text_clean_or_reject(title, field="title")
        changed.append("title")
    if plot is not None:
        story.plot = text_clean_or_reject(plot, field="plot")
        changed.append("plot")
    if changed:
        story.updated_at = timezone.now()
        fields = {name: getattr(story, name) for name in [*changed, "updated_at"]}
        if not Story.objects.filter(pk=story.pk).update(**fields):
            # Deleted since the request found it (another tab): Django's save said "did not affect any
            # rows", a 500.
            raise _story_gone(story.pk)
    return story


class DetailsChanged(Exception):
    """A story's title or plot changed since the writer read them; what they are now."""

    def __init__(self, *, title: str, plot: str) -> None:
        super().__init__("the story's title or plot changed since they were read")
        self.title, self.plot = title, plot


@transaction.atomic
def story_delete(*, story: Story, expected: Callable[[Story], bool] | None = None) -> None:
    """Delete a story with its versions and cast; its runs stay (story set to null) as measurements.

    The story's row is locked first: a version being saved for it (which locked the row with its
    number's UPDATE) commits before the versions and cast to delete are read, so it goes too. Read
    before it, the new version was left pointing at the deleted story, and PostgreSQL refused the
    delete at its commit (a 500). ``expected``: as ``story_update``'s, nothing deleted when it says no.
    """
    if expected is not None:
        _story_expected_check(story=story, expected=expected)
    else:
        Story.objects.select_for_update().filter(pk=story.pk).values_list("pk").first()
    story.delete()


def _story_expected_check(*, story: Story, expected: Callable[[Story], bool]) -> None:
    """Lock the story's row and raise ``DetailsChanged`` unless ``expected`` of it as it is now."""
    current = Story.objects.select_for_update().filter(pk=story.pk).first()
    if current is None:
        raise _story_gone(story.pk)
    if not expected(current):
        raise DetailsChanged(title=current.title, plot=current.plot)


@transaction.atomic
def stories_delete(*, stories: QuerySet[Story]) -> None:
    """Delete several stories (the admin's bulk delete) as ``story_delete`` deletes one: their rows
    locked first, in the order of their ids, so a version being saved for one of them goes too."""
    locked = Story.objects.select_for_update().filter(pk__in=stories.values("pk")).order_by("pk")
    ids = list(locked.values_list("pk", flat=True))
    Story.objects.filter(pk__in=ids).delete()


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
    lease_owner: str = "",
    checkpoint: dict[str, Any] | None = None,
    started_by: str = "",
) -> GenerationRun:
    """A ``streaming`` run; with ``lease_owner``, held by that process under a fresh lease."""
    return GenerationRun.objects.create(
        user_id=user_id,
        story_id=story_id,
        mode=mode,
        model=model,
        max_tokens=max_tokens,
        persona_names=list(persona_names),
        status=GenerationRun.Status.STREAMING,
        details=details or {},
        lease_owner=lease_owner,
        lease_expires_at=_lease_until() if lease_owner else None,
        checkpoint=checkpoint or {},
        started_by=started_by,
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
    checkpoint: dict[str, Any] | None = None,
    started_by: str = "",
) -> GenerationRun:
    """Check the user's limits and open the run in one transaction, serialized per user.

    The no-op UPDATE on the user's row locks it (a row lock on PostgreSQL, the write lock on SQLite)
    until the run is created, so two processes admitting the same user cannot both squeeze past the
    limit. Raises GenerationError "busy" or "rate_limited" (stories.limits), or "forbidden" when
    ``story_id`` is no longer one of the user's stories.

    The run is leased to this process (RUN_LEASE_OWNER); ``checkpoint`` is what a resume will need
    (the request). The caller runs the run it gets, keeps its lease, and calls
    ``generation_run_release`` once the run is closed.
    """
    get_user_model().objects.filter(pk=user_id).update(last_login=F("last_login"))
    now = timezone.now()
    counts = admission_counts(user_id=user_id, now=now, lease_owner=RUN_LEASE_OWNER)
    # A copy first (one call, which other threads cannot interleave with): they register and release
    # runs while this one counts.
    if counts.leased_here > [here.user_id for here in list(_running_here.values())].count(user_id):
        # Rare: a run of this user that this process holds but no longer runs (see _running_here).
        _orphans_close(user_id=user_id)
        counts = admission_counts(user_id=user_id, now=now, lease_owner=RUN_LEASE_OWNER)
    admission_check(user_id=user_id, now=now, counts=counts)
    if story_id is not None and not _story_locked(story_id=story_id, user_id=user_id):
        # Deleted since the caller checked it (another tab): the run's row would break the foreign key
        # at this commit, an IntegrityError answered as an unexpected failure. Locked, a delete waits
        # for the run to commit and then leaves it without its story, as it leaves every run.
        raise GenerationError("forbidden", "that story does not exist or is not yours")
    run = generation_run_start(
        user_id=user_id,
        model=model,
        max_tokens=max_tokens,
        persona_names=persona_names,
        story_id=story_id,
        mode=mode,
        lease_owner=RUN_LEASE_OWNER,
        checkpoint=checkpoint,
        started_by=started_by,
    )
    # Registered before the commit: an admission waiting on the user's lock sees the run as running.
    _running_here[run.pk] = _RunHere(user_id=user_id, model=model, mode=mode)
    return run


def _story_locked(*, story_id: int, user_id: int) -> bool:
    """Whether the user's story ``story_id`` exists, its row locked until the transaction ends."""
    return Story.objects.select_for_update().filter(pk=story_id, owner_id=user_id).exists()


def generation_run_release(*, run_id: int) -> None:
    """This process no longer runs ``run_id`` (it is closed, or nothing more can be done to close it)."""
    _running_here.pop(run_id, None)


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
    lease_owner: str | None = None,
) -> bool:
    """Close a run that saved nothing (failed or cancelled); it keeps the text it paid for.

    With ``lease_owner``, only while that process still holds the run: a process that lost its lease
    (another took the run over) writes nothing. Returns whether the run was closed. The model's text
    is kept with each NUL or lone surrogate as U+FFFD: PostgreSQL stores neither, and a reply holding
    one is no screenplay, but the run must still be closed.
    """
    # A lock held on the run elsewhere fails the close after a while rather than stalling it.
    with lock_waits_bounded(router.db_for_write(GenerationRun)):
        closed = _runs_held(run_id=run_id, lease_owner=lease_owner).update(
            status=status,
            error_code=error_code[:40],
            error_message=text_storable(error_message[:2000]),
            raw_text=text_storable(raw_text),
            finished_at=timezone.now(),
            **_LEASE_ENDED,
            **record.fields(),
        )
        if closed:
            _run_observe_after_commit(run_id=run_id, status=status, record=record)
    return bool(closed)


def _runs_held(*, run_id: int, lease_owner: str | None) -> Any:
    runs = GenerationRun.objects.filter(pk=run_id)
    return runs if lease_owner is None else runs.filter(lease_owner=lease_owner)


def _run_observe_after_commit(*, run_id: int, status: str = "", record: RunRecord | None = None) -> None:
    # After the commit: a save that rolls back is counted once, by the failure that follows it. A run
    # this process runs is counted from what it has just written (``status``, ``record``) and what its
    # admission recorded here, rather than read back: one query fewer in every save (stories.metrics).
    here = _running_here.get(run_id)
    written = None
    if here is not None and record is not None and status:
        written = GenerationRun(pk=run_id, status=status, model=here.model, mode=here.mode, **record.fields())
    observe = functools.partial(generation_run_observe, run_id=run_id, run=written)
    transaction.on_commit(observe, robust=True)


@dataclass(frozen=True)
class ScreenplayDraft:
    """A validated screenplay and where it goes."""

    title: str
    plot: str
    content: dict[str, Any]
    model: str
    max_tokens: int | None
    cast: Sequence[CastEntry]
    story_id: int | None = None
    origin: str = ScreenplayVersion.Origin.GENERATED
    based_on: int | None = None
    # The version a writer's edit started from: saving fails with "version_conflict" if it is no
    # longer the latest (another tab, a generation saved since), unless the writer saves anyway.
    base_version: int | None = None
    save_anyway: bool = False
    # A scene rewrite: its one scene goes onto whatever was saved while it ran (_rewrite_rebased).
    rewrite: SceneRewrite | None = None


@transaction.atomic
def screenplay_version_create(
    *,
    user_id: int,
    draft: ScreenplayDraft,
    run_id: int | None = None,
    record: RunRecord | None = None,
    lease_owner: str | None = None,
) -> ScreenplayVersion:
    """Save the story (new, or the user's own), its next version, its cast and the run, all or nothing.

    The same handful of queries whatever the number of scenes and cast members. The version number comes
    from one UPDATE ... SET latest_version_number = latest_version_number + 1, whose row lock makes
    concurrent saves of one story queue up and get distinct, contiguous numbers.
    With ``lease_owner`` the save rolls back unless that process still holds the run: a run taken over
    by another process is saved once, by the process that holds it.
    """
    started = time.monotonic()
    story, number = _story_next_number(user_id=user_id, draft=draft)
    if draft.base_version is not None and draft.base_version >= number:
        raise GenerationError("invalid_request", f"the story has no version {draft.base_version}")
    if draft.base_version is not None and number != draft.base_version + 1 and not draft.save_anyway:
        # Raised inside the transaction: the number handed out above is rolled back with it.
        raise GenerationError(
            "version_conflict",
            f"version {number - 1} was saved after version {draft.base_version}, which this edit started "
            "from; nothing was saved",
        )
    content = draft.content
    if draft.rewrite is not None and number != draft.rewrite.latest + 1:
        content = _rewrite_rebased(story=story, number=number, rewrite=draft.rewrite, content=content)
    version = ScreenplayVersion.objects.create(
        story=story,
        number=number,
        content=content,
        model=draft.model,
        max_tokens=draft.max_tokens,
        run_id=run_id,
        origin=draft.origin,
        based_on=draft.based_on,
    )
    dropped = _cast_replace(story=story, cast=draft.cast, fresh=draft.story_id is None)
    if run_id is not None:
        record = record or RunRecord()
        if dropped:
            # The run's `saved` event (stories.generation.finish) and its end rebuilt from the
            # database (selectors.run_final_events) both read it from here.
            record.details = {**record.details, "cast_dropped": dropped}
        _run_succeed(run_id=run_id, story=story, record=record, started=started, lease_owner=lease_owner)
    return version


def _rewrite_rebased(
    *, story: Story, number: int, rewrite: SceneRewrite, content: dict[str, Any]
) -> dict[str, Any]:
    """A rewrite that other versions were saved during: its scene put into the latest of them.

    Two rewrites of the latest version at once (two scenes of the story page) must both stay in the
    latest version: the second one goes onto what the first saved. That holds while the versions
    saved meanwhile left its scene, the scene count and the characters as the rewritten version had
    them; anything else (or a rewrite of an older version, which keeps that version's other scenes)
    is a conflict, and nothing is saved.
    """
    contents = dict(
        ScreenplayVersion.objects.filter(story=story, number__in=[rewrite.version, number - 1]).values_list(
            "number", "content"
        )
    )
    base, latest = contents.get(rewrite.version), contents.get(number - 1)
    if rewrite.version == rewrite.latest and _scene_untouched(base, latest, rewrite.index):
        assert latest is not None
        rebased = copy.deepcopy(latest)
        rebased["scenes"][rewrite.index] = content["scenes"][rewrite.index]
        return rebased
    raise GenerationError(
        "version_conflict",
        f"version {number - 1} was saved while scene {rewrite.index + 1} was being rewritten "
        f"from version {rewrite.version}; nothing was saved",
    )


def _scene_untouched(base: Any, latest: Any, index: int) -> bool:
    if not isinstance(base, dict) or not isinstance(latest, dict):
        return False
    scenes, latest_scenes = base.get("scenes") or [], latest.get("scenes") or []
    return (
        len(scenes) == len(latest_scenes)
        and scenes[index] == latest_scenes[index]
        and base.get("characters") == latest.get("characters")
    )


def _story_next_number(*, user_id: int, draft: ScreenplayDraft) -> tuple[Story, int]:
    if draft.story_id is None:
        # A model's title (and an import's) may span lines: a story's title is one line (title_problem).
        title = one_line(draft.title or str(draft.content.get("title", "")))
        if not text_visible(title):
            # An import's title page or a model's title of marks only (U+200F ...) draws nothing.
            title = "Untitled"
        story = Story.objects.create(
            owner_id=user_id, title=title[:200], plot=draft.plot, latest_version_number=1
        )
        return story, 1
    stories = Story.objects.filter(pk=draft.story_id, owner_id=user_id)
    if not stories.update(
        latest_version_number=F("latest_version_number") + 1,
        updated_at=timezone.now(),
        **_story_fields_asked(draft),
    ):
        raise _story_missing(draft)
    story = stories.only("id", "title", "latest_version_number").get()
    return story, story.latest_version_number


def _story_fields_asked(draft: ScreenplayDraft) -> dict[str, str]:
    """What a regeneration of the whole story asked it to be: its plot, and its title when one was given.

    The story page's Regenerate form starts from the story's plot and title, and a scene rewrite sends
    them to the model: left as they were, the writer who regenerated from a new plot found the old one
    in the form, and the new version's scenes were rewritten from a plot they were not written from.
    """
    if draft.origin != ScreenplayVersion.Origin.GENERATED or draft.rewrite is not None:
        return {}
    fields = {"plot": draft.plot} if draft.plot else {}
    title = one_line(draft.title)
    if text_visible(title):
        fields["title"] = title[:200]
    return fields


def _story_missing(draft: ScreenplayDraft) -> Exception:
    """What a save answers when ``draft.story_id`` is not one of the writer's stories (any more)."""
    if draft.origin == ScreenplayVersion.Origin.GENERATED:
        # A generation names its story in the request: one not the writer's is `forbidden` (protocol.md).
        return GenerationError("forbidden", "that story does not exist or is not yours")
    return _story_gone(draft.story_id or 0)


def _story_gone(story_id: int) -> Http404:
    # The writer's own save (an edit, a restore) names the story in its URL, found theirs a moment ago:
    # deleted since by another tab or request, it is the 404 that the URL answers a moment later, not a 403.
    return story_not_found(story_id)


def _cast_replace(*, story: Story, cast: Sequence[CastEntry], fresh: bool) -> list[CastDropped]:
    """Cast the story; the members left out because their persona no longer exists (an editor deleted
    it while the run that names it was writing: the screenplay keeps the character and the persona's
    name, but a cast member needs the persona's row). One found stays until the save commits
    (_personas_held)."""
    ids = _personas_held(names=[c.persona for c in cast])
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
    return [{"persona": c.persona, "character_name": c.character_name} for c in cast if c.persona not in ids]


def _personas_held(*, names: Sequence[str]) -> dict[str, int]:
    """The ids of the personas ``names`` that exist, kept from being deleted until the transaction ends.

    On PostgreSQL the rows are locked FOR KEY SHARE (what its own foreign key check takes, and which
    other saves and persona edits share): a persona delete waits for this save, then finds the persona
    cast and is refused (personas.services.personas_delete). Unlocked, the delete went through between
    this read and the cast's insert, and the save failed at its commit (a 500, the version lost).
    SQLite's write transactions never overlap (BEGIN IMMEDIATE).
    """
    rows = PersonaConfig.objects.filter(name__in=names).order_by("pk").values_list("name", "id")
    if not names or connection.vendor != "postgresql":
        return dict(rows)
    sql, params = rows.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"{sql} FOR KEY SHARE", params)
        return dict(cursor.fetchall())


def _run_succeed(
    *, run_id: int, story: Story, record: RunRecord, started: float, lease_owner: str | None
) -> None:
    # The run update is the transaction's last statement, so save_ms covers the rest of the save.
    record.save_ms = int((time.monotonic() - started) * 1000)
    if record.total_ms is not None:
        record.total_ms += record.save_ms
    # Its SQL made once (storyproject.db.update_row): the ORM built and compiled this update of twenty
    # columns at every save.
    held = {"pk": run_id} if lease_owner is None else {"pk": run_id, "lease_owner": lease_owner}
    # A lock held on the run elsewhere fails the save (rolled back) after a while, not stalls it.
    lock_wait_bound(router.db_for_write(GenerationRun))
    updated = update_row(
        GenerationRun,
        held,
        status=GenerationRun.Status.SUCCEEDED,
        story=story.pk,
        finished_at=timezone.now(),
        **_LEASE_ENDED,
        **record.fields(),
    )
    if not updated:
        # Raised inside the transaction: the version and cast roll back with it.
        raise RunTakenOver("another server process took this run over; it saves it")
    _run_observe_after_commit(run_id=run_id, status=GenerationRun.Status.SUCCEEDED, record=record)


# --- The writer's own versions: edited, restored, imported (issue 17) ------------------------------
# They go through the same one-transaction save as a generation, without a model, a run or a cost.

Origin = ScreenplayVersion.Origin


def screenplay_version_write(
    *, user_id: int, story: Story, content: Any, base_version: int | None = None, save_anyway: bool = False
) -> ScreenplayVersion:
    """Save the writer's screenplay JSON as the story's next version (409 "version_conflict" if stale).

    ``save_anyway`` saves an edit of ``base_version`` even when newer versions exist: it stays the
    version's base (its characters carried over, ``based_on``), where leaving ``base_version`` out
    would start from the latest version's characters.

    A persona the edited version cast and an editor has deactivated since may stay in the content, as
    a restore keeps it: the writer did not choose it now. It leaves the story's cast; a persona the
    edit names anew must be active.
    """

    def carried() -> set[str]:  # read only when the edit names a persona that is not active
        edited = (
            story_version_find(story=story, number=base_version)
            if base_version is not None
            else story_version_latest(story=story)
        )
        return set(_personas_named(edited.content)) if edited is not None else set()

    draft = _writer_draft(
        content=content, story_id=story.pk, origin=Origin.EDITED, based_on=base_version, carried=carried
    )
    draft = replace(draft, base_version=base_version, save_anyway=save_anyway)
    return screenplay_version_create(user_id=user_id, draft=draft)


def screenplay_version_write_fountain(
    *, user_id: int, story: Story, fountain: str, base_version: int | None = None, save_anyway: bool = False
) -> ScreenplayVersion:
    """Save Fountain text as the next version; its characters keep the personas of the version edited."""
    content = screenplay_fountain_for_story(story=story, fountain=fountain, base_version=base_version)
    return screenplay_version_write(
        user_id=user_id, story=story, content=content, base_version=base_version, save_anyway=save_anyway
    )


def screenplay_version_restore(*, user_id: int, story: Story, number: int) -> ScreenplayVersion:
    """A new version with version ``number``'s content: history stays append-only.

    The old content is saved as it was; personas deactivated since simply leave the cast.
    """
    old = story_version_find(story=story, number=number)
    if old is None:
        if not Story.objects.filter(pk=story.pk, owner_id=user_id).exists():
            raise _story_gone(
                story.pk
            )  # deleted since the request found it and its version: not "no version"
        raise GenerationError("invalid_request", f"the story has no version {number}")
    named = _personas_named(old.content)
    active = PersonaConfig.objects.filter(name__in=named, is_active=True).values_list("name", flat=True)
    characters = old.content.get("characters") if isinstance(old.content, dict) else None
    draft = ScreenplayDraft(
        title="",
        plot="",
        content=old.content,
        model="",
        max_tokens=None,
        cast=cast_entries(
            characters if isinstance(characters, list) else [], [n for n in named if n in set(active)]
        ),
        story_id=story.pk,
        origin=Origin.RESTORED,
        based_on=number,
    )
    return screenplay_version_create(user_id=user_id, draft=draft)


def story_import(
    *, user_id: int, content: Any, cast: dict[str, str | None] | None = None
) -> ScreenplayVersion:
    """A new story whose version 1 is an imported screenplay, cast as the writer confirmed.

    ``cast`` maps character names to a persona name (or None: no persona); names not in it keep what
    the content says. The plot is the logline, which is what the title page says the story is about.
    """
    if isinstance(content, dict) and cast:
        characters = content.get("characters") or []
        named = {c.get("name") for c in characters if isinstance(c, dict)}
        strangers = [name for name in cast if name not in named]
        if strangers:
            raise GenerationError(
                "invalid_request",
                f"the cast names {', '.join(repr(n[:80]) for n in strangers[:5])}, not a character of "
                "the screenplay",
            )
        content = {**content, "characters": [_recast(c, cast) for c in characters]}
    draft = _writer_draft(content=content, story_id=None, origin=Origin.IMPORTED, based_on=None)
    title = str(content.get("title") or "Untitled")
    plot = imported_plot(content=content).text
    return screenplay_version_create(user_id=user_id, draft=replace(draft, title=title, plot=plot))


@dataclass(frozen=True)
class ImportedPlot:
    text: str
    # The logline was longer than STORY_MAX_PLOT_CHARS: ``text`` is its beginning.
    cut: bool
    # The characters of the logline that became the plot (its control characters dropped, trimmed).
    logline_chars: int = 0


def imported_plot(*, content: Any) -> ImportedPlot:
    """The plot of a story made from an imported screenplay: its logline, what the title page says the
    story is about; else a line naming the title.

    A logline may have 1,000 characters (the contract) and a plot only STORY_MAX_PLOT_CHARS, which may
    be less: a longer logline is cut at a word with "…", or Regenerate, which sends the story's plot,
    would be refused. The screenplay keeps the whole logline; the import pages and the API say it was cut.
    For the same reason the plot has none of the control characters a plot may not have (an escape,
    DEL, a C1 control): the logline's are dropped, as the story's title drops them (``one_line``).
    """
    limit = settings.STORY_MAX_PLOT_CHARS
    fields = content if isinstance(content, dict) else {}
    logline = text_field_clean(str(fields.get("logline") or "")).strip()
    if not logline:
        named = f"Imported screenplay: {one_line(str(fields.get('title') or '')) or 'Untitled'}"
        return ImportedPlot(text=named if len(named) <= limit else "Imported screenplay.", cut=False)
    if len(logline) <= limit:
        return ImportedPlot(text=logline, cut=False, logline_chars=len(logline))
    return ImportedPlot(text=_text_cut_at_word(logline, limit=limit), cut=True, logline_chars=len(logline))


def _text_cut_at_word(text: str, *, limit: int) -> str:
    """``text``'s beginning and "…", at most ``limit`` characters, ending at a word when one ends in
    its second half (a logline of one long word is cut inside it)."""
    head = text[: limit - 1]
    last_space = max(head.rfind(space) for space in (" ", "\n", "\t"))
    if last_space > limit // 2:
        head = head[:last_space]
    return head.rstrip() + "…"


def _recast(character: Any, cast: dict[str, str | None]) -> Any:
    if not isinstance(character, dict) or not isinstance(character.get("name"), str):
        return character  # the contract check that follows names what is wrong with it
    if character["name"] not in cast:
        return character
    persona = cast[character["name"]]
    rest = {key: value for key, value in character.items() if key != "persona"}
    return {**rest, "persona": persona} if persona else rest


def _scenes_bound(content: Any) -> None:
    """A writer's version (edited or imported, as JSON or Fountain) has at most STORY_IMPORT_MAX_SCENES
    scenes, STORY_IMPORT_MAX_ELEMENTS elements and STORY_IMPORT_MAX_CHARACTERS characters."""
    scenes = content.get("scenes") if isinstance(content, dict) else None
    if isinstance(scenes, list) and len(scenes) > settings.STORY_IMPORT_MAX_SCENES:
        raise GenerationError(
            "invalid_request",
            f"more than {settings.STORY_IMPORT_MAX_SCENES} scenes (STORY_IMPORT_MAX_SCENES)",
        )
    if isinstance(scenes, list):
        elements = sum(
            len(scene["elements"])
            for scene in scenes
            if isinstance(scene, dict) and isinstance(scene.get("elements"), list)
        )
        if elements > settings.STORY_IMPORT_MAX_ELEMENTS:
            raise GenerationError(
                "invalid_request",
                f"more than {settings.STORY_IMPORT_MAX_ELEMENTS} elements: action paragraphs, speeches, "
                "transitions (STORY_IMPORT_MAX_ELEMENTS)",
            )
    characters = content.get("characters") if isinstance(content, dict) else None
    if isinstance(characters, list) and len(characters) > settings.STORY_IMPORT_MAX_CHARACTERS:
        raise GenerationError(
            "invalid_request",
            f"more than {settings.STORY_IMPORT_MAX_CHARACTERS} characters (STORY_IMPORT_MAX_CHARACTERS)",
        )


def _writer_draft(
    *,
    content: Any,
    story_id: int | None,
    origin: str,
    based_on: int | None,
    carried: Callable[[], set[str]] | None = None,
) -> ScreenplayDraft:
    """Check a writer's screenplay like a model's, except that any active persona may play a part,
    and one ``carried()`` over from the version edited may stay (out of the cast if it is inactive)."""
    _scenes_bound(content)
    problem = json_problem(content)
    if problem is not None:
        raise GenerationError("invalid_request", f"content {problem}")
    named = _personas_named(content)
    active = set(PersonaConfig.objects.filter(name__in=named, is_active=True).values_list("name", flat=True))
    allowed = active | (carried() if carried is not None and not active.issuperset(named) else set())
    screenplay_validate(
        content=content, persona_names=[n for n in named if n in allowed], code="invalid_request"
    )
    _characters_named_once(content)
    cast = cast_entries(content.get("characters", []), [n for n in named if n in active])
    return ScreenplayDraft(
        title="",
        plot="",
        content=content,
        model="",
        max_tokens=None,
        cast=cast,
        story_id=story_id,
        origin=origin,
        based_on=based_on,
    )


def _characters_named_once(content: dict[str, Any]) -> None:
    """Refuse a character list that has a name twice: whose lines they are, and which persona plays
    them, cannot be told (two BOBs played by two personas were both cast, as BOB). Names that differ
    only in case or in how an accent is written (``stories.validation.character_key``: "ANA" and "ana")
    are the same name: a screenplay prints both as ANA."""
    seen: dict[str, str] = {}
    for character in content.get("characters", []):
        name, key = character["name"], character_key(character["name"])
        if key not in seen:
            seen[key] = name
            continue
        first = seen[key]
        if first == name:
            raise GenerationError(
                "invalid_request",
                f"the character list has {bidi_isolated(name[:80])!r} more than once; list each character once",
            )
        raise GenerationError(
            "invalid_request",
            f"the character list has {bidi_isolated(first[:80])!r} and {bidi_isolated(name[:80])!r}, one name "
            "written two ways (capitals, accents); list each character once, under one spelling",
        )


def _personas_named(content: Any) -> list[str]:
    characters = content.get("characters") if isinstance(content, dict) else None
    if not isinstance(characters, list):
        return []
    names = [c.get("persona") for c in characters if isinstance(c, dict)]
    return list(dict.fromkeys(name for name in names if isinstance(name, str)))


# --- Runs left behind by a stopped server, or by this one -----------------------------------------
# --- Leases and checkpoints: a killed process loses no finished work ----------------------------
# docs/generation.md, "Leases, checkpoints and resume". Every write a process makes to a run it runs
# (renewal, checkpoint, close, save) holds only while it still owns the lease, so a run taken over
# by another process is finished and saved once, by that process.

INTERRUPTED_CODE = "interrupted"
INTERRUPTED_MESSAGE = "The server stopped before this generation finished; nothing was saved."
ORPHANED_MESSAGE = "This generation stopped without being recorded as finished; nothing was saved."


@dataclass(frozen=True)
class _RunHere:
    user_id: int
    model: str
    mode: str


# This process, as a lease holder: host, pid and a random part (a pid is reused after a restart).
RUN_LEASE_OWNER = f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
# What a finished run keeps of its lease and checkpoint: nothing (the version or raw_text has the text).
_LEASE_ENDED: dict[str, Any] = {"lease_owner": "", "lease_expires_at": None, "checkpoint": {}}
# The safety net behind the pipeline's own closing of runs: this server process's runs that it still
# runs. A `streaming` run that this process holds but no longer runs (a bug, or a close that failed
# while the database was down) is closed at its user's next admission instead of counting as active.
# Run id: its user, model and mode.
_running_here: dict[int, _RunHere] = {}


def _lease_until() -> Any:
    return timezone.now() + timedelta(seconds=settings.STORY_RUN_LEASE_SECONDS)


def _runs_leased(*, run_id: int, lease_owner: str) -> Any:
    return GenerationRun.objects.filter(**_leased(run_id=run_id, lease_owner=lease_owner))


def _leased(*, run_id: int, lease_owner: str) -> dict[str, Any]:
    """The run while ``lease_owner`` holds it: its lease, and it is still streaming."""
    return {"pk": run_id, "status": GenerationRun.Status.STREAMING, "lease_owner": lease_owner}


def generation_run_lease_renew(*, run_id: int, lease_owner: str) -> bool:
    """Push the lease of a run this process holds one period further; False if it no longer holds it.

    One UPDATE ... WHERE lease_owner = this process: a renewal never takes a run from another process.
    """
    held = _runs_leased(run_id=run_id, lease_owner=lease_owner)
    return bool(update_unflushed(held, lease_expires_at=_lease_until()))


async def generation_run_lease_renew_async(*, run_id: int, lease_owner: str) -> bool:
    """``generation_run_lease_renew`` from async code: from the event loop itself where it may be
    (storyproject.db.update_unflushed_async), else in the thread pool."""
    held = _leased(run_id=run_id, lease_owner=lease_owner)
    return bool(await update_unflushed_async(GenerationRun, held, lease_expires_at=_lease_until()))


def generation_run_checkpoint(*, run_id: int, lease_owner: str, checkpoint: dict[str, Any]) -> bool:
    """Store a run's finished work (and renew its lease), in one UPDATE; False if it is no longer held."""
    held = _runs_leased(run_id=run_id, lease_owner=lease_owner)
    return bool(update_unflushed(held, checkpoint=checkpoint, lease_expires_at=_lease_until()))


async def generation_run_checkpoint_async(
    *, run_id: int, lease_owner: str, checkpoint: dict[str, Any]
) -> bool:
    """``generation_run_checkpoint`` from async code, as ``generation_run_lease_renew_async``."""
    held = _leased(run_id=run_id, lease_owner=lease_owner)
    written = await update_unflushed_async(
        GenerationRun, held, checkpoint=checkpoint, lease_expires_at=_lease_until()
    )
    return bool(written)


def generation_run_lease_release(*, run_id: int, lease_owner: str) -> bool:
    """Give up a run this process holds without closing it: it is orphaned at once, for another process
    to resume (a graceful stop's hand-over); False if it is no longer held (it ended, or was taken).

    One UPDATE ... WHERE lease_owner = this process and the run still streaming: from then on every
    write this process would make to the run (checkpoint, close, save) finds it no longer held.
    """
    # A lock held on the run elsewhere fails the release after a while rather than holding the stop.
    with lock_waits_bounded(router.db_for_write(GenerationRun)):
        released = _runs_leased(run_id=run_id, lease_owner=lease_owner).update(
            lease_owner="", lease_expires_at=timezone.now()
        )
    return bool(released)


def generation_run_claim(*, run_id: int, lease_owner: str) -> GenerationRun | None:
    """Take over an orphaned run (streaming, its lease expired); None if it is not orphaned (any more).

    The claim is one UPDATE whose WHERE says the lease has expired, so of several processes that find
    the same orphan only one gets it, and a run whose process is alive is never taken.
    """
    if run_id in _running_here:
        # This process runs it and let its lease lapse (a stalled loop): it carries on, under its own
        # lease owner, and a second copy here could not be told apart from it.
        return None
    # A lock held on the run elsewhere fails the claim after a while: the orphan watcher tries again
    # next period rather than holding a thread (a new one every period) for as long as the lock.
    with lock_waits_bounded(router.db_for_write(GenerationRun)):
        claimed_rows = _run_orphaned(run_id=run_id).update(
            lease_owner=lease_owner, lease_expires_at=_lease_until()
        )
    if not claimed_rows:
        return None
    claimed = GenerationRun.objects.get(pk=run_id)
    _running_here[run_id] = _RunHere(user_id=claimed.user_id, model=claimed.model, mode=claimed.mode)
    return claimed


def _run_orphaned(*, run_id: int) -> Any:
    """The run while it is orphaned: streaming, its lease expired (its process died, or let it go)."""
    return runs_orphaned().filter(pk=run_id)


# What a checkpoint's usage (paid before the process died) writes to the run's record.
_USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


@transaction.atomic
def generation_run_cancel_orphaned(*, run_id: int) -> bool:
    """Close an orphaned run as cancelled, keeping the usage its checkpoint says was paid; False when
    it is not orphaned (a process runs it, and sees the cancel request itself, or it has ended).

    No process runs an orphaned run to see a cancel: left streaming, it would be resumed, paid for and
    saved. The UPDATE's WHERE is the claim's (lease expired), so of a cancel and a claim racing for
    the same run exactly one wins.
    """
    if run_id in _running_here:
        return False
    # A lock held on the run elsewhere fails the cancel after a while rather than holding the request
    # (and its thread) for as long as the lock (stories.runs.runner says so to the writer).
    lock_wait_bound(router.db_for_write(GenerationRun))
    return _run_close_paid(run_id, _run_orphaned(run_id=run_id), status=GenerationRun.Status.CANCELLED)


@transaction.atomic
def generation_run_cancel_claimed(*, run_id: int, lease_owner: str) -> bool:
    """Close as cancelled, keeping the usage its checkpoint says was paid, a run this process claimed
    and cannot resume, for which a cancel was asked while its process was dead (stories.generation.resume)."""
    lock_wait_bound(router.db_for_write(GenerationRun))  # as a claim: given up, it is claimed again later
    runs = _runs_leased(run_id=run_id, lease_owner=lease_owner)
    return _run_close_paid(run_id, runs, status=GenerationRun.Status.CANCELLED)


@transaction.atomic
def generation_run_fail_claimed(
    *, run_id: int, lease_owner: str, error_code: str, error_message: str, retryable: bool
) -> bool:
    """Close as failed with the error its followers were told, keeping the usage its checkpoint says
    was paid, a run this process claimed whose process ended it but could not record it (the database
    was down then: stories.generation.resume)."""
    lock_wait_bound(router.db_for_write(GenerationRun))  # as a claim: given up, it is claimed again later
    runs = _runs_leased(run_id=run_id, lease_owner=lease_owner)
    details = runs.select_for_update().values_list("details", flat=True).first()
    if details is None:
        return False
    return _run_close_paid(
        run_id,
        runs,
        status=GenerationRun.Status.FAILED,
        error_code=error_code[:40],
        error_message=text_storable(error_message[:2000]),
        # As the error said, for the end rebuilt from the database (selectors.run_final_events).
        details={**(details if isinstance(details, dict) else {}), "retryable": retryable},
    )


def _run_close_paid(run_id: int, runs: Any, *, status: str, **fields: Any) -> bool:
    """Close run ``run_id``, as ``runs`` (a query by that id) finds it, with ``status`` and ``fields``
    and the usage its checkpoint says was paid; False when the query does not find it (in a
    transaction: it is locked)."""
    checkpoint = runs.select_for_update().values_list("checkpoint", flat=True).first()
    if checkpoint is None:
        return False
    usage = checkpoint.get("usage") if isinstance(checkpoint, dict) else None
    paid = {
        key: value for key, value in (usage or {}).items() if key in _USAGE_FIELDS and isinstance(value, int)
    }
    closed = runs.update(
        status=status,
        finished_at=timezone.now(),
        usage_estimated=bool(checkpoint.get("usage_estimated")) if isinstance(checkpoint, dict) else False,
        **_LEASE_ENDED,
        **paid,
        **fields,
    )
    if closed:
        _run_observe_after_commit(run_id=run_id)
    return bool(closed)


def generation_run_interrupt(*, run_id: int, lease_owner: str, message: str = INTERRUPTED_MESSAGE) -> bool:
    """Close a claimed run that cannot be resumed as failed, error_code "interrupted".

    A lock held on the run elsewhere fails the close after a while, as it fails the claim: the run stays
    claimed until its lease lapses, and is claimed (and closed) again then."""
    with lock_waits_bounded(router.db_for_write(GenerationRun)):
        closed = _runs_leased(run_id=run_id, lease_owner=lease_owner).update(
            status=GenerationRun.Status.FAILED,
            error_code=INTERRUPTED_CODE,
            error_message=message[:2000],
            finished_at=timezone.now(),
            **_LEASE_ENDED,
        )
        if closed:
            _run_observe_after_commit(run_id=run_id)
    return bool(closed)


def _orphans_close(*, user_id: int) -> None:
    streaming = GenerationRun.objects.filter(
        user_id=user_id, status=GenerationRun.Status.STREAMING, lease_owner=RUN_LEASE_OWNER
    )
    orphans = [pk for pk in streaming.values_list("id", flat=True) if pk not in _running_here]
    if orphans:
        streaming.filter(pk__in=orphans).update(
            status=GenerationRun.Status.FAILED,
            error_code=INTERRUPTED_CODE,
            error_message=ORPHANED_MESSAGE,
            finished_at=timezone.now(),
            **_LEASE_ENDED,
        )
        for run_id in orphans:
            _run_observe_after_commit(run_id=run_id)

"""Writes on stories. Every interface changes stories through here."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from stories.models import GenerationRun, Story
from stories.validation import text_clean_or_reject


def story_create(*, owner: AbstractBaseUser, title: str, plot: str) -> Story:
    """A story without versions yet; generations add them."""
    return Story.objects.create(
        owner=owner,
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


# --- Runs left behind by a stopped server --------------------------------------------------------

INTERRUPTED_CODE = "interrupted"
INTERRUPTED_MESSAGE = "The server stopped before this generation finished; nothing was saved."


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

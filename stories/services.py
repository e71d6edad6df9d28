"""Writes on stories. Every interface changes stories through here."""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction

from stories.models import Story
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

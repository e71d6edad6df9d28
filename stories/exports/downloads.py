"""A screenplay version as a file to download: the bytes, their type and a file name people recognise."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from django.contrib.auth.base_user import AbstractBaseUser

from stories.exports import ExportMeta, screenplay_export
from stories.models import ScreenplayVersion

_FILENAME_SLUG_MAX_CHARS = 60


@dataclass(frozen=True)
class ExportedFile:
    data: bytes
    content_type: str
    filename: str


def screenplay_version_download(*, version: ScreenplayVersion, fmt: str) -> ExportedFile:
    """The version in ``fmt``, titled with its story's title and credited to the story's owner.

    Raises ``stories.exports.ExportFormatError`` for a format that is not offered.
    """
    story = version.story
    meta = ExportMeta(
        title=story.title, author=_credit_name(story.owner), draft_date=version.created_at.date()
    )
    data, content_type, extension = screenplay_export(content=version.content, fmt=fmt, meta=meta)
    return ExportedFile(
        data=data,
        content_type=content_type,
        filename=export_filename(title=story.title, number=version.number, extension=extension),
    )


def export_filename(*, title: str, number: int, extension: str) -> str:
    """``my-story-v2.fountain``: the title slugified (words of any script kept), then the version."""
    slug = _slug_cut(_slug(title), _FILENAME_SLUG_MAX_CHARS).strip("-_") or "screenplay"
    return f"{slug}-v{number}.{extension}"


def _is_mark(char: str) -> bool:
    return unicodedata.category(char).startswith("M")


def _slug(title: str) -> str:
    """Django's ``slugify(allow_unicode=True)``, but combining marks are kept: Devanagari's vowel signs and
    viramas, Thai's tone marks are part of their words (slugify's ``\\w`` drops them, so
    "हिन्दी फ़िल्म" became "हनद-फलम")."""
    value = unicodedata.normalize("NFKC", title).lower()
    value = "".join(c for c in value if c.isalnum() or c in "_-" or c.isspace() or _is_mark(c))
    return re.sub(r"[-\s]+", "-", value).strip("-_")


def _slug_cut(slug: str, limit: int) -> str:
    """At most ``limit`` characters, never a letter without the marks that follow it."""
    end = min(limit, len(slug))
    while 0 < end < len(slug) and _is_mark(slug[end]):
        end -= 1
    return slug[:end]


def _credit_name(user: AbstractBaseUser) -> str:
    full_name = getattr(user, "get_full_name", lambda: "")()
    return full_name or user.get_username()

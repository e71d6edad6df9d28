"""A screenplay version as a file to download: the bytes, their type and a file name people recognise.

A version never changes once saved, so the formats that are costly to build (``cached`` in
``EXPORT_FORMATS``: the PDF) are built once and kept in the "exports" cache under a key made of what
decides their bytes: the version, the format, the title page (the story's title and its owner's name
may change) and ``EXPORT_FORMAT_VERSION``. The cache only saves time: while it is down, or when a file
is too big for it, the file is built in the request as before (docs/exports.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.cache import BaseCache, caches
from django.http import Http404
from django.utils.text import slugify

from stories import selectors
from stories.errors import GenerationError
from stories.exports import (
    EXPORT_FORMAT_VERSION,
    EXPORT_FORMATS,
    ExportFormatError,
    ExportMeta,
    screenplay_export,
)
from stories.limits import export_build_admitted
from stories.models import ScreenplayVersion, Story

logger = logging.getLogger(__name__)

_FILENAME_SLUG_MAX_CHARS = 60
# How long a request may take to build a file before another may build it too (a build that died
# leaves its claim behind); a 300-scene PDF takes 6 s of CPU.
_BUILD_CLAIM_SECONDS = 60
_BUSY_RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True)
class ExportedFile:
    data: bytes
    content_type: str
    filename: str
    # The name in ASCII letters, for clients that read no RFC 5987 ``filename*`` (curl -OJ, wget).
    ascii_filename: str = ""


@dataclass(frozen=True)
class ExportOrder:
    """A version's file before it is built: what decides its bytes and its name, and its ``etag``."""

    version: ScreenplayVersion
    fmt: str
    meta: ExportMeta
    filename: str
    ascii_filename: str

    @property
    def etag(self) -> str:
        """The file's ``ETag``, from what decides it (``_export_key``'s parts and the file's names)
        rather than from its bytes: a 304 neither reads the version's content nor builds the file (a
        PDF took seconds). Weak for a format whose builds differ (``reproducible``)."""
        stamp = json.dumps([_export_key(version=self.version, fmt=self.fmt, meta=self.meta), self.filename])
        tag = '"' + hashlib.sha256(f"{stamp}\0{self.ascii_filename}".encode()).hexdigest()[:32] + '"'
        return tag if EXPORT_FORMATS[self.fmt].reproducible else f"W/{tag}"


def screenplay_version_export_order(*, story: Story, number: int, fmt: str) -> ExportOrder:
    """The story's version ``number`` in ``fmt`` (a 404 when there is none), titled with the story's
    title and credited to the story's owner, not built yet.

    The version is read with its content deferred: the file's key and ETag need its id and date alone,
    and reading a 2.5 MB content took about 0.15 s of a cache hit. Only a build reads it.

    Raises ``stories.exports.ExportFormatError`` for a format that is not offered.
    """
    export = EXPORT_FORMATS.get(fmt)
    if export is None:
        raise ExportFormatError(f"Unknown export format {fmt!r}; use one of: {', '.join(EXPORT_FORMATS)}.")
    version = selectors.story_version_get(story=story, number=number, content=False)
    return ExportOrder(
        version=version,
        fmt=fmt,
        meta=_meta(version),
        filename=export_filename(title=story.title, number=version.number, extension=export.extension),
        ascii_filename=export_filename_ascii(
            title=story.title, number=version.number, extension=export.extension
        ),
    )


def export_build(order: ExportOrder) -> ExportedFile:
    """The file ``order`` stands for: from the cache, or built now."""
    data, content_type, _ = _exported(version=order.version, fmt=order.fmt, meta=order.meta)
    return ExportedFile(
        data=data, content_type=content_type, filename=order.filename, ascii_filename=order.ascii_filename
    )


def _content(version: ScreenplayVersion) -> Any:
    """The version's content, read now when it was deferred: a 404 when the version is gone since it
    was found (its story deleted by another tab), as it would be a moment later. It was a 500."""
    try:
        return version.content
    except ScreenplayVersion.DoesNotExist:
        raise Http404(f"Story {version.story_id} has no version {version.number}.") from None


def export_cache_key(*, version: ScreenplayVersion, fmt: str) -> str:
    """The "exports" cache key of the version's file in ``fmt``; ``<key>:building`` is claimed while
    a request builds it."""
    return _export_key(version=version, fmt=fmt, meta=_meta(version))


def _meta(version: ScreenplayVersion) -> ExportMeta:
    story = version.story
    return ExportMeta(
        title=story.title, author=_credit_name(story.owner), draft_date=version.created_at.date()
    )


def _exported(*, version: ScreenplayVersion, fmt: str, meta: ExportMeta) -> tuple[bytes, str, str]:
    export = EXPORT_FORMATS.get(fmt)
    if export is None or not export.cached:
        return screenplay_export(content=_content(version), fmt=fmt, meta=meta)
    data = _cached_bytes(
        key=_export_key(version=version, fmt=fmt, meta=meta),
        build=lambda: screenplay_export(content=_content(version), fmt=fmt, meta=meta)[0],
        user_id=version.story.owner_id,
    )
    return data, export.content_type, export.extension


def _export_key(*, version: ScreenplayVersion, fmt: str, meta: ExportMeta) -> str:
    """Everything that decides the file's bytes, hashed (a title may hold 200 characters of any script)."""
    # The version's own moment of creation as well as its id: a database restored or rebuilt under a
    # cache that kept its files gives the same ids to other versions, never the same microsecond.
    parts = [
        EXPORT_FORMAT_VERSION,
        version.pk,
        version.story_id,
        version.created_at.isoformat(),
        fmt,
        asdict(meta),
    ]
    digest = hashlib.sha256(json.dumps(parts, default=str, sort_keys=True).encode()).hexdigest()
    return f"export:{digest}"


def _cached_bytes(*, key: str, build: Callable[[], bytes], user_id: int) -> bytes:
    """The cached file, or one built now and kept; ``busy`` while another request is building it, and
    past the user's bounds on builds (``stories.limits.export_build_admitted``: a writer saving
    versions or renaming the story could have one PDF after another built).

    Only one request at a time builds a given file (where the cache is shared, across processes): a
    writer who clicks again, or a script asking many times at once, cannot make the server build the
    same 6-second PDF in parallel. A cache that is down claims nothing and keeps nothing, so every
    request builds its file, as before the cache.
    """
    cache = caches["exports"]
    data = cache.get(key)
    if isinstance(data, bytes):
        return data
    claim = f"{key}:building"
    if not cache.add(claim, 1, timeout=_BUILD_CLAIM_SECONDS) and cache.get(claim) is not None:
        raise GenerationError(
            "busy",
            "this file is being prepared for another request; try again in a few seconds",
            retryable=True,
            retry_after=_BUSY_RETRY_AFTER_SECONDS,
        )
    try:
        with export_build_admitted(user_id=user_id):
            data = build()
        if len(data) <= settings.STORY_EXPORT_CACHE_MAX_BYTES:
            _cache_keep(cache, key, data)
    finally:
        cache.delete(claim)
    return data


def _cache_keep(cache: BaseCache, key: str, data: bytes) -> None:
    try:
        cache.set(key, data)
    except Exception:
        # A cache that refuses the file (a Redis full with maxmemory-policy noeviction answers OOM,
        # which is no connection error) must not cost the writer the file that was just built.
        logger.warning("could not keep an export in the cache", exc_info=True)


def export_filename(*, title: str, number: int, extension: str) -> str:
    """``my-story-v2.fountain``: the title slugified (words of any script kept), then the version."""
    slug = _slug_cut(_slug(title), _FILENAME_SLUG_MAX_CHARS).strip("-_") or "screenplay"
    return f"{slug}-v{number}.{extension}"


def export_filename_ascii(*, title: str, number: int, extension: str) -> str:
    """``export_filename`` in ASCII letters: accents dropped ("café" is "cafe"), other scripts left out
    ("東京の夜" is "screenplay")."""
    slug = slugify(title)[:_FILENAME_SLUG_MAX_CHARS].strip("-_") or "screenplay"
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

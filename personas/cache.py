"""Cache keys and stamps for persona contexts (the scheme is described in ``personas.selectors``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import connection

from storyproject import stamped_cache

logger = logging.getLogger(__name__)

# Entries expire after ten minutes: should an invalidation fail (the cache unreachable just when an edit
# commits; logged as an error), the stale entry cannot outlive this. A cold read costs one query.
ENTRY_TIMEOUT = 600


def stamp_key(name: str) -> str:
    return f"persona-stamp:{stamped_cache.digest(name)}"


def entry_key(name: str, budget: int) -> str:
    # The budget is part of the key so that changing the setting never serves old cuts.
    return f"persona-context:{budget}:{stamped_cache.digest(name)}"


def stamps_bump(names: Iterable[str]) -> None:
    """Make every cached context of ``names`` unreachable; called after the edit commits."""
    names = list(names)
    for name in names:
        if not stamped_cache.stamp_bump(stamp_key(name)):
            logger.error("could not invalidate the cached context of persona %r", name)
    _pending().difference_update(names)


def pending_mark(names: Iterable[str]) -> None:
    """Note names edited in the open transaction: their contexts are not cached until it commits."""
    _pending().update(names)


def pending_names() -> set[str]:
    """Names edited in the open transaction (empty outside one: a rollback leaves nothing behind)."""
    if not connection.in_atomic_block:
        _pending().clear()
    return _pending()


def _pending() -> set[str]:
    # Per connection, hence per thread: another request's open transaction is not ours to see.
    pending: set[str] | None = getattr(connection, "_persona_contexts_pending", None)
    if pending is None:
        pending = set()
        connection._persona_contexts_pending = pending  # type: ignore[attr-defined]
    return pending

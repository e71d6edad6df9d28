"""Cached entries that an edit makes unreachable the moment its transaction commits.

The scheme (described in full in ``personas.selectors``, its first user): each cached thing has a
*stamp*, a number that the writer increments after its edit commits, and an *entry* tagged with the
stamp that was current before the database was read. An entry counts only while its tag equals the
current stamp, so an entry built from a row read before an edit committed can never be served after
it, whatever the interleaving. A missing stamp is replaced by a fresh random one before the read.

These helpers hold the parts every user of the scheme shares; a cache outage costs speed, never
correctness (reads answer as an empty cache, writes report failure and nothing is cached).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterable
from typing import Any

from django.core.cache import cache

logger = logging.getLogger(__name__)

STAMP_TIMEOUT = 7 * 24 * 3600


def digest(text: str) -> str:
    """A short key part for user-supplied text: no spaces or control characters, bounded length."""
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def get_many(keys: list[str]) -> dict[str, Any]:
    """Stamps and entries in one round trip; {} when the cache cannot be read."""
    try:
        return cache.get_many(keys)
    except Exception:
        logger.warning("cache unavailable for reading", exc_info=True)
        return {}


def get_many_stamped(keys: list[str], stamp_keys: list[str]) -> dict[str, Any]:
    """As ``get_many(keys)``, after giving each missing stamp of ``stamp_keys`` a fresh random value.

    On Redis it is one round trip for the stamps and the entries, cold or warm (where ``get_many``
    then ``stamps_fresh`` took two). A stamp that could not be written is absent from the result, so
    nothing is cached under it; {} when the cache cannot be read.
    """
    fresh = {key: secrets.randbits(62) for key in stamp_keys}
    try:
        add_then_get = getattr(cache, "add_many_then_get_many", None)
        if add_then_get is not None:
            return dict(add_then_get(fresh, keys, timeout=STAMP_TIMEOUT))
        return _add_then_get(fresh, keys)
    except Exception:
        logger.warning("cache unavailable for reading", exc_info=True)
        return {}


def _add_then_get(fresh: dict[str, int], keys: list[str]) -> dict[str, Any]:
    """``get_many_stamped`` on a cache without the one-round-trip script (local memory, tests)."""
    found = cache.get_many(list(dict.fromkeys([*fresh, *keys])))
    for key, stamp in fresh.items():
        if key in found:
            continue
        if cache.add(key, stamp, timeout=STAMP_TIMEOUT):
            found[key] = stamp
        elif (current := cache.get(key)) is not None:  # another reader made it meanwhile
            found[key] = current
    return found


def set_many(values: dict[str, Any], timeout: int) -> bool:
    """Write ``values`` in one round trip; False when nothing could be written."""
    if not values:
        return True
    try:
        return not cache.set_many(values, timeout=timeout)
    except Exception:
        logger.warning("cache unavailable for writing", exc_info=True)
        return False


def entry_current(found: dict[str, Any], stamp_key: str, entry_key: str) -> dict[str, Any] | None:
    """The entry of ``found`` when its tag equals the current stamp, else None."""
    stamp, entry = found.get(stamp_key), found.get(entry_key)
    if stamp is not None and isinstance(entry, dict) and entry.get("stamp") == stamp:
        return entry
    return None


def entry_current_all(found: dict[str, Any], stamp_keys: list[str], entry_key: str) -> dict[str, Any] | None:
    """The entry of ``found`` when its tag lists the current stamps of all ``stamp_keys``, else None.

    For an entry that depends on several things (a session and its user): an edit to any one of them
    makes it unreachable.
    """
    stamps, entry = [found.get(key) for key in stamp_keys], found.get(entry_key)
    if None not in stamps and isinstance(entry, dict) and entry.get("stamp") == stamps:
        return entry
    return None


def stamps_or_fresh(found: dict[str, Any], stamp_keys: list[str]) -> list[int] | None:
    """The stamps of ``stamp_keys``, missing ones replaced by fresh ones; None when those could not be written."""
    missing = [key for key in stamp_keys if found.get(key) is None]
    fresh = stamps_fresh(missing) if missing else {}
    if len(fresh) < len(missing):
        return None
    return [fresh[key] if key in fresh else found[key] for key in stamp_keys]


def stamps_fresh(stamp_keys: Iterable[str]) -> dict[str, int]:
    """New random stamps, written before the database is read; {} when they could not be written."""
    fresh = {key: secrets.randbits(62) for key in stamp_keys}
    return fresh if set_many(fresh, STAMP_TIMEOUT) else {}


def stamp_bump(stamp_key: str) -> bool:
    """Make every entry tagged with the current stamp unreachable; False when the cache refused."""
    try:
        cache.incr(stamp_key)
    except ValueError:
        # No stamp: the next reader makes a fresh random one, which no old entry can match.
        pass
    except Exception:
        logger.error("could not bump the cache stamp %s", stamp_key, exc_info=True)
        return False
    return True

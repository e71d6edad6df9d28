"""Names sorted as a reader expects (case and accents aside), on SQLite and on PostgreSQL, whatever
the PostgreSQL database's own collation.

A plain ``ORDER BY`` sorts by the database's collation: SQLite's BINARY, and PostgreSQL's ``C`` (or
``C.UTF-8``, the default of many container images) compare code points, so "Émile" came after "Zoe"
and "alice" after "Bob". Both databases now have a collation named ``USER_ORDER`` that compares names
ignoring case and accents:

- PostgreSQL: an ICU collation of the root locale at primary strength (``und-u-ks-level1``,
  nondeterministic), created by the migration personas 0003 (PostgreSQL docs, "Collation Support",
  "ICU Collations" and ``CREATE COLLATION``; it needs a server built with ICU, as Debian's and the
  official images are). It follows the Unicode Collation Algorithm's root order.
- SQLite: a collation registered on every connection (Python's ``sqlite3.Connection.create_collation``,
  from Django's ``connection_created`` signal) comparing ``user_order_key``: the text decomposed
  (NFKD), its combining marks dropped, case-folded. That is not the full Unicode Collation Algorithm
  (no contractions, no per-script weights; punctuation and digits sort by code point), so the two
  databases agree on letters with or without accents, and may differ on the rest.

Names equal to it (``Ana`` and ``ana``) are then ordered by the name itself, as the database compares
it, so an order is always the same (``user_ordering``). An index on the column does not serve such an
``ORDER BY`` (the index is in the column's own collation); the lists sorted so are short (personas).
"""

from __future__ import annotations

import functools
import unicodedata
from typing import Any

from django.db.models import F, OrderBy
from django.db.models.functions import Collate

USER_ORDER = "story_user_order"


def user_ordering(field: str, *, descending: bool = False) -> list[OrderBy]:
    """``ORDER BY field`` as a reader expects it: case and accents aside, then the name as it is."""
    return [
        Collate(F(field), USER_ORDER).desc() if descending else Collate(F(field), USER_ORDER).asc(),
        F(field).desc() if descending else F(field).asc(),
    ]


@functools.lru_cache(maxsize=4096)
def user_order_key(text: str) -> str:
    """What SQLite's ``USER_ORDER`` compares: ``text`` without case or accents (NFKD, marks dropped,
    casefold): "Émile" is "emile", "Straße" is "strasse"."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(char for char in decomposed if not unicodedata.combining(char)).casefold()


def _user_order_compare(left: str, right: str) -> int:
    left_key, right_key = user_order_key(left), user_order_key(right)
    return (left_key > right_key) - (left_key < right_key)


def sqlite_user_order_register(sender: Any, connection: Any, **kwargs: Any) -> None:
    """``connection_created`` receiver: SQLite's ``USER_ORDER`` collation on each new connection."""
    if connection.vendor == "sqlite":
        connection.connection.create_collation(USER_ORDER, _user_order_compare)

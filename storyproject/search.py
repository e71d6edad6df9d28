"""A list's search box: text that contains the search, whatever the case, on both databases."""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable

from django.db.models import F, Q
from django.db.models.functions import Lower
from django.db.models.lookups import Contains


def text_search_q(fields: Iterable[str], search: str) -> Q:
    """Rows where any of ``fields`` contains ``search``, ignoring case beyond ASCII too.

    ``icontains`` is SQLite's LIKE, which ignores the case of ASCII letters only
    (https://docs.djangoproject.com/en/5.2/ref/databases/#substring-matching-and-case-sensitivity):
    "été" did not find "Été" there, as it does on PostgreSQL. Both sides lowered instead: on SQLite by
    the Unicode ``lower()`` that personas/apps.py puts in place of the ASCII-only built-in, on
    PostgreSQL by its own. A ``%`` or ``_`` in the search is matched as itself (``Contains`` escapes it).
    """
    needle = search.lower()
    return functools.reduce(operator.or_, (Q(Contains(Lower(F(field)), needle)) for field in fields))

"""A list's search box: text that contains the search, whatever the case, on both databases."""

from __future__ import annotations

import functools
import operator
import unicodedata
from collections.abc import Iterable
from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import lookup_spawns_duplicates
from django.db.models import F, Func, Q, QuerySet, TextField, Value
from django.db.models.functions import Lower, Replace
from django.db.models.lookups import Contains
from django.http import HttpRequest
from django.utils.text import smart_split, unescape_string_literal


def text_search_q(fields: Iterable[str], search: str) -> Q:
    """Rows where any of ``fields`` contains ``search``, ignoring case beyond ASCII too.

    ``icontains`` is SQLite's LIKE, which ignores the case of ASCII letters only
    (https://docs.djangoproject.com/en/5.2/ref/databases/#substring-matching-and-case-sensitivity):
    "été" did not find "Été" there, as it does on PostgreSQL. Both sides lowered instead: on SQLite by
    the Unicode ``lower()`` that personas/apps.py puts in place of the ASCII-only built-in, on
    PostgreSQL by its own. A ``%`` or ``_`` in the search is matched as itself (``Contains`` escapes it).

    Accented letters are looked for both composed (NFC, what a keyboard types: "é") and decomposed (NFD,
    "e" and a combining accent, as text pasted from a macOS file name is): "café" did not find a title
    stored decomposed, nor the other way round. Text mixing both forms within the match is not found.

    The two lower-casings differ on two letters, which are folded after it on both sides (``_FOLDS``):
    Python writes a Greek word's last sigma as the final form (U+03C2) where PostgreSQL writes the
    ordinary one (U+03C3), so a Greek name typed in capitals was not found there; Python lowers the
    Turkish "İ" to "i" and a combining dot where PostgreSQL writes "i", so "istanbul" did not find
    "İstanbul" on SQLite. The German "ß" is folded to "ss", as capitals write it: "STRASSE" finds
    "Straße", and "strasse" too.
    """
    needles = text_folded_forms(search)
    return functools.reduce(
        operator.or_, (Q(Contains(field_folded(field), needle)) for field in fields for needle in needles)
    )


def text_folded_forms(text: str) -> list[str]:
    """``text`` folded (``text_folded``), composed and decomposed (one form when they are the same)."""
    return list(dict.fromkeys(text_folded(unicodedata.normalize(form, text)) for form in ("NFC", "NFD")))


# A final sigma, an "i" with a combining dot above (the lower case of the Turkish "İ" in Python), and
# the German sharp s, which capitals write "SS" ("STRASSE" is "Straße"; Python's casefold() does the same).
_FOLDS = (("\u03c2", "\u03c3"), ("i\u0307", "i"), ("\u00df", "ss"))


def text_folded(text: str) -> str:
    """``text`` as ``field_folded`` reads a column: lowered, then ``_FOLDS``."""
    text = text.lower()
    for before, after in _FOLDS:
        text = text.replace(before, after)
    return text


def field_folded(field: str) -> Func:
    """The column ``field`` lowered by the database, then ``_FOLDS``: equal to ``text_folded`` of its
    value on SQLite and PostgreSQL alike."""
    expression: Func = Lower(F(field))
    for before, after in _FOLDS:
        expression = Replace(expression, Value(before), Value(after), output_field=TextField())
    return expression


class CaseFoldedAdminSearch(admin.ModelAdmin):
    """A ModelAdmin whose search ignores case beyond ASCII too: each word of the search (a quoted phrase
    as one, as Django's own search reads it) in one of ``search_fields``; plain field paths only."""

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        fields = [str(field) for field in self.get_search_fields(request)]
        if not fields:
            return queryset, False
        for term in search_terms(search_term):
            queryset = queryset.filter(text_search_q(fields, term))
        return queryset, any(lookup_spawns_duplicates(self.opts, field) for field in fields)


def search_terms(search: str) -> list[str]:
    """The words of an admin search, a quoted phrase as one, as Django's own search reads them."""
    terms = []
    for term in smart_split(search):
        if term[:1] in ('"', "'") and len(term) > 1 and term[-1] == term[0]:
            term = unescape_string_literal(term)
        terms.append(term)
    return terms

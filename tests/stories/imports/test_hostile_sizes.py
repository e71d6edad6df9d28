"""Files within STORY_IMPORT_MAX_BYTES whose reading grew faster than their size (a request held a
worker for minutes); each is read in about the time of an ordinary screenplay of its size."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st
from screenplain.parsers.fountain import boneyard_re, note_re

from stories.imports import ScreenplayImportError, screenplay_from_fountain
from stories.imports.fountain import _spans_replaced

# An ordinary screenplay of these sizes reads in well under a second; the inputs below took from a
# minute to most of an hour before.
SECONDS = 5


@contextmanager
def _quick() -> Iterator[None]:
    started = time.monotonic()
    yield
    assert time.monotonic() - started < SECONDS


@pytest.mark.parametrize("opening", ["/* ", "[[ ", "/*\n\n", "[[\n"])
def test_unclosed_boneyards_and_notes_are_read_in_linear_time(opening: str) -> None:
    text = "INT. A\n\n" + opening * (300_000 // len(opening))
    with _quick():
        try:
            screenplay_from_fountain(text)
        except ScreenplayImportError as error:
            assert "longer than 5000 characters" in error.message


@given(st.lists(st.sampled_from(["/*", "*/", "[[", "]]", "*", "/", "[", "]", "\n", "a"]), max_size=30).map("".join))
def test_boneyards_and_notes_are_removed_as_screenplain_removes_them(text: str) -> None:
    assert _spans_replaced(text, "/*", "*/", lambda _span: "") == boneyard_re.sub("", text)
    assert _spans_replaced(text, "[[", "]]", lambda _span: "") == note_re.sub("", text)

"""Files within STORY_IMPORT_MAX_BYTES whose reading grew faster than their size (a request held a
worker for minutes); each is read in about the time of an ordinary screenplay of its size."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from screenplain.parsers.fountain import boneyard_re, note_re

from stories.imports import ScreenplayImportError, screenplay_from_fountain
from stories.imports.fountain import _spans_replaced

# The inputs below took from a minute to most of an hour before; read in linear time, the slowest (75,000
# paragraphs of an unclosed "/*") takes about 4.5 s of CPU on the 2-core machines here, twice its half.
# CPU time, not wall time: waiting for a core on a busy machine (CI runs beside other work) does not
# count (the wall-clock bound of 5 s failed there), and a reading that grows faster than its size does.
SECONDS = 10


@contextmanager
def _quick() -> Iterator[None]:
    started = time.process_time()
    yield
    assert time.process_time() - started < SECONDS


@pytest.mark.parametrize("opening", ["/* ", "[[ ", "/*\n\n", "[[\n"])
def test_unclosed_boneyards_and_notes_are_read_in_linear_time(opening: str, settings: Any) -> None:
    # The whole file read: 75,000 paragraphs are past the element bound, which would stop it earlier.
    settings.STORY_IMPORT_MAX_ELEMENTS = 100_000
    text = "INT. A\n\n" + opening * (300_000 // len(opening))
    with _quick():
        try:
            screenplay_from_fountain(text)
        except ScreenplayImportError as error:
            assert "longer than 5000 characters" in error.message


@given(
    st.lists(st.sampled_from(["/*", "*/", "[[", "]]", "*", "/", "[", "]", "\n", "a"]), max_size=30).map(
        "".join
    )
)
def test_boneyards_and_notes_are_removed_as_screenplain_removes_them(text: str) -> None:
    assert _spans_replaced(text, "/*", "*/", lambda _span: "") == boneyard_re.sub("", text)
    assert _spans_replaced(text, "[[", "]]", lambda _span: "") == note_re.sub("", text)


@pytest.mark.parametrize(
    "text",
    [
        "INT. A" + " " * 100_000 + "B",  # a heading
        "INT. A\n\nShe waits." + "\t" * 25_000 + "Then.",  # an action line (a tab is four spaces)
        "INT. A\n\n> CUT" + "\u3000" * 100_000 + "x <",  # centered text, any whitespace
        ("INT. A" + " " * 20_000 + "B\n\n") * 12,  # many of them
    ],
)
def test_long_runs_of_whitespace_inside_a_line_are_read_in_linear_time(text: str) -> None:
    with _quick():
        screenplay_from_fountain(text)


def test_a_run_of_whitespace_inside_a_line_is_kept_up_to_64_characters() -> None:
    content = screenplay_from_fountain(f"INT. A\n\nShe waits.{' ' * 64}Then{' ' * 65}more{' ' * 500}.\n")
    assert content["scenes"][0]["elements"] == [
        {"type": "action", "text": f"She waits.{' ' * 64}Then{' ' * 64}more{' ' * 64}."}
    ]

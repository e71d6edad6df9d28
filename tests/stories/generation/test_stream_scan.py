"""The jumping scan of stories.generation.stream finds what the character-by-character scan found.

hypothesis writes screenplays with hostile strings (quotes, backslashes, braces and brackets inside
them), cuts them anywhere (a reply cut off by max_tokens), wraps them in fences and words, or writes
plain structural noise, and splits the text into arbitrary deltas; the new parser must return the same
scenes at the same deltas, the same header and the same complete prefix as the old rules applied one
character at a time (tests/stories/generation/stream_reference.py).
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from stories.generation.stream import ScreenplayStreamParser
from tests.stories.generation.stream_reference import reference_scan

# Strings a model (or a writer's plot echoed back) may put in any field.
hostile = st.text(alphabet=st.sampled_from('ab {}[]",:\\/\n\tÉ🎬'), max_size=12)
scene = st.fixed_dictionaries(
    {
        "heading": hostile,
        "elements": st.lists(st.fixed_dictionaries({"type": st.just("action"), "text": hostile}), max_size=3),
    }
)
screenplay = st.fixed_dictionaries(
    {
        "title": hostile,
        "logline": hostile,
        "characters": st.lists(st.fixed_dictionaries({"name": hostile}), max_size=2),
        "scenes": st.lists(scene, max_size=4),
    }
)


@st.composite
def replies(draw: Any) -> str:
    """A reply as a model might stream it: JSON (key order shuffled), fenced or not, maybe cut off."""
    if draw(st.booleans()):
        # Plain noise built from the characters the scanner cares about.
        return str(draw(st.text(alphabet=st.sampled_from('{}[]":,\\ ax'), max_size=80)))
    document = draw(screenplay)
    keys = draw(st.permutations(list(document)))
    text = json.dumps({key: document[key] for key in keys}, ensure_ascii=draw(st.booleans()))
    if draw(st.booleans()):
        text = text[: draw(st.integers(min_value=0, max_value=len(text)))]
    prefix = draw(st.sampled_from(["", "```json\n", 'Here: "{" '])) if draw(st.booleans()) else ""
    return prefix + text + draw(st.sampled_from(["", "\n```", " } trailing {"]))


@st.composite
def chunked(draw: Any) -> tuple[str, list[str]]:
    text = draw(replies())
    cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=len(text)), max_size=12)))
    bounds = [0, *cuts, len(text)]
    return text, [text[a:b] for a, b in itertools.pairwise(bounds)]


@hypothesis_settings(
    max_examples=600, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck)
)
@given(case=chunked())
def test_the_jumping_scan_finds_what_the_character_scan_found(case: tuple[str, list[str]]) -> None:
    text, chunks = case
    reference = reference_scan(text)
    parser = ScreenplayStreamParser()
    start = 0
    for chunk in chunks:
        # Each scene comes back from the feed of the delta holding its closing brace.
        expected = [scene for at, scene in reference.scenes if start <= at < start + len(chunk)]
        assert parser.feed(chunk) == expected
        start += len(chunk)
    assert parser.scenes == [scene for _, scene in reference.scenes]
    assert parser.header() == reference.header
    assert parser.complete_prefix_length == reference.complete_prefix_length
    assert parser.scenes_started == reference.scenes_started
    assert parser.text == text


def test_a_scene_split_inside_an_escape_is_still_found_whole() -> None:
    text = json.dumps({"title": "t", "scenes": [{"heading": 'say \\"}{"', "elements": []}]})
    escape = text.index("\\\\")
    parser = ScreenplayStreamParser()
    found = [*parser.feed(text[: escape + 1]), *parser.feed(text[escape + 1 :])]
    assert found == [{"heading": 'say \\"}{"', "elements": []}]


def test_a_delta_that_ends_two_scenes_says_where_each_ends() -> None:
    parser = ScreenplayStreamParser()
    parser.feed('{"title": "T", "scenes": [{"heading": "A"')
    delta = '}, {"heading": "B"}, {"heading'
    found = parser.feed(delta)
    assert found == [{"heading": "A"}, {"heading": "B"}]
    assert [delta[:end] for end in parser.found_ends] == ["}", '}, {"heading": "B"}']
    assert parser.feed('": "C"') == [] and parser.found_ends == []

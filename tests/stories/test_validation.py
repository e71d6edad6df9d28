from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError

from stories import services
from stories.models import Story
from stories.validation import json_problem, text_clean_or_reject, text_field_problem, text_problem


@pytest.mark.parametrize("text", ["", "plain", "émoji \U0001f3ac", "tab\tnew\nline", "\u2028"])
def test_storable_text_passes_unchanged(text: str) -> None:
    assert text_problem(text) is None
    assert text_clean_or_reject(text) == text


@pytest.mark.parametrize(
    ("text", "problem"),
    [("a\x00b", "NUL"), ("\ud800", "surrogate"), ("x\udc00y", "surrogate"), ("\udfff", "surrogate")],
)
def test_unstorable_text_is_rejected_without_echoing_it(text: str, problem: str) -> None:
    with pytest.raises(ValidationError) as raised:
        text_clean_or_reject(text, field="plot")
    message = raised.value.messages[0]
    assert message.startswith("plot contains")
    assert problem in message
    assert text not in message
    message.encode("utf-8")  # the message itself is always encodable


@pytest.mark.parametrize(
    "text", ["Tab\there", "Two\nlines", "Windows\r\nlines", "Sep\u2028arated", "émoji 🎬"]
)
def test_a_writers_free_text_keeps_tabs_and_line_breaks(text: str) -> None:
    assert text_field_problem(text) is None


@pytest.mark.parametrize(
    ("text", "code_point"),
    [
        ("a\x01b", "U+0001"),
        ("bell\x07", "U+0007"),
        ("\x1b[2J", "U+001B"),
        ("v\x0bt", "U+000B"),
        ("f\x0cf", "U+000C"),
        ("\x1f", "U+001F"),
        ("del\x7f", "U+007F"),
        ("nel\x85", "U+0085"),
        ("csi\x9b", "U+009B"),
        ("\x9f", "U+009F"),
    ],
)
def test_a_writers_free_text_refuses_other_control_characters_naming_the_code_point(
    text: str, code_point: str
) -> None:
    problem = text_field_problem(text)
    assert problem == f"contains a control character ({code_point}); only tabs and line breaks may be in it"


def test_a_writers_free_text_refuses_nul_and_lone_surrogates_as_unstorable() -> None:
    assert "NUL (\\u0000)" in (text_field_problem("a\x00b") or "")
    assert "surrogate" in (text_field_problem("\ud800") or "")


def test_json_values_are_checked_in_keys_and_nested_strings() -> None:
    assert json_problem({"scenes": [{"heading": "INT. ROOM"}]}) is None
    assert "NUL" in (json_problem({"scenes": [{"heading": "a\x00"}]}) or "")
    assert "surrogate" in (json_problem({"k\ud800": 1}) or "")
    deep: Any = "x"
    for _ in range(40):
        deep = [deep]
    assert "nested deeper" in (json_problem(deep) or "")


def test_the_story_services_refuse_unstorable_text_for_every_interface(writer: Any) -> None:
    with pytest.raises(ValidationError):
        services.story_create(owner=writer, title="ok", plot="bad\x00")
    story = services.story_create(owner=writer, title="ok", plot="fine")
    with pytest.raises(ValidationError):
        services.story_update(story=story, title="\ud800")
    story.refresh_from_db()
    assert story.title == "ok"
    assert Story.objects.count() == 1


def test_the_white_space_trimmed_around_text_is_pythons_but_the_refused_control_characters() -> None:
    from stories.validation import TRIMMED_SPACE, text_field_problem

    spaces = {c for c in map(chr, range(0x110000)) if c.isspace()}
    kept = {c for c in spaces if c in "\t\n\r" or text_field_problem(c) is None}
    assert set(TRIMMED_SPACE) == kept
    assert spaces - kept == set("\x0b\x0c\x1c\x1d\x1e\x1f\x85")

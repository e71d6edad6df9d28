from __future__ import annotations

import io
import json
from datetime import date
from pathlib import Path
from typing import Any

import jsonschema
from hypothesis import HealthCheck, example, given, settings
from screenplain import types
from screenplain.parsers.fountain import parse
from screenplain.richstring import Bold, Italic, RichString, Underline

from stories.exports import ExportMeta
from stories.exports.fountain import ZERO_WIDTH_SPACE, fountain_from_screenplay
from tests.stories.exports.screenplays import screenplays

# The screenplay contract every stored version follows.
SCHEMA = json.loads(
    (Path(__file__).resolve().parents[3] / "stories" / "contract" / "screenplay.schema.json").read_text()
)


def _read(screenplay: dict[str, Any], **meta: Any) -> types.Screenplay:
    text = fountain_from_screenplay(content=screenplay, meta=ExportMeta(title=screenplay["title"], **meta))
    return parse(io.StringIO(text))


def _plain(rich: RichString) -> str:
    """What the reader shows, written back: underlined spans in underscores, no zero-width spaces."""
    parts = []
    for segment in rich.segments:
        assert not segment.styles & {Bold, Italic}, f"model text became emphasis: {rich!r}"
        parts.append(f"_{segment.text}_" if Underline in segment.styles else segment.text)
    return "".join(parts).replace(ZERO_WIDTH_SPACE, "")


def _words(text: str) -> str:
    return " ".join(text.replace(ZERO_WIDTH_SPACE, "").split())


def _structure(screenplay: dict[str, Any]) -> list[str]:
    """Scene headings, dialogue and transitions in order, as a Fountain reader should find them."""
    kinds = []
    for scene in screenplay["scenes"]:
        kinds.append("Slug")
        for element in scene["elements"]:
            if element["type"] == "dialogue":
                kinds.append("Dialog")
            elif element["type"] == "transition" and element["text"].strip():
                kinds.append("Transition")
    return kinds


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(screenplays())
# Found by hypothesis: a name ending in a space and a zero-width space kept the space when read back.
@example(
    screenplay={
        "title": "INT. ",
        "characters": [{"name": "INT. "}, {"name": "INT. \u200b"}],
        "scenes": [
            {"heading": "INT. ", "elements": [{"type": "dialogue", "character": "INT. \u200b", "text": "x"}]}
        ],
    }
)
# Found by hypothesis: a transition whose only cased letters were its "TO:" was written unforced, and
# read back as action (readers ask the text before "TO:" to be upper case).
@example(
    screenplay={
        "title": "INT. ",
        "characters": [{"name": "INT. "}],
        "scenes": [
            {"heading": "INT. ", "elements": [{"type": "transition", "text": "\u674e\u5c0f\u9f8dTO:"}]}
        ],
    }
)
def test_hostile_screenplays_read_back_with_the_same_structure(screenplay: dict[str, Any]) -> None:
    jsonschema.validate(screenplay, SCHEMA)
    parsed = _read(screenplay, author="Ann Writer")

    assert [_plain(line) for line in parsed.get_rich_attribute("Title")] == [_words(screenplay["title"])]
    kinds = [type(paragraph).__name__ for paragraph in parsed.paragraphs]
    assert not set(kinds) - {"Slug", "Action", "Dialog", "Transition"}, kinds
    assert [kind for kind in kinds if kind != "Action"] == _structure(screenplay)
    speakers = {
        _words(element["character"])
        for scene in screenplay["scenes"]
        for element in scene["elements"]
        if element["type"] == "dialogue"
    }
    assert {_plain(p.character) for p in parsed.paragraphs if isinstance(p, types.Dialog)} == speakers


def test_title_page_has_title_credit_author_and_draft_date() -> None:
    screenplay = {"title": "Rain: A Story", "scenes": [{"heading": "INT. OFFICE - NIGHT", "elements": []}]}
    parsed = _read(screenplay, author="Sam Writer", draft_date=date(2026, 11, 25))
    assert parsed.title_page == {
        "Title": ["Rain: A Story"],
        "Credit": ["Written by"],
        "Author": ["Sam Writer"],
        "Draft date": ["2026-11-25"],
    }


def test_elements_are_written_the_way_screenwriters_write_them() -> None:
    screenplay: dict[str, Any] = {
        "title": "T",
        "scenes": [
            {
                "heading": "INT. OFFICE - NIGHT",
                "elements": [
                    {"type": "action", "text": "Rain on the window."},
                    {"type": "action", "text": "THE PHONE RINGS."},
                    {"type": "dialogue", "character": "SAM", "parenthetical": "tired", "text": "Yeah?"},
                    {"type": "dialogue", "character": "McCoy", "text": "It's me."},
                    {"type": "transition", "text": "CUT TO:"},
                    {"type": "transition", "text": "FADE OUT."},
                ],
            },
            {"heading": "the roof", "elements": []},
        ],
    }
    text = fountain_from_screenplay(content=screenplay, meta=ExportMeta(title="T"))
    body = text.split("\n\n")[1:]
    assert body == [
        "INT. OFFICE - NIGHT",
        "Rain on the window.",
        "!THE PHONE RINGS.",
        "SAM\n(tired)\nYeah?",
        "@McCoy\nIt's me.",
        "CUT TO:",
        "> FADE OUT.",
        ".the roof\n",
    ]


def test_model_text_cannot_make_notes_boneyard_page_breaks_or_sections() -> None:
    screenplay: dict[str, Any] = {
        "title": "T",
        "scenes": [
            {
                "heading": "INT. A",
                "elements": [
                    {
                        "type": "action",
                        "text": "Before /* hidden\n\n===\n\n# Act two\n\n= synopsis\n\n*/ after",
                    },
                    {"type": "action", "text": "She says [[this is a note]] aloud."},
                    {"type": "action", "text": "INT. FAKE SCENE - DAY"},
                    {"type": "action", "text": "~ la la la\n> centered <"},
                ],
            }
        ],
    }
    parsed = _read(screenplay)
    actions = [[_plain(line) for line in p.lines] for p in parsed.paragraphs if isinstance(p, types.Action)]
    assert actions == [
        ["Before /* hidden"],
        ["==="],
        ["# Act two"],
        ["= synopsis"],
        ["*/ after"],
        ["She says [[this is a note]] aloud."],
        ["INT. FAKE SCENE - DAY"],
        ["~ la la la", "> centered <"],
    ]
    assert sum(isinstance(p, types.Slug) for p in parsed.paragraphs) == 1


def test_dialogue_keeps_blank_lines_and_text_that_looks_like_a_parenthetical() -> None:
    screenplay: dict[str, Any] = {
        "title": "T",
        "scenes": [
            {
                "heading": "INT. A",
                "elements": [
                    {"type": "dialogue", "character": "BO", "text": " "},
                    # After another speech, a trailing caret would make dual dialogue of the two.
                    {
                        "type": "dialogue",
                        "character": "ANA^",
                        "parenthetical": "()",
                        "text": "(not stage)\n\nLater.",
                    },
                ],
            }
        ],
    }
    dialogs = [p for p in _read(screenplay).paragraphs if isinstance(p, types.Dialog)]
    assert [_plain(d.character) for d in dialogs] == ["BO", "ANA^"]
    assert [(paren, _plain(line)) for paren, line in dialogs[1].blocks] == [
        (False, "(not stage)"),
        (False, ""),
        (False, "Later."),
    ]
    assert [(paren, _plain(line)) for paren, line in dialogs[0].blocks] == [(False, "")]


def test_control_characters_are_removed() -> None:
    screenplay: dict[str, Any] = {
        "title": "T\x00itle\x1b",
        "scenes": [
            {"heading": "INT. A\x07", "elements": [{"type": "action", "text": "a\x0bb\x85c\u2028d\ue700e"}]}
        ],
    }
    text = fountain_from_screenplay(content=screenplay, meta=ExportMeta(title=screenplay["title"]))
    assert text == "Title: Title\n\nINT. A\n\na\nb\nc\nde\n"

from __future__ import annotations

import json

import pytest

from stories.generation.stream import ScreenplayStreamParser, screenplay_text_parse

SCREENPLAY = {
    "title": "The {Brace} Affair",
    "logline": 'A "quoted" } trick',
    "characters": [{"name": "MARA", "persona": "mara"}],
    "scenes": [
        {"heading": "INT. ROOM - DAY", "elements": [{"type": "action", "text": "She waits. {not a scene}"}]},
        {
            "heading": "EXT. STREET - NIGHT",
            "elements": [{"type": "dialogue", "character": "MARA", "text": 'Escaped \\" quote ] and }'}],
        },
        {"heading": "INT. END - DAY", "elements": []},
    ],
}


def _feed_in_pieces(text: str, size: int) -> tuple[ScreenplayStreamParser, list[tuple[int, dict]]]:
    parser = ScreenplayStreamParser()
    found = []
    for start in range(0, len(text), size):
        for scene in parser.feed(text[start : start + size]):
            found.append((start, scene))
    return parser, found


@pytest.mark.parametrize("size", [1, 3, 17, 10_000])
def test_each_scene_is_found_once_and_whole_whatever_the_delta_size(size: int) -> None:
    text = "```json\n" + json.dumps(SCREENPLAY, indent=2) + "\n```"
    parser, found = _feed_in_pieces(text, size)
    assert [scene for _, scene in found] == SCREENPLAY["scenes"]
    assert parser.header() == {
        "title": "The {Brace} Affair",
        "logline": 'A "quoted" } trick',
        "characters": [{"name": "MARA", "persona": "mara"}],
    }


def test_a_scene_is_emitted_as_soon_as_its_closing_brace_arrives() -> None:
    text = json.dumps(SCREENPLAY)
    first_scene_end = text.index('}, {"heading": "EXT.')
    parser = ScreenplayStreamParser()
    assert parser.feed(text[:first_scene_end]) == []
    assert parser.feed(text[first_scene_end : first_scene_end + 1]) == [SCREENPLAY["scenes"][0]]


def test_a_cut_off_reply_keeps_its_complete_scenes_and_where_they_end() -> None:
    text = json.dumps(SCREENPLAY)
    cut = text[: text.index("INT. END")]
    parser = ScreenplayStreamParser()
    parser.feed(cut)
    assert parser.scenes == SCREENPLAY["scenes"][:2]
    assert cut[: parser.complete_prefix_length].endswith("}")
    assert json.loads(cut[: parser.complete_prefix_length] + "]}")["scenes"] == SCREENPLAY["scenes"][:2]


def test_a_finished_reply_is_parsed_through_a_code_fence_and_words_around_it() -> None:
    text = "Here it is:\n```json\n" + json.dumps(SCREENPLAY) + "\n```\nEnjoy."
    assert screenplay_text_parse(text) == SCREENPLAY


@pytest.mark.parametrize("text", ["no json here", '{"title": "x", "scenes": [', "[1, 2]"])
def test_a_reply_without_a_whole_json_object_is_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        screenplay_text_parse(text)


def test_the_header_is_read_whichever_order_the_keys_come_in() -> None:
    # A model without structured outputs may write the cast after the scenes.
    reordered = {"title": SCREENPLAY["title"], "scenes": SCREENPLAY["scenes"]}
    reordered |= {"logline": SCREENPLAY["logline"], "characters": SCREENPLAY["characters"]}
    text = json.dumps(reordered)
    parser = ScreenplayStreamParser()
    parser.feed(text[: text.index('"characters"')])
    assert parser.header() == {"title": SCREENPLAY["title"], "logline": SCREENPLAY["logline"]}
    parser.feed(text[text.index('"characters"') :])
    assert parser.scenes == SCREENPLAY["scenes"]
    assert parser.header() == {k: SCREENPLAY[k] for k in ("title", "logline", "characters")}

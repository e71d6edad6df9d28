"""The version diff: line changes inside changed scenes, and a bound on what it may cost."""

from __future__ import annotations

from typing import Any

from stories.exports import ExportMeta
from stories.exports.fountain import fountain_from_screenplay
from stories.imports import screenplay_from_fountain
from stories.screenplay_diff import screenplay_diff
from storyproject.diffs import MAX_EQUAL_PAIRS, MAX_EQUAL_PAIRS_IN_ALL


def play(*scenes: tuple[str, list[str]]) -> dict[str, Any]:
    return {
        "title": "T",
        "scenes": [
            {
                "heading": heading,
                "elements": [{"type": "dialogue", "character": "MAX", "text": t} for t in lines],
            }
            for heading, lines in scenes
        ],
    }


def test_a_changed_line_is_deleted_and_inserted_and_the_rest_kept() -> None:
    old = play(("INT. VAULT", ["Now.", "Wait.", "Go."]))
    new = play(("INT. VAULT", ["Now.", "Not yet.", "Go."]))
    [scene] = screenplay_diff(old=old, new=new)
    assert scene["status"] == "changed"
    assert [(line["op"], line["text"]) for line in scene["lines"]] == [
        ("equal", "INT. VAULT"),
        ("equal", "MAX: Now."),
        ("delete", "MAX: Wait."),
        ("insert", "MAX: Not yet."),
        ("equal", "MAX: Go."),
    ]


def test_a_scene_of_many_repeated_lines_is_shown_whole_rather_than_matched_line_by_line() -> None:
    # 1,000 copies of one line against the same with every other one changed: matching them line by
    # line took SequenceMatcher 17 s (16,000 of them, hours) on one request.
    old = play(("INT. ROOM", ["a"] * 1000))
    new = play(("INT. ROOM", ["a" if n % 2 else "b" for n in range(1000)]))
    [scene] = screenplay_diff(old=old, new=new)
    ops = [line["op"] for line in scene["lines"]]
    assert ops == ["delete"] * 1001 + ["insert"] * 1001
    assert [line["text"] for line in scene["lines"][:2]] == ["INT. ROOM", "MAX: a"]


def test_the_whole_diff_has_a_budget_too() -> None:
    # Scenes each under the bound for one scene, together over the bound for the diff: the first ones
    # are matched line by line, the rest shown whole.
    copies = int(MAX_EQUAL_PAIRS**0.5) - 2  # one line repeated: copies x copies equal pairs
    scenes = MAX_EQUAL_PAIRS_IN_ALL // (copies * copies) + 2
    old = play(*[(f"INT. ROOM {n}", ["a"] * copies) for n in range(scenes)])
    new = play(*[(f"INT. ROOM {n}", ["a"] * copies + ["b"]) for n in range(scenes)])
    diffs = screenplay_diff(old=old, new=new)
    matched = [any(line["op"] == "equal" for line in scene["lines"]) for scene in diffs]
    assert matched[0] and not matched[-1]
    assert matched == sorted(matched, reverse=True)


def test_a_change_of_summary_or_of_an_element_s_kind_alone_is_a_line_that_changed() -> None:
    # Both used to show the scene as "changed" with every one of its lines "equal".
    old = {
        "title": "T",
        "scenes": [
            {
                "heading": "INT. VAULT",
                "summary": "They break in.",
                "elements": [{"type": "action", "text": "CUT TO:"}],
            }
        ],
    }
    new = {
        "title": "T",
        "scenes": [
            {
                "heading": "INT. VAULT",
                "summary": "They are caught.",
                "elements": [{"type": "transition", "text": "CUT TO:"}],
            }
        ],
    }
    [scene] = screenplay_diff(old=old, new=new)
    assert scene["status"] == "changed"
    assert [(line["op"], line["text"]) for line in scene["lines"]] == [
        ("equal", "INT. VAULT"),
        ("delete", "= They break in."),
        ("delete", "CUT TO:"),
        ("insert", "= They are caught."),
        ("insert", "> CUT TO:"),
    ]


def test_a_scene_an_edit_saved_without_a_visible_change_is_unchanged() -> None:
    # The editor's Fountain saves each paragraph of an action as its own element: a scene the writer
    # did not touch was shown "changed" with every line equal.
    old = {
        "title": "T",
        "scenes": [
            {
                "heading": "INT. VAULT",
                "elements": [
                    {"type": "action", "text": "He waits.\n\nThe door opens."},
                    {"type": "dialogue", "character": "MAX", "text": "Now."},
                ],
            },
            {"heading": "EXT. ROOF", "elements": [{"type": "action", "text": "Wind."}]},
        ],
    }
    edited = screenplay_from_fountain(fountain_from_screenplay(content=old, meta=ExportMeta(title="T")))
    edited["scenes"][1]["elements"][0]["text"] = "Rain."
    vault, roof = screenplay_diff(old=old, new=edited)
    assert (vault["status"], vault["lines"]) == ("same", [])
    assert roof["status"] == "changed"
    [vault, _roof] = screenplay_diff(old=old, new=edited, unchanged_lines=True)
    assert {line["op"] for line in vault["lines"]} == {"equal"}

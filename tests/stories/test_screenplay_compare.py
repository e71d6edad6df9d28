from __future__ import annotations

from typing import Any

from stories.screenplay_compare import screenplay_compare


def play(*scenes: tuple[str, str]) -> dict[str, Any]:
    return {
        "title": "T",
        "scenes": [{"heading": h, "elements": [{"type": "action", "text": t}]} for h, t in scenes],
    }


def test_a_scene_inserted_at_the_start_does_not_mark_later_scenes_changed() -> None:
    left = play(("INT. A", "a"), ("INT. B", "b"))
    right = play(("INT. NEW", "n"), ("INT. A", "a"), ("INT. B", "b"))
    rows = screenplay_compare(left=left, right=right)
    assert [r.status for r in rows] == ["added", "same", "same"]
    assert [(r.left_number, r.right_number) for r in rows] == [(None, 1), (1, 2), (2, 3)]


def test_changed_and_removed_scenes_are_reported() -> None:
    left = play(("INT. A", "a"), ("INT. B", "b"), ("INT. C", "c"))
    right = play(("INT. A", "a, rewritten"), ("INT. C", "c"))
    assert [r.status for r in screenplay_compare(left=left, right=right)] == ["changed", "removed", "same"]


def test_malformed_content_compares_as_no_scenes() -> None:
    assert screenplay_compare(left={"scenes": "nope"}, right=None) == []
    rows = screenplay_compare(left={"scenes": [1, {"heading": "INT. A", "elements": []}]}, right={})
    assert [r.status for r in rows] == ["removed"]


def test_scenes_under_headings_repeated_past_the_bound_are_paired_by_position() -> None:
    # 300 scenes of one heading against as many with every other one renamed: aligning the headings
    # took SequenceMatcher 0.7 s (1,000 scenes, 23 s) on every diff and comparison page.
    left = play(*[("INT. ROOM", str(n)) for n in range(300)])
    right = play(*[("INT. ROOM" if n % 2 else "EXT. ROOF", str(n)) for n in range(300)])
    rows = screenplay_compare(left=left, right=right)
    assert [(r.left_number, r.right_number) for r in rows] == [(n, n) for n in range(1, 301)]
    assert [r.status for r in rows] == ["changed" if n % 2 == 0 else "same" for n in range(300)]

"""Line-by-line differences between two screenplay versions, scenes paired by heading.

Scenes are paired by ``screenplay_compare`` (on their slug lines, so an inserted scene does not shift
every later one); inside a changed pair, each scene is written as the lines a reader sees (the heading,
its summary as ``= summary``, each line of action, each line of dialogue prefixed by its speaker,
parentheticals, transitions as ``> CUT TO:``) and
``difflib`` marks the lines deleted from the older version and inserted in the newer one.

What ``difflib`` may spend is bounded (``storyproject.diffs``): past the bound, a changed scene is shown as
its old lines deleted and its new ones inserted, still true, less precise.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Literal, TypedDict

from stories.exports.screenplay import screenplay_scenes as typed_scenes
from stories.screenplay_compare import SceneComparison, SceneStatus, screenplay_compare
from storyproject.bidi import bidi_isolated
from storyproject.diffs import DiffBudget

LineOp = Literal["equal", "delete", "insert"]


class DiffLine(TypedDict):
    op: LineOp
    text: str


class SceneDiff(TypedDict):
    status: SceneStatus
    heading: str
    from_scene: int | None  # 1-based position in the older version
    to_scene: int | None
    lines: list[DiffLine]  # empty for an unchanged scene


def screenplay_diff(
    *, old: object, new: object, unchanged_lines: bool = False, names_isolated: bool = False
) -> list[SceneDiff]:
    """Every scene of either version, in order, with its line changes.

    An unchanged scene has no lines unless ``unchanged_lines`` (the diff page shows them folded).
    ``names_isolated`` (for a page): a speaker's name that holds right-to-left text or marks is isolated
    in its lines (storyproject.bidi), so that an override in the name does not draw the line's own
    words backwards after it.
    """
    budget = DiffBudget()
    name = bidi_isolated if names_isolated else str
    return [
        SceneDiff(
            status=row.status,
            heading=str((row.right or row.left or {}).get("heading", "")),
            from_scene=row.left_number,
            to_scene=row.right_number,
            lines=[]
            if row.status == "same" and not unchanged_lines
            else _line_diff(scene_lines(row.left, name), scene_lines(row.right, name), budget),
        )
        for row in screenplay_compare_read(left=old, right=new)
    ]


def screenplay_compare_read(*, left: object, right: object) -> list[SceneComparison]:
    """``screenplay_compare``'s pairs, with a changed pair whose lines read the same marked "same".

    What changed there is nothing a reader sees: an action split at its blank line (a Fountain edit
    saves one paragraph an element), a speech in two elements of one speaker. The diff showed it as
    "changed" with every line equal, and the story page's comparison as two identical scenes.
    """
    return [
        replace(row, status="same")
        if row.status == "changed" and scene_lines(row.left) == scene_lines(row.right)
        else row
        for row in screenplay_compare(left=left, right=right)
    ]


def scene_lines(scene: dict[str, Any] | None, name: Callable[[str], str] = str) -> list[str]:
    """A scene as the lines a reader sees, one string per printed line; each speaker as ``name`` gives
    it."""
    if scene is None:
        return []
    typed = typed_scenes({"scenes": [scene]})[0]
    lines = [typed.heading]
    # The summary and a transition are written as the editor's Fountain writes them (a synopsis line,
    # a forced transition), so a change of either alone is a line that changed, not a scene marked
    # "changed" whose every line is equal.
    lines.extend(f"= {line}" for line in typed.summary.splitlines() if line.strip())
    for element in typed.elements:
        if element.kind == "dialogue":
            if element.parenthetical:
                lines.append(f"{name(element.character)} ({element.parenthetical.strip('()')})")
            speaker = name(element.character)
            lines.extend(f"{speaker}: {line}" for line in element.text.splitlines() if line.strip())
        else:
            marker = "> " if element.kind == "transition" else ""
            lines.extend(marker + line for line in element.text.splitlines() if line.strip())
    return lines


def _line_diff(old: list[str], new: list[str], budget: DiffBudget) -> list[DiffLine]:
    if old == new:
        return [DiffLine(op="equal", text=line) for line in old]
    if not budget.spend(old, new):
        return [DiffLine(op="delete", text=line) for line in old] + [
            DiffLine(op="insert", text=line) for line in new
        ]
    result: list[DiffLine] = []
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            result.extend(DiffLine(op="equal", text=line) for line in old[i1:i2])
            continue
        result.extend(DiffLine(op="delete", text=line) for line in old[i1:i2])
        result.extend(DiffLine(op="insert", text=line) for line in new[j1:j2])
    return result

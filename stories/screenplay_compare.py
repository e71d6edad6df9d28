"""Scene-by-scene comparison of two screenplays (plain data in, plain data out; no Django state)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from itertools import zip_longest
from typing import Any, Literal

from storyproject.diffs import DiffBudget

SceneStatus = Literal["same", "changed", "added", "removed"]


@dataclass(frozen=True)
class SceneComparison:
    left: dict[str, Any] | None
    right: dict[str, Any] | None
    status: SceneStatus
    left_number: int | None
    right_number: int | None


def screenplay_scenes(content: object) -> list[dict[str, Any]]:
    """The scenes of a stored screenplay, skipping anything that is not a scene object."""
    if not isinstance(content, dict) or not isinstance(content.get("scenes"), list):
        return []
    return [scene for scene in content["scenes"] if isinstance(scene, dict)]


def screenplay_compare(*, left: object, right: object) -> list[SceneComparison]:
    """Pair the scenes of two versions, aligned on their slug lines, and say what changed.

    Aligning on headings (rather than on position) keeps a scene inserted near the start from
    marking every later scene as changed; headings repeated past ``storyproject.diffs``' bound are
    paired by position.
    """
    left_scenes, right_scenes = screenplay_scenes(left), screenplay_scenes(right)
    left_headings, right_headings = [_heading(s) for s in left_scenes], [_heading(s) for s in right_scenes]
    if DiffBudget().spend(left_headings, right_headings):
        matcher = difflib.SequenceMatcher(a=left_headings, b=right_headings, autojunk=False)
        opcodes = matcher.get_opcodes()
    else:
        # Headings repeated many times (300 scenes of "INT. ROOM" against as many, half renamed) took
        # SequenceMatcher 0.7 s, 1,000 of them 23 s, on every diff and comparison page: past the
        # bound, scenes are paired by position.
        opcodes = [("replace", 0, len(left_scenes), 0, len(right_scenes))]
    rows: list[SceneComparison] = []
    for _tag, i1, i2, j1, j2 in opcodes:
        pairs = zip_longest(range(i1, i2), range(j1, j2))
        rows.extend(_row(left_scenes, right_scenes, i, j) for i, j in pairs)
    return rows


def _row(
    left: list[dict[str, Any]], right: list[dict[str, Any]], i: int | None, j: int | None
) -> SceneComparison:
    a = left[i] if i is not None else None
    b = right[j] if j is not None else None
    status: SceneStatus
    if a is None:
        status = "added"
    elif b is None:
        status = "removed"
    else:
        status = "same" if a == b else "changed"
    return SceneComparison(
        left=a,
        right=b,
        status=status,
        left_number=None if i is None else i + 1,
        right_number=None if j is None else j + 1,
    )


def _heading(scene: dict[str, Any]) -> str:
    return str(scene.get("heading", "")).strip().upper()

"""The oracle of test_stream_scan: what the scene parser finds, by the rules it had when it scanned one
character at a time (commit 2510543), written out again as one plain loop over the characters.

Kept only to check that stories.generation.stream's jumping scan finds exactly the same.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import jiter


@dataclass
class Found:
    """What the parser reports after the text so far: scenes by the character that closed each."""

    scenes: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    header: dict[str, Any] = field(default_factory=dict)
    complete_prefix_length: int = 0
    scenes_started: bool = False


def reference_scan(text: str) -> Found:
    found = Found()
    depth: list[str] = []
    started = in_string = escaped = expect_key = in_scenes = False
    key, key_chars = "", None
    scenes_level: int | None = None
    member: tuple[str, int] | None = None  # (its key, where its value starts)
    scene_from: int | None = None

    def member_close(end: int) -> None:
        nonlocal member
        if member is not None:
            with contextlib.suppress(ValueError):
                found.header[member[0]] = jiter.from_json(text[member[1] : end].strip().encode())
            member = None

    for at, char in enumerate(text):
        if not started:
            if char == "{":
                started, expect_key = True, True
                depth.append("{")
            continue
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
                if key_chars is not None:
                    key, key_chars = text[key_chars:at], None
            continue
        if char == '"':
            in_string = True
            key_chars = at + 1 if len(depth) == 1 and expect_key else None
        elif char == ":" and len(depth) == 1:
            expect_key = False
            if key != "scenes":
                member = (key, at + 1)
        elif char == "," and len(depth) == 1:
            expect_key = True
            member_close(at)
        elif char in "{[":
            if char == "[" and len(depth) == 1 and key == "scenes" and scenes_level is None:
                scenes_level, in_scenes, found.scenes_started = 2, True, True
                found.complete_prefix_length = at + 1
            elif char == "{" and in_scenes and len(depth) == scenes_level:
                scene_from = at
            depth.append(char)
        elif char in "}]":
            if depth.pop() == "[" and len(depth) == 1:
                in_scenes = False
            if not depth:
                member_close(at)
                break
            if scene_from is not None and len(depth) == scenes_level:
                body, scene_from = text[scene_from : at + 1], None
                with contextlib.suppress(ValueError):
                    scene = jiter.from_json(body.encode())
                    if isinstance(scene, dict):
                        found.scenes.append((at, scene))
                        found.complete_prefix_length = at + 1
    return found

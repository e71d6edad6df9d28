"""The oracle of test_stream_scan: the scene parser as it was, scanning one character at a time.

Kept only to check that stories.generation.stream's jumping scan finds exactly what it found.
"""

from __future__ import annotations

import contextlib
from typing import Any

import jiter


class ReferenceParser:
    """The parser as it was before the jumping scan (commit 2510543): one Python call per character."""

    def __init__(self) -> None:
        self._chunks: list[str] = []
        self._stack: list[str] = []
        self._started = False
        self._finished = False
        self._in_string = False
        self._escape = False
        self._expect_key = False
        self._string: list[str] | None = None
        self._key = ""
        # The text of the top-level member being read (not "scenes"), and the members read so far.
        self._member: list[str] | None = None
        self._member_key = ""
        self._fields: dict[str, Any] = {}
        self._scenes_depth: int | None = None
        self._scene: list[str] | None = None
        # True once the "scenes" array has begun; _in_scenes until it ends.
        self.scenes_started = False
        self._in_scenes = False
        self.scenes: list[dict[str, Any]] = []
        # Text up to the end of the last complete scene: what a continuation hands back to the model.
        self.complete_prefix_length = 0
        self._length = 0

    @property
    def text(self) -> str:
        return "".join(self._chunks)

    def feed(self, delta: str) -> list[dict[str, Any]]:
        """Scan one delta; return the scenes it completed, in order."""
        self._chunks.append(delta)
        found: list[dict[str, Any]] = []
        for char in delta:
            self._length += 1
            if self._finished:
                continue
            scene = self._scan(char)
            if scene is not None:
                found.append(scene)
        return found

    def header(self) -> dict[str, Any]:
        """The top-level members other than the scenes (title, logline, characters) complete so far."""
        return dict(self._fields)

    def _scan(self, char: str) -> dict[str, Any] | None:
        if not self._started:
            if char == "{":
                self._started = True
                self._stack.append("{")
                self._expect_key = True
            return None
        self._capture(char)
        if self._in_string:
            self._scan_string(char)
            return None
        return self._scan_structure(char)

    def _capture(self, char: str) -> None:
        if self._member is not None:
            self._member.append(char)
        if self._scene is not None:
            self._scene.append(char)

    def _scan_string(self, char: str) -> None:
        if self._escape:
            self._escape = False
        elif char == "\\":
            self._escape = True
        elif char == '"':
            self._in_string = False
            if self._string is not None:
                self._key = "".join(self._string)
                self._string = None
            return
        if self._string is not None:
            self._string.append(char)

    def _scan_structure(self, char: str) -> dict[str, Any] | None:
        if char == '"':
            self._in_string = True
            # Only the keys of the top-level object matter (to find "scenes").
            self._string = [] if len(self._stack) == 1 and self._expect_key else None
        elif char == ":" and len(self._stack) == 1:
            self._expect_key = False
            if self._key != "scenes":
                self._member, self._member_key = [], self._key
        elif char == "," and len(self._stack) == 1:
            self._expect_key = True
            self._member_end()
        elif char in "{[":
            self._open(char)
        elif char in "}]":
            return self._close()
        return None

    def _open(self, char: str) -> None:
        if char == "[" and len(self._stack) == 1 and self._key == "scenes" and self._scenes_depth is None:
            self._scenes_depth = 2
            self.scenes_started = self._in_scenes = True
            self.complete_prefix_length = self._length
        elif char == "{" and self._in_scenes and len(self._stack) == self._scenes_depth:
            self._scene = ["{"]
        self._stack.append(char)

    def _close(self) -> dict[str, Any] | None:
        if not self._stack:
            return None
        if self._stack.pop() == "[" and len(self._stack) == 1:
            self._in_scenes = False  # the top-level array that closed is "scenes" or another member's
        if not self._stack:
            self._finished = True
            self._member_end()
            return None
        if self._scene is None or len(self._stack) != self._scenes_depth:
            return None
        scene_text, self._scene = "".join(self._scene), None
        try:
            scene = jiter.from_json(scene_text.encode())
        except ValueError:
            return None
        if not isinstance(scene, dict):
            return None
        self.scenes.append(scene)
        self.complete_prefix_length = self._length
        return scene

    def _member_end(self) -> None:
        """A top-level member ended at the "," or "}" just captured: keep its value if it parses."""
        if self._member is None:
            return
        text, self._member = "".join(self._member[:-1]).strip(), None
        with contextlib.suppress(ValueError):
            self._fields[self._member_key] = jiter.from_json(text.encode())

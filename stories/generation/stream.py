"""Finding the scenes of a screenplay in model text as it streams.

The model writes one JSON object (sometimes inside a Markdown code fence). Each delta is scanned once,
tracking strings and bracket depth; when a scene object inside the top-level "scenes" array closes, only
that scene's text is parsed (with jiter), and so is each other top-level member (title, logline,
characters) when it ends, wherever it comes: before the scenes (as our schema's order asks) or after
them (a model without structured outputs may put them anywhere). Nothing is re-parsed per delta.

The scan jumps: a regex search finds the next character that can change the state (a quote or a
backslash inside a string; a quote, ``:``, ``,`` or a bracket outside one), so the runs of ordinary
characters between them cost one C call, not one Python call each (issue 19: the per-character scan
was a tenth of daphne's CPU per streamed token). What a scene or member captures is kept as positions
in the text, sliced out when it ends.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import jiter

# Outside a string, the characters that change the state; inside one, those that can end it.
_STRUCTURE = re.compile(r'[":,{}\[\]]')
_STRING_STOP = re.compile(r'["\\]')


class ScreenplayStreamParser:
    """Feed text deltas; get back each scene as soon as its closing brace arrives."""

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
        # Where the top-level member being read (not "scenes") and the scene being read begin in the
        # text (None: not reading one); the members read so far.
        self._member_start: int | None = None
        self._member_key = ""
        self._fields: dict[str, Any] = {}
        self._scenes_depth: int | None = None
        self._scene_start: int | None = None
        # The deltas from the earliest open capture's start on, and where the first of them begins.
        self._tail: list[str] = []
        self._tail_start = 0
        # True once the "scenes" array has begun; _in_scenes until it ends.
        self.scenes_started = False
        self._in_scenes = False
        self.scenes: list[dict[str, Any]] = []
        # The first scene whose text closed but does not parse (its 0-based place among the scenes,
        # and the parser's message): the scenes after it would be counted one place too early.
        self.scene_error: tuple[int, str] | None = None
        # Text up to the end of the last complete scene: what a continuation hands back to the model.
        self.complete_prefix_length = 0
        # Where in the last delta fed each scene it completed ends (the index after its closing brace).
        self.found_ends: list[int] = []
        self._length = 0

    @property
    def text(self) -> str:
        return "".join(self._chunks)

    def feed(self, delta: str) -> list[dict[str, Any]]:
        """Scan one delta; return the scenes it completed, in order."""
        self._chunks.append(delta)
        base = self._length
        self._length += len(delta)
        self.found_ends = []
        if self._finished or not delta:
            return []
        self._tail.append(delta)
        found: list[dict[str, Any]] = []
        index, end = 0, len(delta)
        while index < end and not self._finished:
            if not self._started:
                index = self._start(delta, index)
            elif self._in_string:
                index = self._scan_string(delta, index)
            else:
                match = _STRUCTURE.search(delta, index)
                if match is None:
                    break
                index = match.end()
                scene = self._scan_structure(delta[index - 1], base + index - 1)
                if scene is not None:
                    found.append(scene)
                    self.found_ends.append(index)
        self._tail_trim()
        return found

    def header(self) -> dict[str, Any]:
        """The top-level members other than the scenes (title, logline, characters) complete so far."""
        return dict(self._fields)

    def _start(self, delta: str, index: int) -> int:
        """Skip to the object's opening brace (text before it is a code fence or words)."""
        brace = delta.find("{", index)
        if brace < 0:
            return len(delta)
        self._started = True
        self._stack.append("{")
        self._expect_key = True
        return brace + 1

    def _scan_string(self, delta: str, index: int) -> int:
        """Read a string from ``index`` to its closing quote or the delta's end; the index after."""
        if self._escape:
            # The character after a backslash, whatever it is, is part of the string.
            self._escape = False
            self._string_add(delta[index])
            index += 1
        match = _STRING_STOP.search(delta, index)
        if match is None:
            self._string_add(delta[index:])
            return len(delta)
        stop = match.start()
        if delta[stop] == "\\":
            self._escape = True
            self._string_add(delta[index : stop + 1])
            return stop + 1
        self._string_add(delta[index:stop])
        self._in_string = False
        if self._string is not None:
            self._key = "".join(self._string)
            self._string = None
        return stop + 1

    def _string_add(self, text: str) -> None:
        if self._string is not None:
            self._string.append(text)

    def _scan_structure(self, char: str, position: int) -> dict[str, Any] | None:
        """One state-changing character outside a string, at ``position`` in the whole text."""
        if char == '"':
            self._in_string = True
            # Only the keys of the top-level object matter (to find "scenes").
            self._string = [] if len(self._stack) == 1 and self._expect_key else None
        elif char == ":" and len(self._stack) == 1:
            self._expect_key = False
            if self._key != "scenes":
                self._member_start, self._member_key = position + 1, self._key
        elif char == "," and len(self._stack) == 1:
            self._expect_key = True
            self._member_end(position)
        elif char in "{[":
            self._open(char, position)
        elif char in "}]":
            return self._close(position)
        return None

    def _open(self, char: str, position: int) -> None:
        if char == "[" and len(self._stack) == 1 and self._key == "scenes" and self._scenes_depth is None:
            self._scenes_depth = 2
            self.scenes_started = self._in_scenes = True
            self.complete_prefix_length = position + 1
        elif char == "{" and self._in_scenes and len(self._stack) == self._scenes_depth:
            self._scene_start = position
        self._stack.append(char)

    def _close(self, position: int) -> dict[str, Any] | None:
        if not self._stack:
            return None
        if self._stack.pop() == "[" and len(self._stack) == 1:
            self._in_scenes = False  # the top-level array that closed is "scenes" or another member's
        if not self._stack:
            self._finished = True
            self._member_end(position)
            return None
        if self._scene_start is None or len(self._stack) != self._scenes_depth:
            return None
        scene_text = self._captured(self._scene_start, position + 1)
        self._scene_start = None
        try:
            scene = jiter.from_json(scene_text.encode())
        except ValueError as error:
            if self.scene_error is None:
                self.scene_error = (len(self.scenes), str(error))
            return None
        if not isinstance(scene, dict):
            return None
        self.scenes.append(scene)
        self.complete_prefix_length = position + 1
        return scene

    def _member_end(self, position: int) -> None:
        """A top-level member ended at the "," or "}" at ``position``: keep its value if it parses."""
        if self._member_start is None:
            return
        text = self._captured(self._member_start, position).strip()
        self._member_start = None
        with contextlib.suppress(ValueError):
            self._fields[self._member_key] = jiter.from_json(text.encode())

    def _captured(self, start: int, end: int) -> str:
        """The text from ``start`` to ``end`` (positions in the whole text), from the kept deltas."""
        offset = self._tail_start
        return "".join(self._tail)[start - offset : end - offset]

    def _tail_trim(self) -> None:
        """Keep only the deltas an open capture still needs."""
        starts = [s for s in (self._member_start, self._scene_start) if s is not None]
        keep_from = min(starts) if starts and not self._finished else self._length
        while self._tail and self._tail_start + len(self._tail[0]) <= keep_from:
            self._tail_start += len(self._tail.pop(0))


def characters_merge(characters: Any, extra: Any) -> list[Any]:
    """``characters`` followed by those of ``extra`` with a name not seen yet (a later part's cast)."""
    merged = list(characters) if isinstance(characters, list) else []
    known = {c.get("name") for c in merged if isinstance(c, dict)}
    for character in extra if isinstance(extra, list) else []:
        if isinstance(character, dict) and character.get("name") not in known:
            merged.append(character)
            known.add(character.get("name"))
    return merged


def screenplay_text_parse(text: str) -> dict[str, Any]:
    """Parse a finished reply: the JSON object in it, tolerating a code fence or words around it."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise ValueError("the reply holds no JSON object")
    parsed = jiter.from_json(text[start : end + 1].encode())
    if not isinstance(parsed, dict):
        raise ValueError("the reply is not a JSON object")
    return parsed

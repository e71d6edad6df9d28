"""A default responder for FakeAnthropic that plays a model writing one known screenplay.

It reads each request the way the model would: parallel mode's outline step gets the screenplay's
outline, a scene step ("write scene N of M") gets scene N, and any other request the whole screenplay.
Scenes can be paced one by one, and faults can be queued for a given scene. Tests and the parallel-mode
benchmark share it.
"""

from __future__ import annotations

import json
import re
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from tests.fake_anthropic import Reply

_SCENE_STEP = re.compile(r"Step 2: write scene (\d+) of (\d+)")
# A continuation of a step the output limit cut off (stories.generation.parallel_continue).
_CUT = re.compile(r"after (\d+) complete (?:scene entries|elements)")


def screenplay_outline(screenplay: dict[str, Any]) -> dict[str, Any]:
    """The outline of a screenplay as parallel mode asks for it."""
    scenes = []
    for number, scene in enumerate(screenplay["scenes"], start=1):
        speakers = [e["character"] for e in scene["elements"] if e["type"] == "dialogue"]
        scenes.append(
            {
                "heading": scene["heading"],
                "summary": scene.get("summary") or f"What happens in scene {number}.",
                "characters": list(dict.fromkeys(speakers)),
                "change": f"After scene {number} nothing is the same.",
            }
        )
    return {
        "title": screenplay["title"],
        "logline": screenplay.get("logline", ""),
        "characters": screenplay.get("characters", []),
        "scenes": scenes,
    }


def screenplay_as_assembled(screenplay: dict[str, Any]) -> dict[str, Any]:
    """What parallel mode saves for this screenplay: each scene carries its outline summary."""
    outline = screenplay_outline(screenplay)
    result = json.loads(json.dumps(screenplay))
    for scene, planned in zip(result["scenes"], outline["scenes"], strict=True):
        scene["summary"] = planned["summary"]
    return result


def last_user_text(body: dict[str, Any]) -> str:
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content)


def first_user_text(body: dict[str, Any]) -> str:
    content = body["messages"][0]["content"]
    return content if isinstance(content, str) else "".join(block.get("text", "") for block in content)


def scene_number(body: dict[str, Any]) -> int | None:
    """The 1-based scene a request asks for (a continuation of it too), or None for any other step."""
    match = _SCENE_STEP.search(first_user_text(body))
    return int(match.group(1)) if match else None


def step_reply(body: dict[str, Any], part: str, document: dict[str, Any]) -> dict[str, Any]:
    """``document`` as a parallel-mode step reply when the request's schema asks for one, else as it is."""
    schema = ((body.get("output_config") or {}).get("format") or {}).get("schema") or {}
    if set(schema.get("properties", {})) != {"outline", "scene"}:
        return document
    return {"outline": None, "scene": None, part: document}


@dataclass
class FakeScreenwriter:
    screenplay: dict[str, Any]
    ttft: float = 0.0
    tokens_per_second: float | None = None
    chunk_chars: int = 24
    # None writes compact JSON, as structured outputs tend to; 1 is easier to read in a failing test.
    indent: int | None = 1
    # Per scene index (0-based): a different pace, and replies (faults) used before the real scene.
    scene_tokens_per_second: dict[int, float] = field(default_factory=dict)
    faults: dict[int, deque[Reply]] = field(default_factory=lambda: defaultdict(deque))
    # A scene index whose every request fails with this reply.
    always_fail: dict[int, Reply] = field(default_factory=dict)
    # Stop at the request's max_tokens like a model (the fake server cuts the text).
    cut_at_max_tokens: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_scene(self, index: int, *replies: Reply) -> None:
        with self._lock:
            self.faults[index].extend(replies)

    def __call__(self, body: dict[str, Any]) -> Reply:
        cut = _CUT.search(last_user_text(body)) if len(body["messages"]) > 1 else None
        done = int(cut.group(1)) if cut else 0
        if "Step 1: write the outline" in first_user_text(body):
            outline = screenplay_outline(self.screenplay)
            outline["scenes"] = outline["scenes"][done:]
            return self._reply(json.dumps(step_reply(body, "outline", outline), indent=self.indent))
        number = scene_number(body)
        if number is None:
            return self._reply(json.dumps(self.screenplay, indent=self.indent))
        index = number - 1
        with self._lock:
            if index in self.always_fail:
                return self.always_fail[index]
            if self.faults[index]:
                return self.faults[index].popleft()
        scene = dict(self.screenplay["scenes"][index])
        scene["elements"] = scene["elements"][done:]
        text = json.dumps(step_reply(body, "scene", scene), indent=self.indent)
        return self._reply(text, self.scene_tokens_per_second.get(index))

    def _reply(self, text: str, tokens_per_second: float | None = None) -> Reply:
        return Reply(
            text=text,
            ttft=self.ttft,
            tokens_per_second=tokens_per_second or self.tokens_per_second,
            chunk_chars=self.chunk_chars,
            cut_at_max_tokens=self.cut_at_max_tokens,
        )

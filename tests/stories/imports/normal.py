"""What a screenplay becomes after export and import, written from the list in docs/exports.md
("What Fountain and FDX cannot express"), independently of the importers' code."""

from __future__ import annotations

from typing import Any

from stories.exports.screenplay import one_line as export_line
from stories.exports.screenplay import text_lines

ZWS = "\u200b"


def _line(text: str) -> str:
    """A single-line field: cleaned as exported, invisible separators gone, whitespace collapsed."""
    return " ".join(export_line(text).replace(ZWS, "").split())


def _lines(lines: list[str]) -> str:
    cleaned = [line.replace(ZWS, "").strip() for line in lines]
    while cleaned and not cleaned[0]:
        cleaned.pop(0)
    while cleaned and not cleaned[-1]:
        cleaned.pop()
    return "\n".join(cleaned)


def _paren(text: str, *, fdx: bool) -> str:
    inner = export_line(text)
    if fdx:
        # The FDX writer drops a leading "(" and a trailing ")" each on its own.
        inner = inner.removeprefix("(").removesuffix(")").strip()
    elif inner.startswith("(") and inner.endswith(")"):
        inner = inner[1:-1].strip()
    return _line(inner)


def _speech(element: dict[str, Any], text: str, *, fdx: bool = False) -> dict[str, Any] | None:
    name = _line(element["character"]) or "UNNAMED"
    parenthetical = _paren(element.get("parenthetical", ""), fdx=fdx)
    if not text and parenthetical:
        text, parenthetical = f"({parenthetical})", ""
    if not text:
        return None
    speech = {"type": "dialogue", "character": name, "text": text}
    if parenthetical:
        speech["parenthetical"] = parenthetical
    return speech


def _fountain_elements(element: dict[str, Any]) -> list[dict[str, Any]]:
    if element["type"] == "dialogue":
        speech = _speech(element, _lines(text_lines(element["text"])))
        return [speech] if speech else []
    if element["type"] == "transition":
        text = _line(export_line(element["text"]).upper())
        return [{"type": "transition", "text": text}] if text else []
    paragraphs = [p for p in "\n".join(text_lines(element["text"])).split("\n\n")]
    actions = [_lines(p.split("\n")) for p in paragraphs if p.strip("\n")]
    return [{"type": "action", "text": text} for text in actions if text]


def _fdx_elements(element: dict[str, Any]) -> list[dict[str, Any]]:
    if element["type"] == "dialogue":
        speech = _speech(element, _lines([line for line in text_lines(element["text"]) if line]), fdx=True)
        return [speech] if speech else []
    if element["type"] == "transition":
        text = _line(element["text"])
        return [{"type": "transition", "text": text}] if text else []
    lines = [_lines([line]) for line in text_lines(element["text"])]
    return [{"type": "action", "text": line} for line in lines if line]


def fountain_normal(content: dict[str, Any]) -> dict[str, Any]:
    scenes = []
    for scene in content["scenes"]:
        heading = _line(export_line(scene["heading"]).lstrip(". ").upper()) or "SCENE"
        normal: dict[str, Any] = {"heading": heading, "elements": []}
        for element in scene["elements"]:
            normal["elements"].extend(_fountain_elements(element))
        if _line(scene.get("summary", "")):
            normal["summary"] = _line(scene["summary"])
        scenes.append(normal)
    result = _with_speakers(_line(content["title"]) or "Untitled", scenes)
    if _line(content.get("logline", "")):
        result["logline"] = _line(content["logline"])
    return result


def fdx_normal(content: dict[str, Any]) -> dict[str, Any]:
    scenes = []
    for scene in content["scenes"]:
        elements = [e for element in scene["elements"] for e in _fdx_elements(element)]
        scenes.append({"heading": _line(scene["heading"]) or "SCENE", "elements": elements})
    return _with_speakers(_line(content["title"]) or "Untitled", scenes)


def _with_speakers(title: str, scenes: list[dict[str, Any]]) -> dict[str, Any]:
    speakers = dict.fromkeys(
        e["character"] for scene in scenes for e in scene["elements"] if e["type"] == "dialogue"
    )
    return {"title": title, "characters": [{"name": name} for name in speakers], "scenes": scenes}

"""Final Draft (FDX) XML from a screenplay, built with ``xml.etree`` so that every string is escaped.

Text is cleaned first (``screenplay.line_clean``): XML 1.0 cannot carry most control characters at
all, escaped or not, and ElementTree would write them as they are.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from stories.exports.screenplay import (
    Element,
    ExportMeta,
    one_line,
    screenplay_scenes,
    text_lines,
)

# The Paragraph Type values Final Draft uses for the elements of a screenplay.
SCENE_HEADING = "Scene Heading"
ACTION = "Action"
CHARACTER = "Character"
PARENTHETICAL = "Parenthetical"
DIALOGUE = "Dialogue"
TRANSITION = "Transition"


def fdx_from_screenplay(*, content: object, meta: ExportMeta) -> bytes:
    """A complete FDX document (UTF-8 bytes) with the script and a title page."""
    root = ET.Element("FinalDraft", DocumentType="Script", Template="No", Version="5")
    body = ET.SubElement(root, "Content")
    for scene in screenplay_scenes(content):
        _paragraph(body, SCENE_HEADING, one_line(scene.heading) or "SCENE")
        for element in scene.elements:
            _element(body, element)
    _title_page(ET.SubElement(root, "TitlePage"), meta)
    ET.indent(root)
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def _element(body: ET.Element, element: Element) -> None:
    if element.kind == "dialogue":
        _paragraph(body, CHARACTER, one_line(element.character) or "UNNAMED")
        parenthetical = one_line(element.parenthetical).removeprefix("(").removesuffix(")").strip()
        if parenthetical:
            _paragraph(body, PARENTHETICAL, f"({parenthetical})")
        lines = [line for line in text_lines(element.text) if line]
        for line in lines or [""]:
            _paragraph(body, DIALOGUE, line)
    elif element.kind == "transition":
        if one_line(element.text):
            _paragraph(body, TRANSITION, one_line(element.text))
    else:
        # One Action paragraph per line: the model's line breaks are kept, its blank lines dropped.
        for line in text_lines(element.text):
            if line:
                _paragraph(body, ACTION, line)


def _title_page(title_page: ET.Element, meta: ExportMeta) -> None:
    content = ET.SubElement(title_page, "Content")
    _paragraph(content, ACTION, one_line(meta.title) or "Untitled", Alignment="Center")
    author = one_line(meta.author)
    if author:
        _paragraph(content, ACTION, "", Alignment="Center")
        _paragraph(content, ACTION, one_line(meta.credit) or "Written by", Alignment="Center")
        _paragraph(content, ACTION, author, Alignment="Center")
    if meta.draft_date:
        _paragraph(content, ACTION, "", Alignment="Left")
        _paragraph(content, ACTION, meta.draft_date.isoformat(), Alignment="Left")


def _paragraph(parent: ET.Element, kind: str, text: str, **attributes: str) -> None:
    paragraph = ET.SubElement(parent, "Paragraph", attrib={"Type": kind, **attributes})
    ET.SubElement(paragraph, "Text").text = text

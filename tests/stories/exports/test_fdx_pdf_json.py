from __future__ import annotations

import io
import json
import unicodedata
import xml.etree.ElementTree as ET
from datetime import date
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from pypdf import PdfReader

from stories.exports import ExportFormatError, ExportMeta, screenplay_export
from tests.stories.exports.screenplays import screenplays

SCREENPLAY: dict[str, Any] = {
    "title": "Rain <b>& Neon</b>",
    "characters": [{"name": "SAM", "persona": "noir-detective"}, {"name": "Vera"}],
    "scenes": [
        {
            "heading": "INT. SAM'S OFFICE - NIGHT",
            "elements": [
                {"type": "action", "text": "Rain hammers the glass.\nA neon sign <i>buzzes</i> & dies."},
                {
                    "type": "dialogue",
                    "character": "SAM",
                    "parenthetical": "(to himself)",
                    "text": "Another night.",
                },
                {"type": "dialogue", "character": "Vera", "text": "Sam?\x00\x1b Open up."},
                {"type": "transition", "text": "CUT TO:"},
            ],
        },
        {"heading": "EXT. ROOFTOP - CONTINUOUS", "elements": [{"type": "action", "text": "Wind."}]},
    ],
}
META = ExportMeta(title="Rain <b>& Neon</b>", author="Ann O'Writer", draft_date=date(2026, 11, 25))


def _paragraphs(root: ET.Element, path: str) -> list[tuple[str, str]]:
    return [(p.get("Type", ""), p.findtext("Text", "")) for p in root.findall(path)]


def test_fdx_is_xml_with_final_draft_paragraphs_and_a_title_page() -> None:
    data, content_type, extension = screenplay_export(content=SCREENPLAY, fmt="fdx", meta=META)
    assert (content_type, extension) == ("application/xml", "fdx")
    root = ET.fromstring(data)
    assert root.tag == "FinalDraft" and root.get("DocumentType") == "Script"
    assert _paragraphs(root, "./Content/Paragraph") == [
        ("Scene Heading", "INT. SAM'S OFFICE - NIGHT"),
        ("Action", "Rain hammers the glass."),
        ("Action", "A neon sign <i>buzzes</i> & dies."),
        ("Character", "SAM"),
        ("Parenthetical", "(to himself)"),
        ("Dialogue", "Another night."),
        ("Character", "Vera"),
        ("Dialogue", "Sam? Open up."),
        ("Transition", "CUT TO:"),
        ("Scene Heading", "EXT. ROOFTOP - CONTINUOUS"),
        ("Action", "Wind."),
    ]
    title_page = [text for _, text in _paragraphs(root, "./TitlePage/Content/Paragraph") if text]
    assert title_page == ["Rain <b>& Neon</b>", "Written by", "Ann O'Writer", "2026-11-25"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(screenplays())
def test_fdx_of_hostile_screenplays_parses_with_one_heading_per_scene(screenplay: dict[str, Any]) -> None:
    data, _, _ = screenplay_export(content=screenplay, fmt="fdx", meta=ExportMeta(title=screenplay["title"]))
    kinds = [kind for kind, _ in _paragraphs(ET.fromstring(data), "./Content/Paragraph")]
    assert kinds.count("Scene Heading") == len(screenplay["scenes"])
    dialogues = sum(e["type"] == "dialogue" for s in screenplay["scenes"] for e in s["elements"])
    assert kinds.count("Character") == dialogues


def test_fdx_survives_every_control_character() -> None:
    every_control = "".join(map(chr, [*range(0, 32), *range(127, 160)])) + "\ud800\ufffe\uffff"
    screenplay = {"title": "T", "scenes": [{"heading": every_control + "INT. A", "elements": []}]}
    data, _, _ = screenplay_export(content=screenplay, fmt="fdx", meta=ExportMeta(title=every_control))
    root = ET.fromstring(data)
    assert _paragraphs(root, "./Content/Paragraph") == [("Scene Heading", "INT. A")]
    assert _paragraphs(root, "./TitlePage/Content/Paragraph")[0] == ("Action", "Untitled")


def test_pdf_has_the_title_on_its_first_page_and_markup_stays_text() -> None:
    data, content_type, extension = screenplay_export(content=SCREENPLAY, fmt="pdf", meta=META)
    assert (content_type, extension) == ("application/pdf", "pdf")
    assert data.startswith(b"%PDF")
    reader = PdfReader(io.BytesIO(data))
    first_page = reader.pages[0].extract_text()
    assert "Rain <b>& Neon</b>" in first_page
    assert "Ann O'Writer" in first_page
    script = " ".join(page.extract_text() for page in reader.pages[1:])
    assert "A neon sign <i>buzzes</i> & dies." in script
    assert "INT. SAM'S OFFICE - NIGHT" in script
    assert reader.metadata is not None and reader.metadata.title == "Rain <b>& Neon</b>"


def test_pdf_of_a_hostile_screenplay_is_built() -> None:
    screenplay: dict[str, Any] = {
        "title": "<para>&nbsp;</font>",
        "scenes": [
            {
                "heading": "<br/>",
                "elements": [
                    {"type": "action", "text": "<img src='x'/> & <a href='x'>link</a> &#0; ]]> <![CDATA["},
                    {"type": "dialogue", "character": "<b>", "parenthetical": "<u>", "text": "</para>"},
                ],
            }
        ],
    }
    data, _, _ = screenplay_export(content=screenplay, fmt="pdf", meta=ExportMeta(title=screenplay["title"]))
    reader = PdfReader(io.BytesIO(data))
    assert "<para>&nbsp;</font>" in reader.pages[0].extract_text()
    assert "<img src='x'/> & <a href='x'>link</a>" in reader.pages[1].extract_text()


def test_json_export_is_the_stored_screenplay() -> None:
    data, content_type, extension = screenplay_export(content=SCREENPLAY, fmt="json", meta=META)
    assert (content_type, extension) == ("application/json", "json")
    assert json.loads(data) == SCREENPLAY


def test_unknown_format_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ExportFormatError, match="fountain, fdx, pdf, json"):
        screenplay_export(content=SCREENPLAY, fmt="docx", meta=META)


def test_pdf_prints_the_accents_of_decomposed_text() -> None:
    # "José" typed or pasted decomposed (NFD: an "e" and a combining acute, as macOS file names are):
    # Courier Prime has "é" but no combining mark, so the accent was printed as a blank.
    def decomposed(text: str) -> str:
        return unicodedata.normalize("NFD", text)

    screenplay: dict[str, Any] = {
        "title": decomposed("Café Müller"),
        "scenes": [
            {
                "heading": decomposed("INT. CAFÉ - NUIT"),
                "elements": [
                    {"type": "action", "text": decomposed("Zoë pleure à côté de José.")},
                    {"type": "dialogue", "character": decomposed("Zoë"), "text": decomposed("Señor!")},
                ],
            }
        ],
    }
    meta = ExportMeta(title=screenplay["title"], author=decomposed("Ana Núñez"))
    data, _, _ = screenplay_export(content=screenplay, fmt="pdf", meta=meta)
    reader = PdfReader(io.BytesIO(data))
    text = " ".join(page.extract_text() for page in reader.pages)
    for shown in (
        "Café Müller",
        "Ana Núñez",
        "INT. CAFÉ - NUIT",
        "Zoë pleure à côté de José.",
        "ZOË",
        "Señor!",
    ):
        assert shown in text
    assert "\x00" not in text
    assert reader.metadata is not None and reader.metadata.title == "Café Müller"


def test_pdf_metadata_keeps_a_titles_right_to_left_override_to_itself() -> None:
    # A viewer writes the PDF's title into its own window title ("<title> - Viewer"): an override left
    # open in the story's title ("\u202eevil.exe") drew the viewer's own words backwards after it.
    meta = ExportMeta(title="Night \u202eevil.exe", author="\u202eWriter")
    data, _, _ = screenplay_export(content=SCREENPLAY, fmt="pdf", meta=meta)
    reader = PdfReader(io.BytesIO(data))
    assert reader.metadata is not None
    assert reader.metadata.title == "\u2068Night \u202eevil.exe\u2069"
    assert reader.metadata.author == "\u2068\u202eWriter\u2069"

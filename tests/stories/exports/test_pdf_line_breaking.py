"""Right-to-left paragraphs are broken into lines before they are reordered (stories.exports.pdf_fonts):
the lines are those that measuring every candidate line whole gives, and the breaking measures a
candidate only when it might not fit, so a paragraph costs about its own length (a megabyte of one-letter
Hebrew words took 34 s of CPU to export when each word measured its whole line again)."""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from stories.exports import pdf_fonts
from stories.exports.pdf import _settings
from stories.exports.pdf_fonts import Coverage, coverage, font_runs, visual_lines

MAIN = "Courier Prime"
WIDTH = 432.0  # the action style's width: six inches
SIZE = 12.0


@pytest.fixture(scope="module")
def fonts() -> Coverage:
    _settings()  # registers Courier Prime
    return coverage(MAIN)


def _each_candidate_measured(text: str, fonts: Coverage) -> list[str]:
    """The breaking as it was: every candidate line measured whole."""
    lines: list[str] = []
    line = ""
    for word in re.split(r" +", text.strip(" ")):
        candidate = f"{line} {word}" if line else word
        runs = font_runs(candidate, fonts)
        if not line or pdf_fonts._runs_width(runs, main_font=MAIN, size=SIZE) <= WIDTH:
            line = candidate
        else:
            lines.append(line)
            line = word
    return [*lines, line]


WORDS = [
    "שלום", "עולם,", "מה?", "נשמע!", "(בסדר)", "\u05b0", "א", "مرحبا", "بالعالم،", "hello", "Zoë,",
    "世界", "こんにちは", "中文。", "안녕", "😀", "👍,", "Привет", "नमस्ते", "—", "...", "\u200d", "ש" * 40,
]  # fmt: skip


@pytest.mark.parametrize("seed", range(40))
def test_lines_are_those_measuring_each_candidate_gives(fonts: Coverage, seed: int) -> None:
    generator = random.Random(seed)
    pool = generator.sample(WORDS, k=generator.randint(2, 8))
    text = " ".join(generator.choice(pool) for _ in range(generator.randint(1, 300)))
    if not pdf_fonts._is_right_to_left(text):
        text = "שלום " + text
    assert pdf_fonts._broken(text, WIDTH, fonts, MAIN, SIZE) == _each_candidate_measured(text, fonts)


def test_a_long_paragraph_measures_few_candidates_whole(fonts: Coverage, monkeypatch: Any) -> None:
    measured: list[str] = []

    def font_runs_counted(text: str, fonts: Coverage) -> list[pdf_fonts.Run]:
        measured.append(text)
        return font_runs(text, fonts)

    monkeypatch.setattr(pdf_fonts, "font_runs", font_runs_counted)
    text = " ".join(["\u05b0", "א", "שלום,"] * 2000)
    lines = visual_lines(text, width=WIDTH, fonts=fonts, main_font=MAIN, size=SIZE)
    # One per line in visual order (get_display does not measure), plus those near each line's end.
    assert len(lines) > 50
    assert len(measured) <= 4 * len(lines), (len(measured), len(lines))


def test_right_to_left_text_reaches_reportlab_as_itself(monkeypatch: Any) -> None:
    # screenplain writes every character beyond ASCII as a character reference (&#1588;), which
    # reportlab's parser reads one at a time: a quarter of a Hebrew or Arabic screenplay's layout time.
    # Lines with runs in a fallback font are written as themselves; Latin ones as before.
    from reportlab.platypus.paraparser import ParaParser

    from stories.exports.pdf import pdf_from_screenplay
    from stories.exports.screenplay import ExportMeta

    references: list[str] = []
    handle_charref = ParaParser.handle_charref

    def counted(self: ParaParser, name: str) -> None:
        references.append(name)
        handle_charref(self, name)

    monkeypatch.setattr(ParaParser, "handle_charref", counted)
    speech = {"type": "dialogue", "character": "فاطمة", "text": "مرحبا بالعالم، שלום עולם & <b>"}
    content = {"scenes": [{"heading": "INT. HALL", "elements": [speech]}]}
    pdf_from_screenplay(content=content, meta=ExportMeta(title="Night"))
    assert references == []
    pdf_from_screenplay(content=_latin(), meta=ExportMeta(title="Night"))
    assert references  # é, as screenplain writes it


def _latin() -> dict[str, Any]:
    speech = {"type": "dialogue", "character": "JOSÉ", "text": "Señor, ça va?"}
    return {"scenes": [{"heading": "INT. CAFÉ", "elements": [speech]}]}

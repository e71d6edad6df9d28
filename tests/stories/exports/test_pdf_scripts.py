"""The PDF export prints every script a writer types: downloaded through the export endpoint, read back
with pypdf. Courier Prime covers Latin only; everything else used to print as blanks, extracted as NULs."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from pypdf import PdfReader
from reportlab.pdfbase.ttfonts import TTFont
from rest_framework.test import APIClient

from stories.exports.pdf_fonts import FONT_DIR
from stories.models import ScreenplayVersion, Story

# script: (character, dialogue, action, the font it is printed in)
SCRIPTS: dict[str, tuple[str, str, str, str]] = {
    "greek": ("Δημήτρης", "Καλησπέρα σας", "Ο Δημήτρης ανοίγει την πόρτα.", "NotoSansMono"),  # noqa: RUF001
    "cyrillic": ("Анна", "Добрый вечер", "Анна смотрит в окно.", "NotoSansMono"),
    "romanian": ("Țepeș", "Bună seara, Ștefan", "Țepeș își scoate pălăria.", "NotoSansMono"),
    "vietnamese": ("Nguyễn", "Xin chào thế giới", "Ánh mở cửa sổ.", "NotoSansMono"),
    "hebrew": ("דוד", "שלום עולם", "דוד פותח את הדלת", "NotoSansHebrew"),
    "arabic": ("فاطمة", "مرحبا بالعالم", "فاطمة تفتح الباب", "NotoSansArabic"),
    "devanagari": ("प्रिया", "नमस्ते दुनिया", "प्रिया दरवाजा खोलती है", "NotoSansDevanagari"),
    "thai": ("สมชาย", "สวัสดีชาวโลก", "สมชายเปิดประตู", "NotoSansThai"),
    "armenian": ("Անի", "Բարև ձեզ", "Անին բացում է դուռը։", "NotoSansArmenian"),  # noqa: RUF001
    "georgian": ("ნინო", "გამარჯობა", "ნინო კარს აღებს", "NotoSansGeorgian"),
    "symbols": ("Max", "Done ✓", "★ ✓ ✗ on the board", "NotoSansSymbols2"),
    "emoji": ("Zoë 🎬", "I love it 😀👍", "Her phone buzzes 📱 ❤️", "NotoEmoji"),
    "chinese": ("李梅", "你好，世界。", "李梅打开门。", "STSong-Light"),  # noqa: RUF001 (Chinese punctuation)
    "japanese": ("さくら", "こんにちは、山田さん。", "さくらは窓を開ける。", "HeiseiMin-W3"),
    "korean": ("김민준", "안녕하세요 세계", "김민준이 문을 연다", "HYSMyeongJo-Medium"),
}


def _screenplay(scripts: list[str]) -> dict[str, Any]:
    elements: list[dict[str, str]] = []
    for script in scripts:
        character, dialogue, action, _ = SCRIPTS[script]
        elements.append({"type": "action", "text": action})
        elements.append({"type": "dialogue", "character": character, "text": dialogue})
    return {"title": "Night", "scenes": [{"heading": "INT. HALL - NIGHT", "elements": elements}]}


def _pdf(writer: Any, content: dict[str, Any], title: str = "Night") -> PdfReader:
    story = Story.objects.create(owner=writer, title=title, plot="p")
    ScreenplayVersion.objects.create(story=story, number=1, content=content)
    client = APIClient()
    client.force_authenticate(writer)
    response = client.get(f"/api/stories/{story.pk}/versions/1/export/?format=pdf")
    assert response.status_code == 200
    return PdfReader(io.BytesIO(response.content))


def _text(reader: PdfReader) -> str:
    return "\n".join(page.extract_text() for page in reader.pages)


def _fonts(reader: PdfReader) -> set[str]:
    # reportlab names an embedded subset "AAAAAA+NotoSansMono-Regular"; the CJK fonts are not embedded.
    names = set()
    for page in reader.pages:
        resources: Any = page["/Resources"]
        for font in resources["/Font"].values():
            names.add(str(font.get_object()["/BaseFont"]).lstrip("/").split("+")[-1].removesuffix("-Regular"))
    return names


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_pdf_prints_each_script_in_a_font_that_has_it(writer: Any, script: str) -> None:
    character, dialogue, action, font = SCRIPTS[script]
    reader = _pdf(writer, _screenplay([script]))
    text = _text(reader)
    for shown in (character.upper(), dialogue, action):
        assert shown in text
    assert "\x00" not in text
    assert {"CourierPrime", font} <= _fonts(reader)


def test_pdf_of_a_screenplay_in_every_script_has_every_string(writer: Any) -> None:
    reader = _pdf(writer, _screenplay(list(SCRIPTS)), title="Δημήτρης και Анна")
    text = _text(reader)
    assert "Δημήτρης και Анна" in text  # the title page
    for character, dialogue, action, _ in SCRIPTS.values():
        for shown in (character.upper(), dialogue, action):
            assert shown in text
    assert "\x00" not in text
    assert {font for *_, font in SCRIPTS.values()} | {"CourierPrime"} <= _fonts(reader)


def test_pdf_of_a_latin_screenplay_embeds_courier_prime_only(writer: Any) -> None:
    content = {
        "title": "Night",
        "scenes": [
            {
                "heading": "INT. CAFÉ - NIGHT",
                "elements": [{"type": "dialogue", "character": "José", "text": "Señor, ça va?"}],
            }
        ],
    }
    reader = _pdf(writer, content)
    assert "Señor, ça va?" in _text(reader)
    # Helvetica is reportlab's default font, named in every page's resources and never drawn with.
    assert _fonts(reader) - {"Helvetica"} == {"CourierPrime"}


def test_pdf_wraps_a_long_hebrew_speech_in_reading_order(writer: Any) -> None:
    # Hebrew is drawn in visual order. Reordered before the lines were broken, a speech of several lines
    # would start on its last line; each line is reordered on its own.
    speech_text = "אחת שתיים שלוש ארבע חמש שש שבע שמונה תשע עשר אחת עשרה שתים עשרה שלוש עשרה"
    words = speech_text.split(" ")
    content = {
        "title": "Night",
        "scenes": [
            {
                "heading": "INT. HALL - NIGHT",
                "elements": [{"type": "dialogue", "character": "דוד", "text": speech_text}],
            }
        ],
    }
    text = _text(_pdf(writer, content))
    speech = text[text.index("דוד") + len("דוד") :].split()
    assert len(text.split("דוד")[1].strip().splitlines()) > 1  # it does wrap
    assert speech[: len(words)] == words


def _drawn(reader: PdfReader, font: str) -> list[float]:
    """The advance width (from the font's /Widths) of each glyph the pages draw in ``font``, in order."""
    drawn: list[float] = []
    for page in reader.pages:
        resources: Any = page["/Resources"]
        fonts: Any = resources["/Font"]
        current: list[Any] = [None]

        def visit(
            operator: bytes, operands: list[Any], *_: Any, fonts: Any = fonts, current: Any = current
        ) -> None:
            if operator == b"Tf":
                current[0] = fonts[operands[0]].get_object()
            strings = operands[0] if operator == b"TJ" else operands[:1] if operator == b"Tj" else []
            pdf_font = current[0]
            if pdf_font is None or not str(pdf_font["/BaseFont"]).split("+")[-1].startswith(font):
                return
            for string in strings:
                if isinstance(string, (int, float)):
                    continue
                codes = (
                    string.get_original_bytes() if hasattr(string, "get_original_bytes") else bytes(string)
                )
                first = pdf_font["/FirstChar"]
                drawn.extend(float(pdf_font["/Widths"][code - first]) for code in codes)

        page.extract_text(visitor_operand_before=visit)
    return drawn


def _widths(font: str, chars: str) -> list[float]:
    face = TTFont(font, str(FONT_DIR / f"{font}-Regular.ttf")).face
    return [float(round(face.charWidths[ord(char)])) for char in chars]


def _one_speech(name: str, speech: str) -> dict[str, Any]:
    elements = [{"type": "dialogue", "character": name, "text": speech}]
    return {"title": "Night", "scenes": [{"heading": "INT. HALL - NIGHT", "elements": elements}]}


def test_pdf_joins_arabic_letters(writer: Any) -> None:
    # فاطمة is drawn in its letters' contextual forms, each the glyph of its Arabic presentation form
    # (initial feh, final alef, initial tah, medial meem, final teh marbuta), not in isolated letters.
    reader = _pdf(writer, _one_speech("فاطمة", "فاطمة فاطمة"))
    assert "فاطمة فاطمة" in _text(reader)
    joined = _widths("NotoSansArabic", "\ufed3\ufe8e\ufec3\ufee4\ufe94")
    isolated = _widths("NotoSansArabic", "فاطمة")
    assert sorted(joined) != sorted(isolated)
    space = _widths("NotoSansArabic", " ")
    assert sorted(round(width) for width in _drawn(reader, "NotoSansArabic")) == sorted(joined * 3 + space)


def test_pdf_draws_devanagari_conjuncts_and_vowel_signs(writer: Any) -> None:
    # प्रि is a conjunct (प्र) with its vowel sign drawn before it, स्ते a half form: fewer glyphs than
    # characters (one glyph a character before), and the text still reads as typed.
    speech = "प्रिया नमस्ते"
    reader = _pdf(writer, _one_speech("RAJ", speech))
    assert speech in _text(reader)
    assert len(_drawn(reader, "NotoSansDevanagari")) < len(speech.replace(" ", ""))


def test_pdf_draws_an_emoji_sequence_as_one_glyph(writer: Any) -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # man ZWJ woman ZWJ girl
    reader = _pdf(writer, _one_speech("MAX", f"Look {family}"))
    assert f"Look {family}" in _text(reader)
    assert len(_drawn(reader, "NotoEmoji")) == 1


def _line_starts(reader: PdfReader, page: int = 1) -> dict[float, tuple[float, str]]:
    """Each line of a page: its height on the page, where its text starts and the text drawn on it."""
    lines: dict[float, tuple[float, str]] = {}

    def visit(text: str, cm: list[float], tm: list[float], *_: Any) -> None:
        if text.strip():
            x, y = round(cm[4] + tm[4] * cm[0], 1), round(cm[5] + tm[5] * cm[3], 1)
            start, drawn = lines.get(y, (x, ""))
            lines[y] = (min(start, x), drawn + text)

    reader.pages[page].extract_text(visitor_text=visit)
    return lines


def _start_of(lines: dict[float, tuple[float, str]], shown: str) -> float:
    return next(start for start, drawn in lines.values() if shown in drawn)


def test_pdf_aligns_right_to_left_speech_and_action_to_the_right(writer: Any) -> None:
    # A right-to-left paragraph is laid out as a right-to-left screenplay lays it out: its element's
    # indents mirrored, its lines aligned right (action ends at the frame's right edge, a speech at the
    # right edge of the mirrored dialogue column); left-to-right ones stay where they were.
    elements = [
        {"type": "action", "text": "Night falls."},
        {"type": "action", "text": "דוד פותח את הדלת"},
        {"type": "dialogue", "character": "MAX", "text": "Hello there."},
        {"type": "dialogue", "character": "דוד", "text": "שלום"},
    ]
    content = {"title": "Night", "scenes": [{"heading": "INT. HALL - NIGHT", "elements": elements}]}
    lines = _line_starts(_pdf(writer, content))
    frame_left, frame_width, dialogue_indent = 108.0, 439.2, 64.8  # screenplain: 1.5 in, 61 and 9 chars
    assert _start_of(lines, "Night falls.") == frame_left
    assert _start_of(lines, "Hello there.") == frame_left + dialogue_indent
    action_start, speech_start = _start_of(lines, "ד"), _start_of(lines, "ש")
    # Each ends at its right edge: it starts there less its own width, far right of the left edge.
    assert frame_left + frame_width - 150 < action_start < frame_left + frame_width - 60
    assert (
        frame_left + frame_width - dialogue_indent - 40
        < speech_start
        < frame_left + frame_width - dialogue_indent - 15
    )


@pytest.mark.parametrize("parenthetical", ["بهدوء", "בשקט"])
def test_pdf_draws_a_right_to_left_parentheticals_brackets_facing_its_words(
    writer: Any, parenthetical: str
) -> None:
    # Drawn left to right, (بهدوء) is "(" then the word reversed then ")": each bracket opens towards
    # the word. Reordered without mirroring, the line started with ")" and ended with "(".
    content = _one_speech("فاطمة", "نعم")
    content["scenes"][0]["elements"][0]["parenthetical"] = parenthetical
    reader = _pdf(writer, content)
    contents = reader.pages[1].get_contents()
    assert contents is not None
    stream = contents.get_data().decode("latin-1")
    brackets = re.findall(r"\((\\[()])\) Tj", stream)
    assert brackets == ["\\(", "\\)"]
    assert f"({parenthetical})" in _text(reader)  # it was extracted as ")בשקט(" too


def test_pdf_shapes_on_once_a_process_has_handed_out_every_glyph_code(writer: Any, monkeypatch: Any) -> None:
    # A long-lived process fed many distinct clusters runs out of the private-use codes that make a
    # shaped glyph extractable as its characters: the export is still made and still shaped (it was a
    # 500: chr() past U+10FFFF), its conjunct glyphs extracted as their own characters.
    from stories.exports import pdf_fonts

    pdf_fonts._shaped_run.cache_clear()
    monkeypatch.setattr(pdf_fonts, "_FIRST_GLYPH_CODE", 0x110000 - len(pdf_fonts._GLYPH_CODES))
    speech = "ज्ञानेश्वरी श्र्वह्म"
    reader = _pdf(writer, _one_speech("RAJ", speech))
    assert len(_drawn(reader, "NotoSansDevanagari")) < len(speech.replace(" ", ""))

"""The PDF export prints every script a writer types: downloaded through the export endpoint, read back
with pypdf. Courier Prime covers Latin only; everything else used to print as blanks, extracted as NULs."""

from __future__ import annotations

import io
from typing import Any

import pytest
from pypdf import PdfReader
from rest_framework.test import APIClient

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

"""Fonts for the PDF export: Courier Prime, and a fallback for each character it has no glyph for.

screenplain's styles name one font, Courier Prime, which covers Latin only: Greek, Cyrillic, Hebrew,
Arabic, Devanagari, Thai, CJK, Hangul, emoji, Romanian's ț and Vietnamese's stacked accents printed as
blanks and were extracted as NUL characters. Each run of characters Courier Prime lacks is now printed
in the first fallback whose cmap has them, wrapped in reportlab's ``<font name=...>`` tag:

- Chinese, Japanese and Korean in Adobe's standard CJK fonts (reportlab's ``UnicodeCIDFont``): nothing
  is embedded, PDF viewers supply them, and their encodings (``UniGB-UCS2-H`` ...) are Unicode, so the
  text is extracted as itself. Kana go to the Japanese font and Hangul to the Korean one; Han
  characters to the Japanese font in a string with kana, the Korean one in a string with Hangul, the
  Chinese one otherwise (the same character is drawn differently in each country's tradition).
- Everything else in the OFL fonts shipped in ``stories/exports/fonts/`` (its README says which and
  from where), tried in order: Noto Sans Mono first, monospaced like Courier Prime.

Right-to-left text (Hebrew, Arabic) is put in visual order line by line (``visual_lines``), as PDF text
is drawn left to right; a PDF reader (pypdf too) extracts it back in reading order.

Runs in the fonts of scripts that need OpenType shaping (``SHAPED_FONTS``: Arabic's joined letters,
Devanagari's conjuncts and vowel signs, Hebrew's points, Thai's marks, emoji sequences) are shaped by
reportlab with HarfBuzz (uharfbuzz), in paragraphs whose style turns ``shaping`` on (``stories/exports/
pdf.py`` does for the lines that have such runs, and only those: Latin is laid out as before).
``shape_frag_word`` is reportlab's ``shapeFragWord`` applied to each run of one font of a word on its
own (reportlab shapes a whole word with its first run's font) and to a right-to-left run in its logical
order (the line is in visual order); it also keeps the text a PDF reader extracts: each glyph drawn
maps back (ToUnicode) to the characters it was shaped from, not to the presentation form or private
code point that names the glyph.
"""

from __future__ import annotations

import functools
import math
import re
import threading
import unicodedata
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

from bidi import get_display
from bidi.mirror import MIRRORED
from reportlab.lib.abag import ABag
from reportlab.pdfbase import pdfmetrics, ttfonts
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.ttfonts import ShapedStr, TTFont
from reportlab.platypus import paragraph

FONT_DIR = Path(__file__).with_name("fonts")

# Tried in this order for a character the main font lacks (after the CJK fonts below).
TRUETYPE_FALLBACKS = (
    ("NotoSansMono", "NotoSansMono-Regular.ttf"),
    ("NotoSansHebrew", "NotoSansHebrew-Regular.ttf"),
    ("NotoSansArabic", "NotoSansArabic-Regular.ttf"),
    ("NotoSansDevanagari", "NotoSansDevanagari-Regular.ttf"),
    ("NotoSansThai", "NotoSansThai-Regular.ttf"),
    ("NotoSansArmenian", "NotoSansArmenian-Regular.ttf"),
    ("NotoSansGeorgian", "NotoSansGeorgian-Regular.ttf"),
    ("NotoEmoji", "NotoEmoji-Regular.ttf"),
    ("NotoSansSymbols2", "NotoSansSymbols2-Regular.ttf"),
)
# The fallbacks whose runs are shaped: their scripts join, reorder or stack glyphs (or, for emoji, make one
# glyph of a sequence). The others draw one glyph a character, as before.
SHAPED_FONTS = frozenset(
    {"NotoSansHebrew", "NotoSansArabic", "NotoSansDevanagari", "NotoSansThai", "NotoEmoji"}
)
CJK_CHINESE, CJK_JAPANESE, CJK_KOREAN = "STSong-Light", "HeiseiMin-W3", "HYSMyeongJo-Medium"

_KANA = re.compile("[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
_HANGUL = re.compile("[\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\uac00-\ud7ff\uffa0-\uffdc]")
# Han ideographs and the punctuation, symbols and full-width forms CJK text shares. Only the Basic
# Multilingual Plane: the CID fonts' UCS-2 encodings cannot name a character beyond it.
_HAN = re.compile(
    "[\u2e80-\u2fdf\u3000-\u303f\u3190-\u31ef\u3200-\u33ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef]"
)
_HAN_FONT = "han"  # a placeholder in runs until the string's CJK font is known
_RIGHT_TO_LEFT = frozenset({"R", "AL", "RLE", "RLO", "RLI"})

Run = tuple[str | None, str]  # (fallback font name, or None for the main font; text)


@dataclass(frozen=True)
class Coverage:
    """The characters the main font has a glyph for, and each TrueType fallback's, in order."""

    main: frozenset[str]
    fallbacks: tuple[tuple[str, frozenset[str]], ...]


def _cmap(font_name: str) -> frozenset[str]:
    face = pdfmetrics.getFont(font_name).face
    return frozenset(chr(code) for code, glyph in face.charToGlyph.items() if glyph)


@functools.cache
def coverage(main_font: str) -> Coverage:
    """Registers the fallback fonts with reportlab, once per process; ``main_font`` is registered."""
    # reportlab's own writes an emoji's code point as five hex digits, which readers reject; the
    # replacement writes the same map for every character of the Basic Multilingual Plane.
    ttfonts.makeToUnicodeCMap = _to_unicode_cmap
    # Paragraphs with shaping on shape each word with this (``shape_frag_word``); only ours turn it on.
    paragraph.shapeFragWord = shape_frag_word
    for name, filename in TRUETYPE_FALLBACKS:
        pdfmetrics.registerFont(TTFont(name, str(FONT_DIR / filename), shapable=name in SHAPED_FONTS))
    for name in (CJK_CHINESE, CJK_JAPANESE, CJK_KOREAN):
        pdfmetrics.registerFont(UnicodeCIDFont(name))
    return Coverage(
        main=_cmap(main_font),
        fallbacks=tuple((name, _cmap(name)) for name, _ in TRUETYPE_FALLBACKS),
    )


def font_runs(text: str, fonts: Coverage) -> list[Run]:
    """``text`` cut into runs of one font each: None for the main font, else a fallback's name.

    A character no font has stays in the main font (it prints as a blank there, as before)."""
    if fonts.main.issuperset(text):  # Latin text, the common case: one run, at C speed
        return [(None, text)] if text else []
    runs = [(font, "".join(chars)) for font, chars in groupby(text, key=lambda char: _font_for(char, fonts))]
    if any(font == _HAN_FONT for font, _ in runs):
        han = _han_font(text)
        runs = [(han if font == _HAN_FONT else font, chars) for font, chars in runs]
    return _joined(runs, fonts)


def _joined(runs: list[Run], fonts: Coverage) -> list[Run]:
    """Spaces, punctuation and joiners between two runs of one fallback, in that fallback when it has them.

    "שלום עולם" is then one run drawn with one text operator, which a PDF reader (pypdf too) extracts
    right to left as a whole; cut at the space by a change of font, its words came out swapped."""
    chars = dict(fonts.fallbacks)
    joined: list[Run] = []
    for index, (font, text) in enumerate(runs):
        before, after = (
            joined[-1][0] if joined else None,
            runs[index + 1][0] if index + 1 < len(runs) else None,
        )
        if _truetype(font, chars) and before and before == after and _neutral(text, chars.get(before)):
            font = before
        if joined and joined[-1][0] == font:
            joined[-1] = (font, joined[-1][1] + text)
        else:
            joined.append((font, text))
    return joined


def _truetype(font: str | None, chars: dict[str, frozenset[str]]) -> bool:
    """Whether ``font`` is the main font or a TrueType fallback (not a CJK font)."""
    return font is None or font in chars


def _neutral(text: str, chars: frozenset[str] | None) -> bool:
    return chars is not None and chars.issuperset(text) and all(_joinable(char) for char in text)


def _joinable(char: str) -> bool:
    """Spaces, punctuation and format characters such as the joiners (ZWJ, ZWNJ), which shaping reads
    in their run: an emoji sequence (a family, 👨 ZWJ 👩 ZWJ 👧) is one glyph only when shaped whole."""
    category = unicodedata.category(char)
    return category[0] in "ZP" or category == "Cf"


def _han_font(text: str) -> str:
    if _KANA.search(text):
        return CJK_JAPANESE
    if _HANGUL.search(text):
        return CJK_KOREAN
    return CJK_CHINESE


@functools.lru_cache(maxsize=4096)
def _font_for(char: str, fonts: Coverage) -> str | None:
    if char in fonts.main:
        return None
    if _KANA.match(char):
        return CJK_JAPANESE
    if _HANGUL.match(char):
        return CJK_KOREAN
    if _HAN.match(char):
        return _HAN_FONT  # which CJK font depends on the rest of the string
    return next((name for name, chars in fonts.fallbacks if char in chars), None)


def needs_shaping(runs: list[Run]) -> bool:
    """Whether a line of these runs is to be laid out with shaping on."""
    return any(font in SHAPED_FONTS for font, _ in runs)


def right_to_left(text: str) -> bool:
    """Whether ``text`` is a right-to-left paragraph: its first strong character is."""
    return _is_right_to_left(text) and _first_strong_is_right_to_left(text)


def shape_frag_word(word: list) -> list:
    """reportlab's ``shapeFragWord`` for a word of a line in visual order, run by run.

    A word (``[width, (frag, text), ...]``, as reportlab's paragraph makes them) is cut into runs of one
    font; a run in a font of ``SHAPED_FONTS`` is shaped on its own (``_shaped_run``), and the others are
    kept as they are."""
    if isinstance(word, ttfonts.ShapedFragWord) or len(word) < 2:
        return word
    pieces: list = []
    width = 0.0
    shaped = False
    for font_name, group in groupby(word[1:], key=lambda piece: getattr(piece[0], "fontName", None)):
        run = list(group)
        frag = run[0][0]
        if font_name not in SHAPED_FONTS or any(
            hasattr(each, "cbDefn") or each.fontSize != frag.fontSize for each, _ in run
        ):
            pieces += run
            width += sum(pdfmetrics.stringWidth(text, each.fontName, each.fontSize) for each, text in run)
            continue
        run_width, glyphs = _shaped_run(font_name, frag.fontSize, "".join(text for _, text in run))
        pieces.append((frag, glyphs))
        width += run_width
        shaped = True
    if not shaped:
        return word
    return ttfonts.makeShapedFragWord(word)([width, *pieces])


@functools.lru_cache(maxsize=16384)
def _shaped_run(font_name: str, size: float, text: str) -> tuple[float, ShapedStr]:
    """A run of one font, as drawn in a line in visual order: shaped by reportlab's ``shapeFragWord``
    (HarfBuzz), a right-to-left run from its logical order (``visual_lines`` reversed it; HarfBuzz puts
    the glyphs back in visual order); and its width. A screenplay repeats its words, so each is shaped
    once."""
    if _first_strong_is_right_to_left(text):
        text = text[::-1]
    frag = ABag(fontName=font_name, fontSize=size)
    # HarfBuzz's default features for the script (reportlab's default adds discretionary ligatures,
    # which an Arabic font uses for forms a writer did not ask for).
    result = ttfonts.shapeFragWord([0, (frag, text)], features={}, force=True)
    pieces = _extractable(result[1:], text, font_name)
    glyphs = "".join(glyph for _, glyph in pieces)
    data = [item for _, glyph in pieces for item in getattr(glyph, "__shapeData__", ())]
    return result[0], ShapedStr(glyphs, shapeData=data)


# Code points standing for a glyph drawn for some characters (a ligature, a conjunct, a glyph of a
# cluster), beyond any that text or the fonts use (the exports drop private-use planes from text), and
# the characters each stands for in the ToUnicode map (``_to_unicode_cmap``).
_GLYPH_CODES: dict[tuple[str, int, str], int] = {}
_GLYPH_TEXT: dict[int, str] = {}
_FIRST_GLYPH_CODE = 0x100000
_LAST_GLYPH_CODE = 0x10FFFD  # the last of plane 16's private-use code points
# Exports may be built in several threads at once: a code is handed out to one key only.
_GLYPH_CODES_LOCK = threading.Lock()


def _glyph_code(font_name: str, glyph: int, text: str, width: float) -> int | None:
    """The code standing for ``glyph`` drawn for ``text``; None once this process has handed out all of
    them (a long-lived process fed many distinct clusters): the glyph is then drawn under its own code,
    and a reader extracts its own character for it."""
    key = (font_name, glyph, text)
    code = _GLYPH_CODES.get(key)
    if code is not None:
        return code
    with _GLYPH_CODES_LOCK:
        code = _GLYPH_CODES.get(key)
        if code is None:
            code = _FIRST_GLYPH_CODE + len(_GLYPH_CODES)
            if code > _LAST_GLYPH_CODE:
                return None
            face = pdfmetrics.getFont(font_name).face
            face.charToGlyph[code] = glyph
            face.charWidths[code] = width
            _GLYPH_TEXT[code] = text
            _GLYPH_CODES[key] = code
    return code


def _extracted(char: str) -> str:
    """The text a PDF reader extracts for ``char`` drawn (the ToUnicode map's)."""
    code = ord(char)
    if code in _GLYPH_TEXT:
        return _GLYPH_TEXT[code]
    if 0xFB1D <= code <= 0xFDFF or 0xFE70 <= code <= 0xFEFF:  # presentation forms: their letters
        return unicodedata.normalize("NFKC", char)
    return char


def _extractable(pieces: list, text: str, font_name: str) -> list:
    """``pieces`` (shaped from ``text``) with each glyph drawn under a code whose ToUnicode text is the
    characters it was shaped from: those of its cluster, in reading order, for a cluster's glyphs."""
    glyphs = [
        (index, position, char, data)
        for index, (_, shaped) in enumerate(pieces)
        for position, (char, data) in enumerate(
            zip(shaped, getattr(shaped, "__shapeData__", ()), strict=False)
        )
    ]
    if len(glyphs) != sum(len(shaped) for _, shaped in pieces):
        return pieces
    starts = sorted({data.cluster for *_, data in glyphs})
    ends = dict(zip(starts, [*starts[1:], len(text)], strict=False))
    right_to_left = len(glyphs) > 1 and glyphs[0][3].cluster > glyphs[-1][3].cluster
    chars = [list(shaped) for _, shaped in pieces]
    face = pdfmetrics.getFont(font_name).face
    for cluster, members in groupby(glyphs, key=lambda glyph: glyph[3].cluster):
        ordered = list(members)
        if right_to_left:  # a reader reverses a right-to-left run's glyphs, so they read from the last
            ordered.reverse()
        wanted = text[cluster : ends[cluster]]
        if "".join(_extracted(char) for *_, char, _ in ordered) == wanted:
            continue
        # The first glyph stands for all the characters but one for each glyph after it.
        parts = [wanted[: max(len(wanted) - len(ordered) + 1, 0)], *wanted[len(wanted) - len(ordered) + 1 :]]
        parts += [""] * (len(ordered) - len(parts))
        for (index, position, char, _), part in zip(ordered, parts, strict=False):
            glyph = face.charToGlyph[ord(char)]
            code = _glyph_code(font_name, glyph, part, face.charWidths[ord(char)])
            if code is not None:
                chars[index][position] = chr(code)
    return [
        (frag, ShapedStr("".join(chars[index]), shapeData=shaped.__shapeData__) if shaped else shaped)
        for index, (frag, shaped) in enumerate(pieces)
    ]


def _runs_width(runs: list[Run], *, main_font: str, size: float) -> float:
    return sum(pdfmetrics.stringWidth(text, font or main_font, size) for font, text in runs)


def _is_right_to_left(text: str) -> bool:
    return any(unicodedata.bidirectional(char) in _RIGHT_TO_LEFT for char in text)


def visual_lines(text: str, *, width: float, fonts: Coverage, main_font: str, size: float) -> list[str]:
    """``text`` broken into lines that fit ``width`` (as reportlab would: at spaces, greedily), each in
    visual order: reordering before reportlab breaks the lines would put a wrapped paragraph's last
    words on its first line. Text without right-to-left characters is returned whole."""
    if fonts.main.issuperset(text) or not _is_right_to_left(
        text
    ):  # Courier Prime has no right-to-left letter
        return [text]
    base = "R" if _first_strong_is_right_to_left(text) else "L"
    lines = [text] if math.isinf(width) else _broken(text, width, fonts, main_font, size)
    return [_display(line, base) for line in lines]


# Invisible characters of the bidi class BN, which take the level of the character beside them.
_BEFORE, _AFTER = "\u2060", "\u2061"  # WORD JOINER, FUNCTION APPLICATION


def _display(line: str, base: str) -> str:
    """``line`` in visual order, each bracket (any mirrored character) that is right-to-left there
    mirrored, as the bidi algorithm's rule L4 asks: python-bidi 0.6 reorders without mirroring, so
    "(بهدوء)" was drawn ")ءودهب(", each bracket facing away from its words.

    Which ones are right-to-left is read from the reordering itself: each is put between two invisible
    characters, which are reordered with it (the order of everything else is unchanged), and one that
    comes out after its second, or before its first, was in a right-to-left run (at the end of a line one
    of the two may be moved to the paragraph's end, rule L1, so either tells)."""
    if not any(char in MIRRORED for char in line) or _BEFORE in line or _AFTER in line:
        return get_display(line, base_dir=base)
    marked = "".join(f"{_BEFORE}{char}{_AFTER}" if char in MIRRORED else char for char in line)
    shown = f" {get_display(marked, base_dir=base)} "
    return "".join(
        MIRRORED[char]
        if char in MIRRORED and (shown[index - 1] == _AFTER or shown[index + 1] == _BEFORE)
        else char
        for index, char in enumerate(shown[1:-1], start=1)
        if char not in (_BEFORE, _AFTER)
    )


def _first_strong_is_right_to_left(text: str) -> bool:
    for char in text:
        direction = unicodedata.bidirectional(char)
        if direction in ("L", "R", "AL"):
            return direction != "L"
    return False


def _broken(text: str, width: float, fonts: Coverage, main_font: str, size: float) -> list[str]:
    """Greedy breaking at spaces, each candidate line measured as it would be drawn (``font_runs``).

    Measuring every candidate whole cost the line's length for each word: a megabyte of one-letter
    Hebrew words took 34 s of CPU to export. A candidate is now measured only when it might not fit:
    its width is at most the sum of its characters' widest possible drawings (``_width_at_most``), kept
    as the line grows, and a candidate under the width by that bound fits whatever fonts it is drawn
    in. So the lines are the ones measuring each candidate gives, and most words cost their own length.
    """
    lines: list[str] = []
    line, bound = "", 0.0
    # The fonts this paragraph's characters are drawn in: a space or a comma goes to a fallback only
    # between two runs of it (``_joined``), so only to one of these.
    present = frozenset(_font_for(char, fonts) for char in set(text))
    space = _width_at_most(" ", fonts, main_font, size, present)
    for word in re.split(r" +", text.strip(" ")):
        word_bound = sum(_width_at_most(char, fonts, main_font, size, present) for char in word)
        if not line:
            line, bound = word, word_bound
            continue
        candidate, candidate_bound = f"{line} {word}", bound + space + word_bound
        # The margin covers the float rounding of two sums of the same widths taken in another order.
        if candidate_bound + 1e-6 <= width:
            line, bound = candidate, candidate_bound
        elif (measured := _runs_width(font_runs(candidate, fonts), main_font=main_font, size=size)) <= width:
            line, bound = candidate, candidate_bound
            # Measured, the line bounds the next candidates more closely: what may still change in its
            # drawing is its end, spaces or punctuation that a following run of a fallback takes in
            # (``_joined``); and, in a paragraph with Han characters, every one of them (their font
            # depends on the whole line), so there the sum of the widest drawings stays.
            if _HAN_FONT not in present:
                bound = min(
                    candidate_bound, measured + _end_at_most(candidate, fonts, main_font, size, present)
                )
        else:
            lines.append(line)
            line, bound = word, word_bound
    return [*lines, line]


def _end_at_most(
    line: str, fonts: Coverage, main_font: str, size: float, present: frozenset[str | None]
) -> float:
    """The widest the spaces, punctuation and joiners of the main font or a TrueType fallback ending
    ``line`` can be drawn."""
    end = 0.0
    truetype = dict(fonts.fallbacks)
    for char in reversed(line):
        if not _truetype(_font_for(char, fonts), truetype) or not _joinable(char):
            break
        end += _width_at_most(char, fonts, main_font, size, present)
    return end


@functools.lru_cache(maxsize=4096)
def _width_at_most(
    char: str, fonts: Coverage, main_font: str, size: float, present: frozenset[str | None]
) -> float:
    """The widest ``char`` can be drawn in a line (widths add up character by character in reportlab's
    TrueType and CID fonts): in its own font (``_font_for``); a Han character in any of the CJK fonts
    (which one depends on the rest of the line); a space, punctuation or joiner of the main font or a
    TrueType fallback also in a fallback of the paragraph's (``present``) that has it (``_joined`` puts it
    there between two runs of that fallback)."""
    font = _font_for(char, fonts)
    candidates = [CJK_CHINESE, CJK_JAPANESE, CJK_KOREAN] if font == _HAN_FONT else [font or main_font]
    if _truetype(font, dict(fonts.fallbacks)) and _joinable(char):
        candidates += [name for name, chars in fonts.fallbacks if name in present and char in chars]
    return max(pdfmetrics.stringWidth(char, name, size) for name in candidates)


def _to_unicode_cmap(fontname: str, subset: list[int]) -> str:
    """reportlab's ``makeToUnicodeCMap`` with each destination in UTF-16BE, as PDF 1.7 section 9.10.3
    asks: reportlab 5.1 writes a code point beyond U+FFFF (an emoji) as five hex digits, which pypdf
    rejects ("Odd-length string"), so the emoji were missing from the extracted text."""
    mappings = [
        f"<{index:02X}> <{_extracted(chr(code)).encode('utf-16-be').hex().upper()}>"
        for index, code in enumerate(subset)
    ]
    return "\n".join(
        [
            "/CIDInit /ProcSet findresource begin",
            "12 dict begin",
            "begincmap",
            "/CIDSystemInfo",
            f"<< /Registry ({fontname})",
            f"/Ordering ({fontname})",
            "/Supplement 0",
            ">> def",
            f"/CMapName /{fontname} def",
            "/CMapType 2 def",
            "1 begincodespacerange",
            f"<00> <{len(subset) - 1:02X}>",
            "endcodespacerange",
            f"{len(subset)} beginbfchar",
            *mappings,
            "endbfchar",
            "endcmap",
            "CMapName currentdict /CMap defineresource pop",
            "end",
            "end",
        ]
    )

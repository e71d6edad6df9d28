"""A screenplay-formatted PDF, laid out by screenplain's reportlab styles.

The screenplay is turned straight into screenplain's own model (``screenplain.types``) with plain,
unstyled strings, never through Fountain text: nothing the model wrote is read as Fountain syntax.
screenplain renders each string with ``RichString.to_html``, which escapes ``& < >`` before reportlab's
``Paragraph`` parses its mini-markup, so no model text is read as markup either. The title page is
ours, built the same way.

Every string is composed (NFC) first: Courier Prime has the precomposed accented letters (é, ü, ñ) but
no combining marks, so text typed or pasted decomposed (NFD: macOS file names, some editors) lost its
accents: "José" was printed "Jose" with a blank after it, and extracted with a NUL.

Characters Courier Prime has no glyph for at all (Greek, Cyrillic, Hebrew, Arabic, CJK, emoji ...) are
printed in a fallback font, right-to-left text in visual order (``stories/exports/pdf_fonts.py``). A
paragraph with runs of a script that needs shaping (Arabic, Devanagari ...) is laid out by a copy of
its style with reportlab's ``shaping`` on; the others by screenplain's styles, as before.
"""

from __future__ import annotations

import functools
import html
import io
import math
import re
import unicodedata

from reportlab import platypus
from reportlab.lib.enums import TA_CENTER, TA_LEFT, TA_RIGHT
from reportlab.lib.styles import ParagraphStyle
from reportlab.platypus import Flowable, NextPageTemplate, Paragraph, Spacer
from screenplain import types
from screenplain.export import pdf as screenplain_pdf
from screenplain.richstring import RichString, Segment

from stories.exports.pdf_fonts import (
    Coverage,
    Run,
    coverage,
    font_runs,
    needs_shaping,
    right_to_left,
    visual_lines,
)
from stories.exports.screenplay import (
    Element,
    ExportMeta,
    one_line,
    screenplay_scenes,
    text_lines,
    text_paragraphs,
)
from storyproject.bidi import bidi_isolated


def pdf_from_screenplay(*, content: object, meta: ExportMeta) -> bytes:
    settings = _settings()
    story = _title_page(meta, settings)
    for paragraph in _paragraphs(content, settings):
        _add(story, paragraph, settings)
    buffer = io.BytesIO()
    document = screenplain_pdf.DocTemplate(
        buffer,
        pagesize=(settings.page_width, settings.page_height),
        settings=settings,
        has_title_page=True,
        # A viewer shows these in its own words (a window's title, "Title - Viewer"): isolated, so that an
        # override left open in a title or a name does not draw the viewer's words backwards.
        title=bidi_isolated(_composed(one_line(meta.title)) or "Untitled"),
        author=bidi_isolated(_composed(one_line(meta.author))) or None,
    )
    document.build(story)
    return buffer.getvalue()


@functools.cache
def _settings() -> screenplain_pdf.Settings:
    # Registers the bundled Courier Prime font, and the fallbacks for what it lacks, with reportlab once
    # per process.
    settings = screenplain_pdf.Settings()
    coverage(settings.font_settings.family_name)
    return settings


class _FontRuns(RichString):
    """A plain string whose HTML puts each run of characters Courier Prime lacks in a fallback font."""

    def __init__(self, runs: list[Run], *, right_to_left: bool = False) -> None:
        super().__init__(*(Segment(text, ()) for _, text in runs))
        self.runs = runs
        self.shaped = needs_shaping(runs)
        self.right_to_left = right_to_left

    def to_html(self) -> str:
        # Escaped as screenplain's Segment.to_html escapes every string (``& < >``, and a run of spaces
        # as no-break spaces but its last), and for text in Courier Prime alone (Latin) by it, so that
        # Latin is laid out as before to the byte. Its other escape writes each character beyond ASCII
        # as a character reference (&#1588;), which reportlab's parser reads one at a time: a quarter of
        # the time a page of Hebrew or Arabic took to lay out. Such text is written as itself.
        if all(font is None for font, _ in self.runs):
            html = "".join(Segment(text, ()).to_html() for _, text in self.runs)
        else:
            html = "".join(_in_font(font, _escaped(text)) for font, text in self.runs)
        return "&nbsp;" + html[1:] if html.startswith(" ") else html


_SPACE_RUN = re.compile("  +")


def _escaped(text: str) -> str:
    return _SPACE_RUN.sub(
        lambda spaces: "&nbsp;" * (len(spaces[0]) - 1) + " ", html.escape(text, quote=False)
    )


def _in_font(font: str | None, html: str) -> str:
    return f'<font name="{font}">{html}</font>' if font else html


def _paragraphs(content: object, settings: screenplain_pdf.Settings) -> list[object]:
    paragraphs: list[object] = []
    for scene in screenplay_scenes(content):
        paragraphs.append(types.Slug(_plain(one_line(scene.heading).upper() or "SCENE")))
        for element in scene.elements:
            paragraphs.extend(_element(element, settings))
    return paragraphs


def _element(element: Element, settings: screenplain_pdf.Settings) -> list[object]:
    if element.kind == "dialogue":
        return [_dialog(element, settings)]
    if element.kind == "transition":
        text = one_line(element.text)
        return [types.Transition(_plain(text.upper()))] if text else []
    style = settings.action_style
    return [
        types.Action([shown for line in lines for shown in _lines(line, style, settings)])
        for lines in text_paragraphs(element.text)
    ]


def _dialog(element: Element, settings: screenplain_pdf.Settings) -> types.Dialog:
    dialog = types.Dialog(_plain(one_line(element.character).upper() or "UNNAMED"))
    parenthetical = one_line(element.parenthetical).removeprefix("(").removesuffix(")").strip()
    if parenthetical:
        for shown in _lines(f"({parenthetical})", settings.parenthentical_style, settings):
            dialog.blocks.append((True, shown))
    for line in [line for line in text_lines(element.text) if line] or [""]:
        for shown in _lines(line, settings.dialog_style, settings):
            dialog.blocks.append((False, shown))
    return dialog


def _add(story: list[Flowable], paragraph: object, settings: screenplain_pdf.Settings) -> None:
    """What screenplain's ``add_dialog``, ``add_slug`` and ``add_paragraph`` add (without scene numbers
    or bold headings, which these screenplays have not), each paragraph in the style ``_styled`` gives."""
    if isinstance(paragraph, types.Dialog):
        story.append(_paragraph([paragraph.character], settings.character_style))
        for is_parenthetical, line in paragraph.blocks:
            style = settings.parenthentical_style if is_parenthetical else settings.dialog_style
            if (html := line.to_html()) != "":
                story.append(Paragraph(html, _styled(style, [line])))
            else:  # an empty line of a speech still takes its line
                story.append(Spacer(1, settings.line_height))
    elif isinstance(paragraph, types.Slug):
        story.extend(_paragraph([line], settings.slug_style) for line in paragraph.lines)
    elif isinstance(paragraph, types.Transition):
        story.append(_paragraph(paragraph.lines, settings.transition_style))
    elif isinstance(paragraph, types.Action):
        story.append(_paragraph(paragraph.lines, settings.action_style))


def _paragraph(lines: list[RichString], style: ParagraphStyle) -> Paragraph:
    return Paragraph("<br/>".join(line.to_html() for line in lines), _styled(style, lines))


def _styled(style: ParagraphStyle, lines: list[RichString]) -> ParagraphStyle:
    """``style``; or a copy of it with shaping on for lines with runs that need it (``_FontRuns.shaped``),
    mirrored for a right-to-left paragraph (its first line's ``_FontRuns.right_to_left``)."""
    shaped = any(getattr(line, "shaped", False) for line in lines)
    mirrored = bool(lines) and getattr(lines[0], "right_to_left", False)
    return _style_copy(style, shaped=shaped, mirrored=mirrored) if shaped or mirrored else style


_MIRRORED_ALIGNMENT = {TA_LEFT: TA_RIGHT, TA_RIGHT: TA_LEFT, TA_CENTER: TA_CENTER}


@functools.cache
def _style_copy(style: ParagraphStyle, *, shaped: bool, mirrored: bool) -> ParagraphStyle:
    """A right-to-left paragraph is laid out as a right-to-left script is (Hekaya, an Arabic screenplay
    tool, mirrors each element's position and alignment; Avid's script editor right-aligns a paragraph
    whose first character is right-to-left and keeps centered ones centered): its element's indents
    mirrored within the text frame and its lines aligned right, so action ends at the right margin, a
    speech at the right edge of its column, a transition at the left. The frame, the page margins and
    the page number stay where they are: a script may mix directions, paragraph by paragraph."""
    if not mirrored:
        return ParagraphStyle(f"{style.name}-shaped", style, shaping=int(shaped))
    return ParagraphStyle(
        f"{style.name}-rtl",
        style,
        shaping=int(shaped),
        leftIndent=style.rightIndent,
        rightIndent=style.leftIndent,
        alignment=_MIRRORED_ALIGNMENT[style.alignment],
    )


def _title_page(meta: ExportMeta, settings: screenplain_pdf.Settings) -> list[Flowable]:
    """Title, credit and author centered a third of the way down; the draft date below them."""
    story: list[Flowable] = [Spacer(settings.frame_width, settings.frame_height / 3)]
    story.append(_paragraph([_plain(one_line(meta.title) or "Untitled")], settings.title_style))
    author = one_line(meta.author)
    if author:
        story.append(Spacer(settings.frame_width, settings.line_height))
        story.append(_paragraph([_plain(one_line(meta.credit) or "Written by")], settings.centered_style))
        story.append(_paragraph([_plain(author)], settings.centered_style))
    if meta.draft_date:
        story.append(Spacer(settings.frame_width, settings.line_height * 4))
        story.append(_paragraph([_plain(meta.draft_date.isoformat())], settings.centered_style))
    story += [NextPageTemplate("standard"), platypus.PageBreak()]
    return story


def _plain(text: str) -> RichString:
    """A one-line string (a heading, a name, a transition, the title page's lines)."""
    return _lines(text, None, _settings())[0]


def _lines(text: str, style: ParagraphStyle | None, settings: screenplain_pdf.Settings) -> list[RichString]:
    """``text`` as the lines the style's width holds when it has right-to-left characters (each in
    visual order), else whole; ``style`` None for a string that is not wrapped."""
    main_font = settings.font_settings.family_name
    fonts = coverage(main_font)
    width = math.inf if style is None else settings.frame_width - style.leftIndent - style.rightIndent
    size = settings.font_size if style is None else style.fontSize
    composed = _composed(text)
    backwards = not fonts.main.issuperset(composed) and right_to_left(composed)  # Latin: at C speed
    return [
        _rich(line, fonts, right_to_left=backwards)
        for line in visual_lines(composed, width=width, fonts=fonts, main_font=main_font, size=size)
    ]


def _rich(text: str, fonts: Coverage, *, right_to_left: bool = False) -> RichString:
    return _FontRuns(font_runs(text, fonts), right_to_left=right_to_left)


def _composed(text: str) -> str:
    return unicodedata.normalize("NFC", text)

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
printed in a fallback font, right-to-left text in visual order (``stories/exports/pdf_fonts.py``).
"""

from __future__ import annotations

import functools
import io
import math
import unicodedata

from reportlab import platypus
from reportlab.lib.styles import ParagraphStyle
from reportlab.platypus import Flowable, NextPageTemplate, Paragraph, Spacer
from screenplain import types
from screenplain.export import pdf as screenplain_pdf
from screenplain.richstring import RichString, Segment

from stories.exports.pdf_fonts import Coverage, Run, coverage, font_runs, visual_lines
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

    def __init__(self, runs: list[Run]) -> None:
        super().__init__(*(Segment(text, ()) for _, text in runs))
        self.runs = runs

    def to_html(self) -> str:
        # Segment.to_html escapes the text as screenplain does for every string; the font names are ours.
        html = "".join(_in_font(font, Segment(text, ()).to_html()) for font, text in self.runs)
        return "&nbsp;" + html[1:] if html.startswith(" ") else html


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
    if isinstance(paragraph, types.Dialog):
        screenplain_pdf.add_dialog(story, paragraph, settings)
    elif isinstance(paragraph, types.Slug):
        screenplain_pdf.add_slug(story, paragraph, settings)
    elif isinstance(paragraph, types.Transition):
        screenplain_pdf.add_paragraph(story, paragraph, settings.transition_style)
    elif isinstance(paragraph, types.Action):
        screenplain_pdf.add_paragraph(story, paragraph, settings.action_style)


def _title_page(meta: ExportMeta, settings: screenplain_pdf.Settings) -> list[Flowable]:
    """Title, credit and author centered a third of the way down; the draft date below them."""
    story: list[Flowable] = [Spacer(settings.frame_width, settings.frame_height / 3)]
    story.append(Paragraph(_html(one_line(meta.title) or "Untitled"), settings.title_style))
    author = one_line(meta.author)
    if author:
        story.append(Spacer(settings.frame_width, settings.line_height))
        story.append(Paragraph(_html(one_line(meta.credit) or "Written by"), settings.centered_style))
        story.append(Paragraph(_html(author), settings.centered_style))
    if meta.draft_date:
        story.append(Spacer(settings.frame_width, settings.line_height * 4))
        story.append(Paragraph(_html(meta.draft_date.isoformat()), settings.centered_style))
    story += [NextPageTemplate("standard"), platypus.PageBreak()]
    return story


def _html(text: str) -> str:
    # The same escaping screenplain applies to the script's strings.
    return _plain(text).to_html()


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
    return [
        _rich(line, fonts)
        for line in visual_lines(_composed(text), width=width, fonts=fonts, main_font=main_font, size=size)
    ]


def _rich(text: str, fonts: Coverage) -> RichString:
    return _FontRuns(font_runs(text, fonts))


def _composed(text: str) -> str:
    return unicodedata.normalize("NFC", text)

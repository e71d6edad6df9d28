"""The pages in Chromium, as a writer uses them (no generation: see test_generate.py)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, Dialog, expect

from tests.browser.conftest import (
    AppServer,
    OwnServer,
    Watched,
    log_in,
    screenshot,
    signed_out_in_another_tab,
)
from tests.browser.test_editor import TEXT_LEFT
from tests.browser.test_generate import pick_persona

pytestmark = pytest.mark.browser

# Seeded by tests/browser/seed.py: a writer whose one run made a story titled LONG_WORD * 5.
LONG_TITLE_WRITER = ("long-title-writer", "long-title-pw-2026")
FIGURES_WRITER = ("figures-writer", "figures-pw-2026")
LONG_WORD = "Supercalifragilisticexpialidocious"
FAILED_RUN_WRITER = ("failed-run-writer", "failed-run-pw-2026")
# Seeded too: a run whose story's title and model text leave U+202E open (seed.BIDI_RUN_TEXT).
BIDI_RUN_WRITER = ("bidi-run-writer", "bidi-run-pw-2026")
BIDI_RUN_TEXT = '{"title": "\u202eevil", "logline": "A fog."}\n{"scenes": []}'


def test_a_writer_logs_in_sees_the_story_list_and_logs_out(app_server: AppServer, watched: Watched) -> None:
    page = watched.page
    page.goto(app_server.url + "/")
    assert "/accounts/login/" in page.url
    log_in(page, app_server)
    assert page.get_by_role("heading", name="Your stories").is_visible()
    assert page.get_by_role("link", name="New story").first.is_visible()
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/accounts/login/")
    page.goto(app_server.url + "/runs/")
    assert "/accounts/login/" in page.url


def test_untrusted_text_on_the_story_page_is_shown_as_text(app_server: AppServer, watched: Watched) -> None:
    page = watched.page
    log_in(page, app_server)
    page.goto(f"{app_server.url}/stories/{app_server.ids['seeded_story']}/")
    assert page.get_by_role("heading", level=1).inner_text() == "<script>alert('title')</script>Seeded"
    assert "INT. <IMG SRC=X ONERROR=ALERT('HEADING')> - NIGHT" in page.locator(".scene-heading").inner_text()
    assert page.locator(".screenplay img, .screenplay script, .plot img").count() == 0
    assert page.locator(".sp-line").inner_text().startswith("<script>alert('persona-context')</script>")
    assert watched.dialogs == [] and watched.errors == []


def test_another_writers_story_is_not_found(app_server: AppServer, watched: Watched) -> None:
    page = watched.page
    log_in(page, app_server)
    response = page.goto(f"{app_server.url}/stories/{app_server.ids['private_story']}/")
    assert response is not None and response.status == 404
    page.goto(app_server.url + "/")
    assert page.get_by_text("Intruder's private story").count() == 0


def test_pages_fit_a_phone_screen_without_sideways_scrolling(app_server: AppServer, phone: Watched) -> None:
    page = phone.page
    log_in(page, app_server)
    two_versions = f"/stories/{app_server.ids['two_versions_story']}/"
    # The seeded story last: the screenshot (docs/pages.md) is of it, every field holding markup.
    long_word = f"/stories/{app_server.ids['long_word_story']}/"
    paths = [
        "/",
        "/stories/new/",
        two_versions,
        two_versions + "?version=1",
        long_word,
        long_word + "?compare=1,1",
        long_word + "edit/",
        long_word + "settings/",
    ]
    for path in [*paths, f"/stories/{app_server.ids['seeded_story']}/"]:
        page.goto(app_server.url + path)
        # Against the phone's width, not window.innerWidth: a mobile browser widens its layout viewport
        # (and zooms out) to fit a page that overflows, so innerWidth grows with the page.
        assert page.viewport_size is not None
        overflow = page.evaluate("document.documentElement.scrollWidth") - page.viewport_size["width"]
        assert overflow <= 0, f"{path} is {overflow}px wider than the phone"
    screenshot(page, "story-page-phone")
    assert phone.errors == []


def test_the_import_confirmation_fits_a_phone_when_a_character_name_is_one_long_word(
    app_server: AppServer, phone: Watched
) -> None:
    # The cast table's name cell did not wrap: the page was 688 px wide and the persona picker a sliver.
    page = phone.page
    log_in(page, app_server)
    name = ("SUPERCALIFRAGILISTICEXPIALIDOCIOUS" * 2)[:60]
    page.goto(app_server.url + "/stories/import/")
    page.get_by_label("Or paste Fountain").fill(f"INT. HALL - NIGHT\n\n{name}\nHello.\n\nBOB\nHi.\n")
    page.get_by_role("button", name="Read the screenplay").click()
    picker = page.get_by_label(name)
    expect(picker).to_have_value("")
    assert page.viewport_size is not None
    overflow = page.evaluate("document.documentElement.scrollWidth") - page.viewport_size["width"]
    assert overflow <= 0, f"the confirmation is {overflow}px wider than the phone"
    box = picker.bounding_box()
    assert box is not None and box["width"] >= 120, "the persona picker is squeezed"
    assert phone.errors == []


def test_every_column_of_the_runs_page_shows_in_a_1280_px_window(
    app_server: AppServer, watched: Watched
) -> None:
    # The table was 1,480 px wide: tokens, cache and cost were cut off at the window's right edge, behind
    # a sideways scroll inside the table's box that nothing showed.
    page = watched.page
    log_in(page, app_server, FIGURES_WRITER)
    page.goto(app_server.url + "/runs/")
    expect(page.get_by_role("cell", name="123456 / 15999")).to_be_visible()
    expect(page.locator("details.run-error summary")).to_have_text("invalid_output")
    box = page.locator(".table-scroll")
    assert box.evaluate("box => box.scrollWidth <= box.clientWidth"), "the runs table scrolls sideways"
    for heading in ["Tokens in / out", "Cache read / write (hit rate)", "Cost"]:
        expect(page.get_by_role("columnheader", name=heading)).to_be_in_viewport(ratio=1)


@pytest.mark.parametrize("width", [1280, 375])
def test_a_story_title_that_is_one_long_word_wraps_on_the_runs_page(
    app_server: AppServer, browser: Browser, width: int
) -> None:
    # The title's cell did not wrap: the run's model, timings, tokens and cost sat 1,500 px to the right.
    context = browser.new_context(viewport={"width": width, "height": 800})
    try:
        page = context.new_page()
        log_in(page, app_server, LONG_TITLE_WRITER)
        page.goto(app_server.url + "/runs/")
        title = page.locator("table.runs td", has=page.get_by_role("link", name=LONG_WORD * 5))
        expect(title).to_have_text(LONG_WORD * 5)
        box = title.bounding_box()
        assert box is not None and box["width"] <= 400, f"the title's cell is {box and box['width']}px wide"
        model = page.locator("table.runs td", has_text="offline model").bounding_box()
        assert model is not None and model["x"] < box["x"] + box["width"] + 50
    finally:
        context.close()


def test_a_failed_runs_text_is_read_from_the_runs_page_as_text_on_a_phone(
    app_server: AppServer, phone: Watched
) -> None:
    page = phone.page
    log_in(page, app_server, FAILED_RUN_WRITER)
    page.goto(app_server.url + "/runs/")
    page.get_by_role("link", name=re.compile(r"^Text received \(\d+ characters\)$")).click()
    page.wait_for_url(f"{app_server.url}/runs/{app_server.ids['failed_run']}/")
    # Seeded by tests/browser/seed.py: the model's markup, then one very long word.
    expect(page.locator("pre.run-text")).to_contain_text('{"title": "<script>alert(\'run\')</script>"')
    expect(page.locator("pre.run-text")).to_contain_text(LONG_WORD * 4)
    assert page.locator("main script").count() == 0
    assert page.viewport_size is not None
    overflow = page.evaluate("document.documentElement.scrollWidth") - page.viewport_size["width"]
    assert overflow <= 0, f"the run's page is {overflow}px wider than the phone"
    assert phone.dialogs == [] and phone.errors == []


def test_a_right_to_left_override_on_a_runs_page_keeps_to_the_title_and_the_models_line(
    app_server: AppServer, watched: Watched
) -> None:
    # The run's story title (U+202E left open, a stray U+2069 before it) drew "(version 1)" after it
    # backwards, ")1 noisrev(", as the only title on the site outside an isolate.
    page = watched.page
    log_in(page, app_server, BIDI_RUN_WRITER)
    page.goto(f"{app_server.url}/runs/{app_server.ids['bidi_run']}/")
    expect(page.locator(".run-story")).to_have_text("\u2068\u202eevil\u2069 (version 1)")
    assert page.evaluate(TEXT_LEFT, [".run-story", "version"]) > page.evaluate(
        TEXT_LEFT, [".run-story", "evil"]
    )
    # The model's text is shown as it came: its override turns the rest of its own line only. The
    # <pre> is a block and each of its lines a paragraph, so the next line and the page's words around
    # it read left to right.
    expect(page.locator("pre.run-text")).to_have_text(BIDI_RUN_TEXT)
    pre_left = page.locator("pre.run-text").evaluate("node => node.getBoundingClientRect().left")
    assert page.evaluate(TEXT_LEFT, ["pre.run-text", '{"scenes"']) < pre_left + 16
    assert page.evaluate(TEXT_LEFT, ["main", "Model text"]) < page.evaluate(TEXT_LEFT, ["main", "received"])
    assert watched.dialogs == [] and watched.errors == []


def test_the_plot_editor_counts_characters_and_generate_asks_for_what_is_missing(
    app_server: AppServer, watched: Watched
) -> None:
    page = watched.page
    log_in(page, app_server)
    page.goto(app_server.url + "/stories/new/")
    counter = page.locator("#plot-count")
    expect(counter).to_have_text("0 / 20,000 characters")
    page.get_by_label("Plot").fill("Ünïcode plot")
    expect(counter).to_have_text("12 / 20,000 characters")
    page.get_by_role("button", name="Generate").click()
    expect(page.get_by_role("alert").filter(has_text="Pick at least one persona.")).to_be_visible()
    expect(page.locator("#stream")).to_be_hidden()
    assert watched.dialogs == [] and watched.errors == []


def test_a_plot_or_title_pasted_over_the_limit_is_kept_whole_and_generate_says_it_is_too_long(
    app_server: AppServer, watched: Watched
) -> None:
    page = watched.page
    log_in(page, app_server)
    page.goto(app_server.url + "/stories/new/")
    pick_persona(page, "halcyon", "HALCYON")
    plot = page.get_by_label("Plot")
    long_plot = "The lift stops. " * 1260  # 20,160 characters: a pasted treatment a little too long
    plot.focus()
    page.keyboard.insert_text(long_plot)
    # Nothing is cut: the writer sees the whole text, by how much it is over, and what to do.
    counter = page.locator("#plot-count")
    expect(counter).to_have_text("20,159 / 20,000 characters")  # its last space is not sent
    assert plot.input_value() == long_plot
    expect(counter).to_have_class(re.compile(r"\bover-limit\b"))
    page.get_by_role("button", name="Generate").click()
    expect(
        page.get_by_role("alert").filter(has_text="The plot is longer than 20,000 characters.")
    ).to_be_visible()
    expect(page.locator("#stream")).to_be_hidden()

    # White space around the plot is not sent, nor counted: a plot at the limit, pasted with its last
    # line break, was refused as longer than the limit, which the server would have taken.
    plot.fill("x" * 20_000 + "\n")
    expect(counter).to_have_text("20,000 / 20,000 characters")
    expect(counter).not_to_have_class(re.compile(r"\bover-limit\b"))

    # Emoji count as one character each, as the server counts them: 15,000 of them fit.
    emoji = "\U0001f3ac" * 15_000
    plot.fill("")
    plot.focus()
    page.keyboard.insert_text(emoji)
    expect(counter).to_have_text("15,000 / 20,000 characters")
    assert plot.input_value() == emoji

    plot.fill("The lift stops.")
    title = page.get_by_label("Title")
    title.focus()
    page.keyboard.insert_text("T" * 210)
    expect(title).to_have_value("T" * 210)
    page.get_by_role("button", name="Generate").click()
    expect(
        page.get_by_role("alert").filter(has_text="The title is longer than 200 characters.")
    ).to_be_visible()
    expect(page.locator("#stream")).to_be_hidden()
    assert watched.dialogs == [] and watched.errors == []


def test_a_title_or_plot_pasted_on_the_settings_page_is_kept_whole_and_a_long_one_refused_by_name(
    app_server: AppServer, watched: Watched
) -> None:
    page = watched.page
    log_in(page, app_server)
    page.goto(f"{app_server.url}/stories/{app_server.ids['editable_story']}/settings/")
    # 150 emoji are 150 characters as the server counts them (at most 200), 300 UTF-16 units: the
    # browser's maxlength cut the paste to 100 of them, without a word.
    title = page.get_by_label("Title")
    title.fill("")
    title.focus()
    page.keyboard.insert_text("\U0001f3ac" * 150)
    expect(title).to_have_value("\U0001f3ac" * 150)

    # A plot a little over its limit is kept whole, and the save is refused saying why, not saved cut.
    title.fill("A story to edit")
    plot = page.get_by_label("Plot")
    long_plot = "The lift stops. " * 1260  # 20,160 characters
    plot.fill("")
    plot.focus()
    page.keyboard.insert_text(long_plot)
    assert plot.input_value() == long_plot
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#plot-error")).to_contain_text("at most 20000 characters")
    expect(page.get_by_label("Plot")).to_have_value(long_plot)
    assert watched.dialogs == [] and watched.errors == []


def test_a_plot_saved_after_the_writer_was_signed_out_comes_back_after_signing_in_again(
    app_server: AppServer, watched: Watched
) -> None:
    page = watched.page
    story = app_server.ids["renamed_signed_out_story"]
    log_in(page, app_server)
    page.goto(f"{app_server.url}/stories/{story}/settings/")
    plot = "A plot typed for a long while, then saved after the session had ended."
    page.get_by_label("Plot").fill(plot)
    signed_out_in_another_tab(page, app_server).close()

    # The save goes to the login page, which comes back to the settings page: the plot is there again
    # (it came back as it was saved before, the text typed gone), with a word of why.
    page.get_by_role("button", name="Save", exact=True).click()
    page.wait_for_url(re.compile(r"/accounts/login/\?next="))
    page.get_by_label("Username").fill("writer")
    page.get_by_label("Password").fill("writer-demo-2026")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"**/stories/{story}/settings/")
    expect(page.get_by_label("Plot")).to_have_value(plot)
    expect(page.locator("#draft-restored")).to_contain_text("nothing was saved")

    page.get_by_role("button", name="Save", exact=True).click()
    page.wait_for_url(f"**/stories/{story}/")
    expect(page.locator("p.plot")).to_have_text(plot)
    # Saved, the draft is done: the settings page opens as the server has it, without the notice.
    page.goto(f"{app_server.url}/stories/{story}/settings/")
    expect(page.get_by_label("Plot")).to_have_value(plot)
    expect(page.locator("#draft-restored")).to_have_count(0)
    assert watched.dialogs == [] and watched.errors == []


@pytest.mark.parametrize("width", [1280, 375])
def test_a_300_scene_screenplays_versions_cast_and_regenerate_are_one_key_press_away(
    app_server: AppServer, browser: Browser, width: int
) -> None:
    # The versions, the cast and Regenerate came after the whole screenplay in the tab order (a Rewrite
    # this scene for each of 300 scenes), and on a phone 100,000 pixels down the page.
    context = browser.new_context(viewport={"width": width, "height": 800})
    context.set_default_timeout(15_000)
    page = context.new_page()
    log_in(page, app_server)
    page.goto(f"{app_server.url}/stories/{app_server.ids['long_screenplay_story']}/")
    expect(page.locator(".screenplay .scene-heading")).to_have_count(300)
    jump = page.get_by_role("navigation", name="On this page")
    for name in ["Versions", "Cast", "Shape"]:
        jump.get_by_role("link", name=name).focus()
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name=name, exact=True)).to_be_in_viewport()
    jump.get_by_role("link", name="Versions").focus()
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="v1", exact=True)).to_be_focused()
    jump.get_by_role("link", name="Regenerate").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#regenerate > summary")).to_be_in_viewport()
    page.keyboard.press("Tab")
    expect(page.locator("#regenerate > summary")).to_be_focused()
    context.close()


def test_leaving_typed_title_plot_or_rewrite_instructions_unsent_asks_first(
    app_server: AppServer, watched: Watched
) -> None:
    page = watched.page
    story = app_server.ids["editable_story"]
    settings_url = f"{app_server.url}/stories/{story}/settings/"
    log_in(page, app_server)
    page.goto(settings_url)
    page.get_by_label("Plot").fill("A plot rewritten at length, not saved yet.")
    # The browser asks (dismissed here: the writer stays), and the text is still there.
    with page.expect_event("dialog"):
        page.get_by_role("link", name="Back to the story").click()
    assert [dialog.split(":")[0] for dialog in watched.dialogs] == ["beforeunload"]
    expect(page).to_have_url(settings_url)
    expect(page.get_by_label("Plot")).to_have_value("A plot rewritten at length, not saved yet.")

    # Refused, the page comes back with the text the writer typed, still not saved: it asks too.
    page.get_by_label("Title").fill("")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#title-error")).to_be_visible()
    with page.expect_event("dialog"):
        page.get_by_role("link", name="Back to the story").click()
    assert len(watched.dialogs) == 2
    expect(page).to_have_url(settings_url)

    assert watched.errors == []

    # Untouched, the page is left without a question; a scene rewrite's instructions typed and not sent
    # ask. (A new tab: the refused form above would ask again, rightly, before any other page opened.)
    page = page.context.new_page()
    dialogs: list[str] = []

    def stay(dialog: Dialog) -> None:
        dialogs.append(dialog.type)
        dialog.dismiss()

    page.on("dialog", stay)
    page.goto(settings_url)
    page.get_by_role("link", name="Back to the story").click()
    page.wait_for_url(f"**/stories/{story}/")
    assert dialogs == []
    page.get_by_text("Rewrite this scene").first.click()
    page.get_by_label("What should change?").first.fill("Make it rain.")
    with page.expect_event("dialog"):
        page.get_by_role("link", name="Rename or delete").click()
    assert dialogs == ["beforeunload"]
    expect(page.get_by_label("What should change?").first).to_have_value("Make it rain.")
    page.close()


def test_an_export_refused_says_why_on_the_story_page_instead_of_a_failed_download(
    own_server: OwnServer, watched: Watched
) -> None:
    own_server.env["STORY_EXPORT_BUILDS_PER_HOUR"] = "1"
    own_server.restart()
    page = watched.page
    log_in(page, own_server)
    page.goto(f"{own_server.url}/")
    page.get_by_role("link", name="A story to edit").click()
    with page.expect_download() as first:
        page.get_by_role("link", name="PDF").click()
    assert first.value.suggested_filename == "a-story-to-edit-v1.pdf" and first.value.failure() is None

    # Renamed, the story's PDF is another file to build, past the hour's one build: the refusal and
    # when to come back are on the page (the browser's download only showed as failed, saying nothing).
    page.get_by_role("link", name="Rename or delete").click()
    page.get_by_label("Title").fill("A story renamed")
    page.get_by_role("button", name="Save").click()
    page.get_by_role("link", name="PDF").click()
    expect(page.locator(".messages")).to_contain_text("You have had 1 PDF built in the last hour")
    expect(page.locator(".version-heading")).to_contain_text("Version 1")
    expect(page).to_have_url(re.compile(r"/stories/\d+/\?version=1$"))
    # The other formats still download from there.
    with page.expect_download() as fountain:
        page.get_by_role("link", name="Fountain").click()
    assert fountain.value.suggested_filename == "a-story-renamed-v1.fountain"
    assert fountain.value.failure() is None
    assert watched.dialogs == [] and watched.errors == []


def test_a_failed_runs_error_message_opened_on_the_runs_page_wraps_within_the_page(
    app_server: AppServer, watched: Watched
) -> None:
    page = watched.page
    log_in(page, app_server, FAILED_RUN_WRITER)
    page.goto(app_server.url + "/runs/")
    page.locator("details.run-error summary", has_text="invalid_output").click()
    message = page.locator("details.run-error", has_text="nothing was saved")
    expect(message).to_contain_text("HALCYON-THE-BUILDING is not a character of the cast")
    # The message was one line, 3,000 px long: cut at the window's edge, the run's model, tokens and
    # cost a sideways scroll away.
    box = message.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 1280, f"the message ends at {box}"
    model = page.locator("table.runs td", has_text="offline model").bounding_box()
    assert model is not None and model["x"] + model["width"] <= 1280
    assert watched.dialogs == [] and watched.errors == []


def test_the_shape_tables_column_headings_are_whole_words_on_a_phone(
    app_server: AppServer, phone: Watched
) -> None:
    # The table let every cell break anywhere, for a character's long name: at 390 px its headings
    # read "Lin / es" and "Scen / es", one word over two lines.
    page = phone.page
    log_in(page, app_server)
    page.goto(f"{app_server.url}/stories/{app_server.ids['two_versions_story']}/")
    headings = page.locator(".stats-table thead th")
    expect(headings).to_have_text(["Character", "Lines", "Words", "Scenes"])
    lines = page.evaluate(
        """() => [...document.querySelectorAll('.stats-table thead th')].map((th) => {
          const range = document.createRange();
          range.selectNodeContents(th);
          return new Set([...range.getClientRects()].map((rect) => Math.round(rect.top))).size;
        })"""
    )
    assert lines == [1, 1, 1, 1]
    assert phone.errors == []


def test_the_versions_table_fits_its_box_on_a_desktop(app_server: AppServer, watched: Watched) -> None:
    # At 1280 px the side column's versions table was wider than its box: "Diff with v2 · Compare with
    # v2 · Make current" ran under the box's edge, behind a sideways scroll bar.
    page = watched.page
    page.set_viewport_size({"width": 1280, "height": 900})
    log_in(page, app_server)
    page.goto(f"{app_server.url}/stories/{app_server.ids['two_versions_story']}/?version=1")
    expect(page.get_by_role("link", name="Compare with v1")).to_be_visible()
    box = page.locator("section", has=page.locator("table.versions"))
    overflow = box.evaluate("(section) => section.scrollWidth - section.clientWidth")
    assert overflow <= 0, f"the versions table is {overflow}px wider than its box"
    assert watched.errors == []


@pytest.mark.parametrize("width", [1280, 640, 375])
def test_the_create_pages_choices_show_their_whole_text_at_every_width(
    app_server: AppServer, browser: Browser, width: int
) -> None:
    # The model, writing mode and length sat in three equal columns whatever their text: at 640 px (a
    # 1280 px window at 200 % zoom) "Outline first, then every scene at once" read "Outline first, then e".
    context = browser.new_context(viewport={"width": width, "height": 900})
    try:
        page = context.new_page()
        log_in(page, app_server)
        page.goto(app_server.url + "/stories/new/")
        page.select_option("#mode", index=1)  # the longest choice shown
        cut = page.evaluate(
            """() => [...document.querySelectorAll('#model, #mode, #length')].filter((select) => {
              const clone = select.cloneNode(true);
              clone.value = select.value;
              clone.style.width = 'auto';
              clone.style.position = 'absolute';
              document.body.appendChild(clone);
              const needed = clone.getBoundingClientRect().width;
              clone.remove();
              return select.getBoundingClientRect().width + 0.5 < Math.min(needed, document.documentElement.clientWidth - 32);
            }).map((select) => select.id)"""
        )
        assert cut == []
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0
    finally:
        context.close()

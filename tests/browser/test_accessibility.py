"""The writer's and editor's pages as a screen reader or a keyboard meets them.

axe-core (through axe-playwright-python) checks each page in its main states: empty, with data, with
errors shown, while a screenplay streams and after it ends. Only violations of serious or critical impact
fail a test.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import FilePayload, Page, expect

from tests.browser.conftest import AppServer, Watched, log_in
from tests.browser.test_generate import PLOT, generate, pick_persona

pytestmark = pytest.mark.browser

BLOCKING = {"serious", "critical"}
# Rules whose "needs review" is a failure here: axe cannot tell whether a screen reader reads a name on
# an element whose role takes none (a <pre>, a <div>), and most do not.
NEEDS_REVIEW_FAILS = {"aria-prohibited-attr"}


def serious_violations(page: Page, *, context: dict[str, Any] | None = None) -> list[str]:
    """axe's serious and critical violations on ``page`` as it is now, one line per element."""
    results = Axe().run(page, context=context, options={"resultTypes": ["violations", "incomplete"]})
    found = results.response["violations"] + [
        review for review in results.response["incomplete"] if review["id"] in NEEDS_REVIEW_FAILS
    ]
    return [
        f"{violation['id']} ({violation['impact']}): {' '.join(node['target'])}: {node['html'][:120]}"
        for violation in found
        if violation["impact"] in BLOCKING
        for node in violation["nodes"]
    ]


def _create_page_filled_in(page: Page, server: AppServer) -> None:
    """The writer on the create page with one persona picked and a plot: Generate would send it."""
    log_in(page, server)
    page.goto(server.url + "/stories/new/")
    pick_persona(page, "marlowe", "Sam Marlowe")
    page.get_by_label("Plot").fill(PLOT)


def _editor_log_in(page: Page, server: AppServer) -> None:
    """The demo's content editor, signed in to the admin."""
    page.goto(server.url + "/admin/login/")
    page.get_by_label("Username").fill("editor")
    page.get_by_label("Password").fill("editor-demo-2026")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Site administration")).to_be_visible()


def _story_paths(server: AppServer) -> list[str]:
    story = f"/stories/{server.ids['two_versions_story']}/"
    return [
        "/",
        "/?q=no-story-has-this-title",
        "/stories/new/",
        story,
        story + "?version=1",
        story + "?compare=1,2",
        story + "diff/?from=1&to=2",
        story + "edit/",
        story + "settings/",
        "/stories/import/",
        "/runs/",
        "/account/",
        "/account/password/",
    ]


def test_the_writers_pages_have_no_serious_accessibility_violations(
    app_server: AppServer, watched: Watched
) -> None:
    page = watched.page
    page.goto(app_server.url + "/accounts/login/")
    found = {"/accounts/login/": serious_violations(page)}
    log_in(page, app_server)
    for path in _story_paths(app_server):
        page.goto(app_server.url + path)
        found[path] = serious_violations(page)
    assert {path: lines for path, lines in found.items() if lines} == {}


def test_a_failed_runs_page_with_its_text_has_no_serious_accessibility_violations(
    app_server: AppServer, watched: Watched
) -> None:
    page = watched.page
    log_in(page, app_server, ("failed-run-writer", "failed-run-pw-2026"))
    page.goto(f"{app_server.url}/runs/{app_server.ids['failed_run']}/")
    expect(page.locator(".run-text")).to_be_visible()
    assert serious_violations(page) == []


def test_forms_showing_their_errors_have_no_serious_accessibility_violations(
    app_server: AppServer, watched: Watched
) -> None:
    page = watched.page
    page.goto(app_server.url + "/accounts/login/")
    page.get_by_label("Username").fill("writer")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    found = {"login": serious_violations(page)}
    log_in(page, app_server)
    page.goto(app_server.url + "/stories/import/")
    page.get_by_label("Or paste Fountain").fill("not a screenplay")
    page.get_by_role("button", name="Read the screenplay").click()
    found["import"] = serious_violations(page)
    page.get_by_label("Or paste Fountain").fill("INT. HALL - NIGHT\n\nBOB\nHi.\n")
    page.get_by_role("button", name="Read the screenplay").click()
    expect(page.get_by_label("BOB")).to_be_visible()
    found["import confirmation"] = serious_violations(page)
    page.goto(app_server.url + "/account/password/")
    page.get_by_role("button", name="Change my password").click()
    found["password"] = serious_violations(page)
    page.goto(app_server.url + "/stories/new/")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#form-error")).to_be_visible()
    found["create"] = serious_violations(page)
    # Last: the page refused keeps text that was not saved, and leaving it asks first (unsaved-guard.js).
    page.goto(f"{app_server.url}/stories/{app_server.ids['two_versions_story']}/settings/")
    page.get_by_label("Title").fill("")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_label("Title")).to_have_attribute("aria-invalid", "true")
    found["settings"] = serious_violations(page)
    assert {state: lines for state, lines in found.items() if lines} == {}


def test_the_create_page_has_no_serious_accessibility_violations_while_streaming_and_after(
    app_server: AppServer, watched: Watched
) -> None:
    # A persona picked shows its context in a box that scrolls; the stream adds the raw text's boxes.
    page = watched.page
    _create_page_filled_in(page, app_server)
    expect(page.locator(".context-preview")).not_to_have_text("Loading context…")
    generate(page)
    expect(page.locator("#stream-scenes .scene").first).to_be_visible()
    found = {"streaming": serious_violations(page)}
    expect(page.get_by_role("link", name="Open the story")).to_be_visible()
    found["ended"] = serious_violations(page)
    assert {state: lines for state, lines in found.items() if lines} == {}


def test_the_editors_preview_of_a_long_screenplay_can_be_scrolled_from_the_keyboard(
    app_server: AppServer, watched: Watched
) -> None:
    # The preview scrolls in its box once the screenplay is longer than it: the box needs a tab stop.
    page = watched.page
    log_in(page, app_server)
    page.goto(f"{app_server.url}/stories/{app_server.ids['two_versions_story']}/edit/")
    scenes = "".join(f"INT. ROOM {number} - NIGHT\n\nThe clock ticks.\n\n" for number in range(1, 41))
    page.get_by_label("Fountain").fill(scenes)
    expect(page.locator("#preview")).to_contain_text("INT. ROOM 40 - NIGHT")
    assert serious_violations(page) == []
    page.get_by_label("Fountain").press("Tab")
    expect(page.get_by_role("region", name="Preview")).to_be_focused()
    page.keyboard.press("End")
    # Chromium animates a scroll from the keyboard: wait for it to move.
    page.wait_for_function("() => document.getElementById('preview').scrollTop > 0")


def test_a_refused_generate_marks_the_field_at_fault_and_moves_keyboard_focus_to_it(
    app_server: AppServer, watched: Watched
) -> None:
    # The error was an alert alone: focus stayed on Generate and no field said it was the one at fault.
    page = watched.page
    log_in(page, app_server)
    page.goto(app_server.url + "/stories/new/")
    error = page.locator("#form-error")
    search, plot, title = (
        page.get_by_label("Find personas"),
        page.get_by_label("Plot"),
        page.locator("#title"),
    )
    page.get_by_role("button", name="Generate").click()
    expect(error).to_have_text("Pick at least one persona.")
    expect(search).to_be_focused()
    expect(search).to_have_attribute("aria-invalid", "true")
    expect(search).to_have_accessible_description("Pick at least one persona.")
    pick_persona(page, "marlowe", "Sam Marlowe")
    page.get_by_role("button", name="Generate").click()
    expect(error).to_have_text("Write a plot first.")
    expect(plot).to_be_focused()
    expect(plot).to_have_attribute("aria-invalid", "true")
    expect(plot).to_have_accessible_description(re.compile(r"characters Write a plot first\.$"))
    expect(search).not_to_have_attribute("aria-invalid", "true")
    plot.fill(PLOT)
    title.fill("T" * 201)
    page.get_by_role("button", name="Generate").click()
    expect(error).to_have_text("The title is longer than 200 characters.")
    expect(title).to_be_focused()
    expect(title).to_have_attribute("aria-invalid", "true")
    expect(plot).not_to_have_attribute("aria-invalid", "true")
    expect(plot).to_have_accessible_description(re.compile(r"characters$"))


def _luminance(rgb: str) -> float:
    channels = [int(part) / 255 for part in re.findall(r"\d+", rgb)[:3]]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(first: str, second: str) -> float:
    """WCAG's contrast ratio of two CSS ``rgb(...)`` colours."""
    light, dark = sorted([_luminance(first), _luminance(second)], reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_the_keyboard_focus_ring_shows_on_the_dark_header(app_server: AppServer, watched: Watched) -> None:
    # The ring was the accent blue on the near-black header, 2.5:1: a keyboard user lost track of focus
    # in the navigation (WCAG asks 3:1 of a focus indicator against what is next to it).
    page = watched.page
    log_in(page, app_server)
    header = page.locator(".site-header").evaluate("header => getComputedStyle(header).backgroundColor")
    rings = {}
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    # The skip link shows over the header when focused, so its ring sits on the header too.
    while page.evaluate("document.activeElement.closest('.site-header, .skip-link') !== null"):
        name, color, width = page.evaluate(
            """() => {
              const focused = document.activeElement, style = getComputedStyle(focused);
              return [focused.textContent.trim(), style.outlineColor, parseFloat(style.outlineWidth)];
            }"""
        )
        assert width >= 2, f"{name} shows no focus ring"
        rings[name] = round(contrast(color, header), 1)
        page.keyboard.press("Tab")
    assert list(rings) == [
        "Skip to content",
        "Screenplay studio",
        "Stories",
        "New story",
        "Runs",
        "Account",
        "Log out",
    ]
    assert {name: ratio for name, ratio in rings.items() if ratio < 3} == {}


def test_the_persona_admin_pages_have_no_serious_accessibility_violations(
    app_server: AppServer, watched: Watched
) -> None:
    # The project's own persona pages and additions to the admin, with the admin's own parts: Django's
    # stock breadcrumbs (white links in pale text, link-in-text-block) were left out, and are
    # underlined now on every admin page (static/css/admin-theme.css).
    page = watched.page
    _editor_log_in(page, app_server)
    found = {}
    page.goto(app_server.url + "/admin/")
    found["index"] = serious_violations(page)
    page.goto(app_server.url + "/admin/personas/personaconfig/?q=marlowe")
    found["list"] = serious_violations(page)
    page.locator("#result_list tbody th a").first.click()
    expect(page.locator(".persona-live-preview")).to_be_visible()
    found["change"] = serious_violations(page)
    page.get_by_role("link", name="History").click()
    expect(page.locator(".persona-revision").first).to_be_visible()
    found["history"] = serious_violations(page)
    page.locator(".persona-revision h2 a").first.click()
    found["revision"] = serious_violations(page)
    for path in ["add/", "import/", "recover/"]:
        page.goto(f"{app_server.url}/admin/personas/personaconfig/{path}")
        found[path] = serious_violations(page)
    card = {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {"name": "Mallory", "description": "A spy."},
    }
    upload: FilePayload = {
        "name": "card.json",
        "mimeType": "application/json",
        "buffer": json.dumps(card).encode(),
    }
    page.goto(f"{app_server.url}/admin/personas/personaconfig/import/")
    page.locator("input[type=file]").set_input_files(files=[upload])
    page.locator("#content form [type=submit]").click()
    expect(page.locator(".persona-import-plan h2")).to_be_visible()
    found["import preview"] = serious_violations(page)
    assert {state: lines for state, lines in found.items() if lines} == {}


def test_a_refused_import_marks_the_field_sent_names_the_reason_and_focuses_it(
    app_server: AppServer, watched: Watched, tmp_path: Path
) -> None:
    # The reason was a paragraph above the form: the field it was about said nothing of it.
    page = watched.page
    log_in(page, app_server)
    page.goto(app_server.url + "/stories/import/")
    pasted, upload = page.get_by_label("Or paste Fountain"), page.get_by_label("File")
    page.get_by_role("button", name="Read the screenplay").click()
    reason = "choose a .fountain or .fdx file, or paste Fountain text"
    expect(pasted).to_be_focused()
    expect(pasted).to_have_attribute("aria-invalid", "true")
    expect(pasted).to_have_accessible_description(re.compile(reason))
    empty = tmp_path / "empty.fountain"
    empty.write_text("Just words, no scene.\n")
    upload.set_input_files(str(empty))
    page.get_by_role("button", name="Read the screenplay").click()
    expect(upload).to_be_focused()
    expect(upload).to_have_attribute("aria-invalid", "true")
    expect(upload).to_have_accessible_description(re.compile(r"\S"))
    expect(pasted).not_to_have_attribute("aria-invalid", "true")


# Counts what each live region of the editor says, and each preview answer, from here on.
EDITOR_LIVE_REGIONS = """() => {
  window.__live = {alerts: [], statuses: [], previews: 0};
  const error = document.querySelector(".editor-error");
  const status = document.querySelector(".editor-pane [role=status]");
  new MutationObserver(() => window.__live.alerts.push(error.textContent)).observe(
    error, {childList: true, characterData: true, subtree: true});
  new MutationObserver(() => window.__live.statuses.push(status.textContent)).observe(
    status, {childList: true, characterData: true, subtree: true});
  new MutationObserver(() => {
    if (document.querySelector(".preview-status").textContent !== "Updating…") window.__live.previews += 1;
  }).observe(document.querySelector(".preview-status"), {childList: true, characterData: true, subtree: true});
}"""


def _previews_answered(page: Page, count: int) -> None:
    page.wait_for_function("count => window.__live.previews >= count", arg=count)


def test_the_editor_marks_the_text_at_fault_and_says_an_error_or_a_recovery_once(
    app_server: AppServer, watched: Watched
) -> None:
    # Every preview while the writer typed rewrote the alert (read out again at each pause) and said
    # "Updating…, Up to date" in a live region; the text area never said it was the field at fault.
    page = watched.page
    log_in(page, app_server)
    page.goto(f"{app_server.url}/stories/{app_server.ids['two_versions_story']}/edit/")
    text = page.get_by_label("Fountain")
    original = text.input_value()
    page.evaluate(EDITOR_LIVE_REGIONS)
    text.fill(original + "\nINT. ATTIC - DAY\n\nDust.\n")
    _previews_answered(page, 1)
    text.fill("")
    _previews_answered(page, 2)
    expect(text).to_have_attribute("aria-invalid", "true")
    blank = page.locator(".editor-error").inner_text()
    assert blank.endswith("This field may not be blank.")
    expect(text).to_have_accessible_description(blank)
    for typed in range(3):
        text.fill(" " * (typed + 1))
        _previews_answered(page, 3 + typed)
    text.fill(original)
    _previews_answered(page, 6)
    expect(text).not_to_have_attribute("aria-invalid", "true")
    live = page.evaluate("window.__live")
    assert [said for said in live["alerts"] if said] == [blank]
    assert [said for said in live["statuses"] if said] == ["Preview: Up to date"]


def test_each_of_the_writers_pages_has_a_title_of_its_own(app_server: AppServer, watched: Watched) -> None:
    # The title is what a screen reader says first on a new page, and what the tabs and history show:
    # an older version and a comparison had the story's current page's title.
    page = watched.page
    log_in(page, app_server)
    titles: dict[str, list[str]] = {}
    for path in _story_paths(app_server):
        if "?q=" in path:
            continue
        page.goto(app_server.url + path)
        titles.setdefault(page.title(), []).append(path)
    assert {title: paths for title, paths in titles.items() if len(paths) > 1} == {}


def test_each_rewrite_this_scene_says_which_scene_it_rewrites(
    app_server: AppServer, watched: Watched
) -> None:
    # A screen reader listing the page's controls heard "Rewrite this scene" under every scene alike.
    page = watched.page
    log_in(page, app_server)
    page.goto(f"{app_server.url}/stories/{app_server.ids['two_versions_story']}/")
    headings = page.locator(".screenplay .scene-heading").all_text_contents()
    names = [
        summary.evaluate("summary => summary.textContent")
        for summary in page.locator("summary", has_text="Rewrite this scene").all()
    ]
    assert len(headings) >= 2
    assert names == [
        f"Rewrite this scene (scene {number}, {heading})" for number, heading in enumerate(headings, 1)
    ]


def test_a_refused_rename_or_delete_puts_keyboard_focus_on_the_field_at_fault(
    app_server: AppServer, watched: Watched
) -> None:
    # The page came back with focus at its top: a screen reader read the page again from the start and
    # the writer had to find which field was refused.
    page = watched.page
    log_in(page, app_server)
    page.goto(f"{app_server.url}/stories/{app_server.ids['two_versions_story']}/settings/")
    title, plot = page.get_by_label("Title"), page.get_by_label("Plot")
    title.fill("")
    plot.fill("")
    page.get_by_role("button", name="Save").click()
    expect(title).to_be_focused()
    expect(title).to_have_accessible_description(re.compile(r"\S"))
    title.fill("A story with two versions")
    page.get_by_role("button", name="Save").click()
    expect(plot).to_be_focused()
    expect(plot).to_have_accessible_description(re.compile(r"\S"))
    page.get_by_role("button", name="Delete the story").click()
    box = page.get_by_role("checkbox")
    expect(box).to_be_focused()
    expect(box).to_have_attribute("aria-invalid", "true")


def test_each_side_of_a_comparison_says_which_version_it_is(app_server: AppServer, watched: Watched) -> None:
    # A screen reader reads the two columns one after the other: nothing said which version each was.
    page = watched.page
    log_in(page, app_server)
    page.goto(f"{app_server.url}/stories/{app_server.ids['two_versions_story']}/?compare=1,2")
    sides = page.locator(".compare-side:has(.scene)")
    assert sides.count() >= 2
    for side in sides.all():
        number = "1" if "compare-left" in (side.get_attribute("class") or "") else "2"
        assert side.evaluate("side => side.textContent.trim()").startswith(f"Version {number}:")


# Records what the persona editor's live preview tells a screen reader, and counts its answers.
PERSONA_PREVIEW_SAID = """() => {
  window.__said = {texts: [], answers: 0};
  const box = document.querySelector(".persona-live-preview");
  const live = box.querySelector("[role=status]");
  if (live) new MutationObserver(() => window.__said.texts.push(live.textContent)).observe(
    live, {childList: true, characterData: true, subtree: true});
  new MutationObserver(() => { window.__said.answers += 1; }).observe(
    box.querySelector(".persona-live-status"), {childList: true, characterData: true, subtree: true});
}"""


def test_the_persona_editor_tells_a_screen_reader_when_the_context_goes_over_its_budget(
    app_server: AppServer, watched: Watched
) -> None:
    # The live preview struck through the context's cut end and said so in plain text, which a screen
    # reader user typing in a field never heard; its meter had no name.
    page = watched.page
    _editor_log_in(page, app_server)
    page.goto(app_server.url + "/admin/personas/personaconfig/?q=noir-detective")
    page.locator("#result_list tbody th a").first.click()
    expect(page.get_by_role("meter", name="Tokens of the budget")).to_be_attached()
    page.evaluate(PERSONA_PREVIEW_SAID)
    backstory = page.locator("textarea[name=backstory]")
    texts = ["He remembers every rainy night. " * 120, "He remembers every rainy night. " * 130, "A cop."]
    for answers, text in enumerate(texts, 1):
        backstory.fill(text)
        page.wait_for_function("count => window.__said.answers >= count", arg=answers)
    said = [text for text in page.evaluate("window.__said.texts") if text]
    assert len(said) == 2
    assert said[0].startswith("Over the token budget (") and said[0].endswith(
        "the end of the context is cut."
    )
    assert said[1] == "Within the token budget."


def test_the_create_pages_headings_go_down_one_level_at_a_time(
    app_server: AppServer, watched: Watched
) -> None:
    # "Selected" was an h3 straight under the page's h1: a screen reader's list of headings skipped a level.
    page = watched.page
    log_in(page, app_server)
    page.goto(app_server.url + "/stories/new/")
    results = Axe().run(page, options={"runOnly": ["heading-order"]})
    assert results.response["violations"] == []
    expect(page.get_by_role("heading", name="Selected", level=2)).to_be_visible()


def test_retrys_countdown_does_not_rename_the_focused_button_every_second(
    app_server: AppServer, watched: Watched
) -> None:
    # "Retry in 5 s", "Retry in 4 s"...: the focused button's name changed every second, and a screen
    # reader reads a focused control's new name out.
    page = watched.page
    refusal = {"type": "error", "code": "busy", "message": "Busy.", "retryable": True, "retry_after": 4}
    page.route_web_socket(
        "**/ws/generate/", lambda socket: socket.on_message(lambda message: socket.send(json.dumps(refusal)))
    )
    _create_page_filled_in(page, app_server)
    generate(page)
    retry = page.locator("#retry")
    expect(retry).to_be_focused()
    names = []
    for left in ["3", "2"]:
        expect(retry).to_have_text(f"Retry in {left} s")
        names.append(retry.evaluate("button => button.getAttribute('aria-label') || button.textContent"))
    assert names[0] == names[1] and names[0].startswith("Retry, possible again at ")
    expect(retry).to_have_text("Retry", timeout=10_000)
    expect(retry).to_have_accessible_name("Retry")

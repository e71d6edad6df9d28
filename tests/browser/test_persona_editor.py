"""The persona editor in Chromium (issue 18): the live context preview follows what the editor types,
before anything is saved, under the Content-Security-Policy; a save reaches the next context read, and
a second editor's stale save is refused."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import Browser, FilePayload, Page, expect

from tests.browser.conftest import AppServer, Watched
from tests.browser.test_editor import TEXT_LEFT

pytestmark = pytest.mark.browser

EDITOR = ("editor", "editor-demo-2026")
ADMIN = ("admin", "admin-demo-2026")


def _admin_log_in(page: Page, server: AppServer, credentials: tuple[str, str]) -> None:
    page.goto(server.url + "/admin/login/")
    page.get_by_label("Username").fill(credentials[0])
    page.get_by_label("Password").fill(credentials[1])
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Site administration")).to_be_visible()


def _open_persona(page: Page, server: AppServer, name: str) -> None:
    page.goto(server.url + f"/admin/personas/personaconfig/?q={name}")
    page.locator("#result_list tbody th a").first.click()


def test_typing_in_the_voice_field_updates_the_live_preview_before_saving(
    app_server: AppServer, watched: Watched
) -> None:
    page = watched.page
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    _admin_log_in(page, app_server, EDITOR)
    _open_persona(page, app_server, "noir-detective")
    live = page.locator(".persona-live-context")
    expect(live).to_have_text("")
    page.locator("textarea[name=voice]").fill("")
    page.locator("textarea[name=voice]").press_sequentially("Whispers only, in the rain.")
    expect(live).to_contain_text("Voice: Whispers only, in the rain.")
    expect(page.locator(".persona-live-status")).to_contain_text("tokens (estimate).")
    assert float(page.locator(".persona-live-meter").evaluate("meter => meter.value")) > 0
    # Over the budget: where it is cut shows, the text the model would not get struck through.
    page.locator("textarea[name=backstory]").fill("He remembers every rainy night. " * 120)
    expect(page.locator(".persona-live-cut")).to_contain_text("He remembers every rainy night.")
    expect(live).to_contain_text("[shortened]")
    # Not saved: the saved context below still has the old voice.
    expect(page.locator(".field-context_preview .persona-context")).not_to_contain_text("Whispers only")
    assert violations == []
    assert watched.errors == []


def test_a_save_reaches_the_next_context_read_and_a_second_editors_stale_save_is_refused(
    app_server: AppServer, watched: Watched, browser: Browser
) -> None:
    # teen-hacker: a persona no other browser test reads.
    first = watched.page
    second_context = browser.new_context(viewport={"width": 1280, "height": 900})
    second = second_context.new_page()
    try:
        _admin_log_in(first, app_server, EDITOR)
        _admin_log_in(second, app_server, ADMIN)
        _open_persona(first, app_server, "teen-hacker")
        _open_persona(second, app_server, "teen-hacker")
        first.locator("textarea[name=voice]").fill("Types in lowercase, talks in memes.")
        first.get_by_role("button", name="Save", exact=True).click()
        expect(first.locator(".messagelist .success")).to_contain_text("was changed successfully")
        first.goto(app_server.url + "/api/personas/contexts/?names=teen-hacker")
        expect(first.locator("body")).to_contain_text("Voice: Types in lowercase, talks in memes.")
        second.locator("textarea[name=voice]").fill("Speaks only in riddles.")
        second.get_by_role("button", name="Save", exact=True).click()
        expect(second.locator(".errornote, .errorlist").first).to_be_visible()
        expect(second.locator("body")).to_contain_text(
            "Another editor saved this persona after you opened it"
        )
        expect(second.locator("textarea[name=voice]")).to_have_value("Speaks only in riddles.")
        first.goto(app_server.url + "/api/personas/contexts/?names=teen-hacker")
        expect(first.locator("body")).to_contain_text("Voice: Types in lowercase, talks in memes.")
        assert watched.errors == []
    finally:
        second_context.close()


def _context_read(page: Page, server: AppServer, name: str) -> str:
    """The batch context read the writer's generation uses (GET /api/personas/contexts/), as JSON."""
    answer = page.request.get(
        server.url + f"/api/personas/contexts/?names={name}", headers={"Accept": "application/json"}
    )
    assert answer.ok, answer.text()
    (context,) = answer.json()["contexts"]
    return str(context["context"])


def test_a_voice_change_is_previewed_saved_served_shown_as_a_diff_and_reverted(
    app_server: AppServer, watched: Watched
) -> None:
    # kyoto-poet: a persona no other browser test reads. load_demo started its history.
    page = watched.page
    _admin_log_in(page, app_server, EDITOR)
    _open_persona(page, app_server, "kyoto-poet")
    old_voice = page.locator("textarea[name=voice]").input_value()
    assert "Voice: " + old_voice in _context_read(page, app_server, "kyoto-poet")
    page.locator("textarea[name=voice]").fill("Counts syllables aloud, always seventeen.")
    expect(page.locator(".persona-live-context")).to_contain_text(
        "Voice: Counts syllables aloud, always seventeen."
    )
    page.get_by_role("button", name="Save and continue editing").click()
    expect(page.locator(".messagelist .success")).to_contain_text("was changed successfully")
    assert "Voice: Counts syllables aloud, always seventeen." in _context_read(page, app_server, "kyoto-poet")

    page.get_by_role("link", name="History").click()
    latest = page.locator(".persona-revision").first
    expect(latest).to_contain_text("by editor")
    voice_row = latest.locator("tr", has=page.locator("th", has_text="Voice"))
    expect(voice_row.locator("del")).to_have_text(old_voice)
    expect(voice_row.locator("ins")).to_have_text("Counts syllables aloud, always seventeen.")
    page.locator(".persona-revision", has_text="Loaded from the demo file.").locator("h2 a").click()
    expect(page.locator(".persona-diff")).to_contain_text("Voice")
    page.get_by_role("button", name="Revert to this revision").click()
    expect(page.locator(".messagelist .success")).to_contain_text("was reverted to the chosen revision")
    expect(page.locator("textarea[name=voice]")).to_have_value(old_voice)
    # The cache served the saved text above; the revert is served by the very next read.
    context = _context_read(page, app_server, "kyoto-poet")
    assert "Voice: " + old_voice in context and "syllables" not in context
    assert watched.errors == []


def test_a_right_to_left_override_in_an_imported_cards_name_does_not_reverse_the_previews_words(
    app_server: AppServer, watched: Watched
) -> None:
    # A Character Card comes from anywhere: U+202E left open in its name drew the preview's heading
    # "Mallory (mallory): new" as "wen :(yrollam) yrollaM", its key and status backwards; then a PDI
    # (U+2069) before it closed the <bdi> that isolated the name, and the same again.
    page = watched.page
    _admin_log_in(page, app_server, EDITOR)
    page.goto(app_server.url + "/admin/personas/personaconfig/import/")
    card = {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {"name": "\u2069\u202eMallory", "description": "A spy."},
    }
    upload: FilePayload = {
        "name": "\u202ecard.json",
        "mimeType": "application/json",
        "buffer": json.dumps(card).encode(),
    }
    page.locator("input[type=file]").set_input_files(files=[upload])
    page.locator("#content form [type=submit]").click()
    heading = page.locator(".persona-import-plan h2")
    expect(heading).to_have_text("\u2068\u202eMallory\u2069 (mallory): new")
    status_left = page.evaluate(TEXT_LEFT, [".persona-import-plan h2", "new"])
    assert page.evaluate(TEXT_LEFT, [".persona-import-plan h2", "(mallory)"]) < status_left
    assert page.evaluate(TEXT_LEFT, [".persona-import-plan h2", "Mallory"]) < status_left
    # The file's name is the uploader's too: "Import ‮card.json: what it would change" was drawn backwards.
    assert page.evaluate(TEXT_LEFT, ["#content h1", "Import"]) < page.evaluate(
        TEXT_LEFT, ["#content h1", "card"]
    )
    assert page.evaluate(TEXT_LEFT, ["#content h1", "card"]) < page.evaluate(
        TEXT_LEFT, ["#content h1", "what it"]
    )
    assert watched.dialogs == [] and watched.errors == []


def test_the_live_preview_says_the_editor_is_signed_out_and_works_again_after_signing_in(
    app_server: AppServer, watched: Watched
) -> None:
    # Signed out in another tab, the preview read the login page's HTML as JSON and showed "The preview
    # is unavailable (Unexpected token '<', ...)"; signed in again there, the CSRF token this page was
    # served with was refused (Django's CSRF page, the same words).
    # western-outlaw: a persona whose text no other browser test reads (this one saves it).
    page = watched.page
    _admin_log_in(page, app_server, EDITOR)
    _open_persona(page, app_server, "western-outlaw")
    other = page.context.new_page()
    other.goto(app_server.url + "/admin/")
    other.get_by_role("button", name="Log out").click()
    expect(other.get_by_role("heading", name="Log in")).to_be_visible()

    voice = page.locator("textarea[name=voice]")
    voice.fill("Typed while signed out.")
    status = page.locator(".persona-live-status")
    expect(status).to_have_text(
        "You are signed out: sign in again in another tab (your edits on this page are kept until you "
        "leave it), then type on to see the preview."
    )

    _admin_log_in(other, app_server, EDITOR)
    other.close()
    voice.fill("Typed after signing in again.")
    expect(page.locator(".persona-live-context")).to_contain_text("Voice: Typed after signing in again.")
    expect(status).to_contain_text("tokens (estimate).")
    # The edits were kept, as the message said, and they save: the page's own CSRF token was refused.
    page.get_by_role("button", name="Save and continue editing").click()
    expect(page.locator(".messagelist .success")).to_contain_text("was changed successfully")
    expect(voice).to_have_value("Typed after signing in again.")
    assert watched.dialogs == [] and watched.errors == []


def test_a_save_after_the_session_ended_keeps_the_edits_on_the_page_and_says_so(
    app_server: AppServer, watched: Watched
) -> None:
    # Was: the session ended after the editor had typed (signed out elsewhere, or expired), Save went to
    # the login page, which dropped the form: every edit was lost. western-outlaw: read by no other test
    # but the signed-out preview's, which sets its own voice before it reads it.
    page = watched.page
    _admin_log_in(page, app_server, EDITOR)
    _open_persona(page, app_server, "western-outlaw")
    voice = page.locator("textarea[name=voice]")
    voice.fill("Counts syllables on her fingers.")
    expect(page.locator(".persona-live-context")).to_contain_text("Counts syllables on her fingers.")
    other = page.context.new_page()
    other.goto(app_server.url + "/admin/")
    other.get_by_role("button", name="Log out").click()
    expect(other.get_by_role("heading", name="Log in")).to_be_visible()

    page.get_by_role("button", name="Save and continue editing").click()
    refused = page.get_by_role("alert").filter(has_text="nothing was saved")
    expect(refused).to_have_text(
        "You are signed out, so nothing was saved: sign in again in another tab (your edits on this page "
        "are kept until you leave it), then save again."
    )
    assert "/change/" in page.url
    expect(voice).to_have_value("Counts syllables on her fingers.")

    _admin_log_in(other, app_server, EDITOR)
    other.close()
    page.get_by_role("button", name="Save and continue editing").click()
    expect(page.locator(".messagelist .success")).to_contain_text("was changed successfully")
    expect(voice).to_have_value("Counts syllables on her fingers.")
    assert watched.dialogs == [] and watched.errors == []


def test_a_right_to_left_override_in_a_display_name_does_not_reverse_the_admins_own_words(
    app_server: AppServer, watched: Watched
) -> None:
    # "The persona “Mallory ‮evil (mallory-rlo)” was added successfully." drew everything after the
    # override backwards: the key, and Django's sentence (".woleb niaga ti tide yam uoY ...").
    page = watched.page
    _admin_log_in(page, app_server, EDITOR)
    page.goto(app_server.url + "/admin/personas/personaconfig/add/")
    page.locator("#id_name").fill("mallory-rlo")
    page.locator("#id_display_name").fill("Mallory \u202eevil")
    page.locator("#id_description").fill("A spy.")
    page.get_by_role("button", name="Save and continue editing").click()
    message = ".messagelist .success"
    expect(page.locator(message)).to_contain_text("was added successfully")
    key_left = page.evaluate(TEXT_LEFT, [message, "(mallory-rlo)"])
    assert page.evaluate(TEXT_LEFT, [message, "The persona"]) < key_left
    assert key_left < page.evaluate(TEXT_LEFT, [message, "was added successfully"])
    for where in ["#content h2", ".breadcrumbs"]:
        assert page.evaluate(TEXT_LEFT, [where, "Mallory"]) < page.evaluate(
            TEXT_LEFT, [where, "(mallory-rlo)"]
        )
    assert watched.dialogs == [] and watched.errors == []

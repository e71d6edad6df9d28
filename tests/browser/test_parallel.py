"""Parallel mode in Chromium: choose it, watch the outline and scenes fill in, then rewrite one scene."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import Browser, expect

from tests.browser.conftest import (
    HELD_SOCKETS,
    AppServer,
    Watched,
    log_in,
    screenshot,
    signed_out_in_another_tab,
    sockets_release,
)
from tests.browser.test_generate import generate_story

pytestmark = pytest.mark.browser

PLOT = "A chef loses her sense of taste. An outlaw offers a cure. The town votes on the stew."


def test_a_writer_generates_in_parallel_mode_then_rewrites_one_scene(
    app_server: AppServer, watched: Watched
) -> None:
    page = watched.page
    generate_story(
        page, app_server, personas=[("nonna", "Nonna Lucia"), ("outlaw", "Dusty")], plot=PLOT, mode="parallel"
    )

    # The outline gives every scene its place before it is written.
    page.wait_for_function("() => window.__stream.firstScene !== null")
    saved = page.get_by_role("link", name="Open the story (version 1)")
    expect(saved).to_be_visible()
    streamed = [h.strip() for h in page.locator("#stream-scenes .scene-heading").all_inner_texts()]
    assert len(streamed) == 3 and page.locator("#stream-scenes .scene-pending").count() == 0
    screenshot(page, "create-page-parallel")

    saved.click()
    expect(page.locator(".version-heading")).to_contain_text("Version 1")
    shown = [h.strip() for h in page.locator(".screenplay .scene-heading").all_inner_texts()]
    assert shown == streamed, "the saved screenplay keeps the outline's order"

    # The rewrite streams over the socket, then the page opens the new version.
    frames: list[str] = []
    page.on("websocket", lambda socket: socket.on("framereceived", lambda frame: frames.append(str(frame))))
    page.get_by_text("Rewrite this scene").nth(1).click()
    page.get_by_label("What should change?").nth(1).fill("Make it <quieter>.")
    page.get_by_role("button", name="Rewrite scene 2 as a new version").click()
    expect(page.locator(".rewrite-status").nth(1)).to_contain_text("Rewriting scene 2")
    expect(page.locator(".version-heading")).to_contain_text("Version 2")
    assert any('"type": "scene_delta"' in frame for frame in frames), frames[:5]
    assert any('"type": "saved"' in frame for frame in frames)
    expect(page.locator(".screenplay .scene").nth(1)).to_contain_text("This time: Make it <quieter>.")
    assert [h.strip() for h in page.locator(".screenplay .scene-heading").all_inner_texts()] == shown
    screenshot(page, "story-page-rewritten-scene")

    # Watched again on the create page (the Watch link of /runs/), the rewrite ends with the scenes it
    # did not touch said so, not "being written" for ever.
    [accepted] = [json.loads(f) for f in frames if '"type": "accepted"' in f]
    page.goto(f"{app_server.url}/stories/new/?run={accepted['run_id']}")
    expect(page.locator("#stream-stats")).to_contain_text("Finished")
    expect(page.locator("#stream-scenes .scene")).to_have_count(3)
    assert page.locator("#stream-scenes .scene-pending").count() == 0
    expect(page.locator("#stream-scenes .scene-note")).to_have_count(2)
    expect(page.locator("#stream-scenes .scene-note").first).to_have_text(
        "Not rewritten in this run: unchanged in the saved version."
    )
    assert watched.dialogs == [] and watched.errors == []


def test_without_javascript_the_rewrite_form_still_posts(app_server: AppServer, browser: Browser) -> None:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        log_in(page, app_server)
        page.goto(app_server.url + f"/stories/{app_server.ids['rewritable_story']}/")
        page.get_by_text("Rewrite this scene").first.click()
        page.get_by_role("button", name="Rewrite scene 1 as a new version").click()
        expect(page.locator(".messages")).to_contain_text("Scene 1 rewritten: this is version")
    finally:
        context.close()


def test_rewrite_instructions_pasted_over_the_limit_are_kept_whole_and_refused_by_name(
    app_server: AppServer, watched: Watched
) -> None:
    page = watched.page
    log_in(page, app_server)
    page.goto(app_server.url + f"/stories/{app_server.ids['rewritable_story']}/")
    shown = page.locator(".version-heading").inner_text()
    page.get_by_text("Rewrite this scene").first.click()
    instructions = page.get_by_label("What should change?").first
    # A browser cuts a paste at maxlength without a word, and counts UTF-16 units: emoji fitted half.
    emoji = "\U0001f3ac" * 1_500  # 1,500 characters as the server counts them: within its 2,000
    instructions.focus()
    page.keyboard.insert_text(emoji)
    assert instructions.input_value() == emoji
    too_long = "Make the chef quieter and the outlaw louder. " * 50  # 2,250 characters
    instructions.fill("")
    instructions.focus()
    page.keyboard.insert_text(too_long)
    assert instructions.input_value() == too_long
    page.get_by_role("button", name="Rewrite scene 1 as a new version").click()
    expect(page.locator(".rewrite-status").first).to_contain_text(
        "instructions are longer than 2000 characters"
    )
    assert instructions.input_value() == too_long  # nothing saved, nothing lost: the page stays
    assert page.locator(".version-heading").inner_text() == shown
    assert watched.dialogs == [] and watched.errors == []


def test_cancelling_a_rewrite_before_its_socket_opens_starts_nothing(
    app_server: AppServer, watched: Watched
) -> None:
    # Was: Cancel did nothing while the socket was connecting, and the rewrite then started and was paid.
    page = watched.page
    # A slow network: each socket is made only when the test says so, and is CONNECTING until then.
    page.add_init_script(HELD_SOCKETS)
    sent: list[str] = []
    page.on("websocket", lambda socket: socket.on("framesent", lambda payload: sent.append(str(payload))))
    log_in(page, app_server)
    page.goto(app_server.url + f"/stories/{app_server.ids['rewritable_story']}/")
    shown = page.locator(".version-heading").inner_text()
    page.get_by_text("Rewrite this scene").first.click()
    page.get_by_role("button", name="Rewrite scene 1 as a new version").click()
    page.get_by_role("button", name="Cancel the rewrite").first.click()
    status = page.locator(".rewrite-status").first
    expect(status).to_have_text("Cancelling…")
    sockets_release(page)
    expect(status).to_have_text("Cancelled: nothing was saved.")
    expect(page.get_by_role("button", name="Rewrite scene 1 as a new version")).to_be_enabled()
    assert sent == [], "the rewrite was asked for after its cancel"
    page.reload()
    assert page.locator(".version-heading").inner_text() == shown
    assert watched.dialogs == [] and watched.errors == []


def test_a_rewrite_refused_as_signed_out_offers_a_sign_in_and_works_after_it(
    app_server: AppServer, watched: Watched
) -> None:
    # The page said "sign in to generate screenplays" and nothing more: no way to sign in that kept the
    # instructions typed (the create page offers one), so a writer left the page and lost them.
    page = watched.page
    story = app_server.ids["rewritten_signed_out_story"]
    log_in(page, app_server)
    page.goto(f"{app_server.url}/stories/{story}/")
    page.get_by_text("Rewrite this scene").first.click()
    form = page.locator("form.scene-rewrite-form").first
    form.get_by_label("What should change?").fill("Make it rain.")
    signed_out_in_another_tab(page, app_server).close()

    form.get_by_role("button", name="Rewrite scene 1 as a new version").click()
    expect(form.get_by_role("status")).to_contain_text("sign in")
    with page.expect_popup() as popup_info:
        form.get_by_role("link", name="Sign in again").click()
    login = popup_info.value
    login.get_by_label("Username").fill("writer")
    login.get_by_label("Password").fill("writer-demo-2026")
    login.get_by_role("button", name="Log in").click()
    login.wait_for_url(f"**/stories/{story}/")
    login.close()

    expect(form.get_by_label("What should change?")).to_have_value("Make it rain.")
    form.get_by_role("button", name="Rewrite scene 1 as a new version").click()
    page.wait_for_url(f"**/stories/{story}/?version=2")
    assert watched.errors == []

"""Creating a story in Chromium: pick personas, write a plot, watch it stream over the WebSocket.

The live server runs the offline model, paced so a generation takes a couple of seconds; everything
else (pipeline, consumer, personas API, save) is the real code.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import (
    HELD_SOCKETS,
    WRITER,
    AppServer,
    Watched,
    log_in,
    screenshot,
    signed_out_in_another_tab,
    sockets_release,
)
from tests.browser.test_editor import TEXT_LEFT

pytestmark = pytest.mark.browser

PLOT = "A detective and a starship captain must share one stolen map to get home before the storm."

# Installed before Generate is clicked: records what the page showed when the first scene appeared,
# and samples the progress bar, so the assertions do not race the stream.
OBSERVE_STREAM = """() => {
  const scenes = document.getElementById("stream-scenes");
  const progress = document.getElementById("stream-progress");
  window.__stream = {firstScene: null, progress: [], mostPending: 0, announced: []};
  const announcer = document.getElementById("announcer");
  new MutationObserver(() => window.__stream.announced.push(announcer.textContent)).observe(
    announcer, {childList: true, characterData: true, subtree: true});
  new MutationObserver(() => {
    const pending = scenes.querySelectorAll(".scene-pending").length;
    window.__stream.mostPending = Math.max(window.__stream.mostPending, pending);
  }).observe(scenes, {childList: true, subtree: true});
  const sample = setInterval(() => {
    window.__stream.progress.push(progress.value);
    if (!document.getElementById("stream-saved").hidden) clearInterval(sample);
  }, 40);
  new MutationObserver((records, observer) => {
    if (!scenes.querySelector(".scene:not(.scene-pending)")) return;
    window.__stream.firstScene = {
      savedVisible: !document.getElementById("stream-saved").hidden,
      heading: scenes.querySelector(".scene-heading").textContent,
    };
    observer.disconnect();
  }).observe(scenes, {childList: true, subtree: true});
}"""


def pick_persona(page: Page, search: str, display_name: str) -> None:
    # Wait for this search's results, so the click lands on them and no request is left in flight.
    with page.expect_response(lambda response: f"search={search}" in response.url):
        page.get_by_label("Find personas").fill(search)
    option = page.locator(".persona-option", has_text=display_name)
    option.click()
    expect(option).to_have_attribute("aria-pressed", "true")


def chip(page: Page, name: str) -> Any:
    return page.locator(f'.persona-chip[data-name="{name}"]')


def count_requests(page: Page, fragment: str) -> list[str]:
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url) if fragment in request.url else None)
    return seen


def generate(page: Page, *, button: str = "Generate") -> None:
    page.evaluate(OBSERVE_STREAM)
    page.get_by_role("button", name=button).click()


def generate_story(
    page: Page, server: AppServer, *, personas: list[tuple[str, str]], plot: str, mode: str = ""
) -> None:
    """Log in as the writer, fill in the create page (personas as (search, display name)), Generate."""
    log_in(page, server)
    page.goto(server.url + "/stories/new/")
    for search, display_name in personas:
        pick_persona(page, search, display_name)
    page.get_by_label("Plot").fill(plot)
    if mode:
        page.get_by_label("Writing mode").select_option(mode)
    generate(page)


def test_a_writer_generates_a_story_and_watches_it_stream(app_server: AppServer, watched: Watched) -> None:
    page = watched.page
    log_in(page, app_server)
    contexts = count_requests(page, "/api/personas/contexts/")
    page.goto(app_server.url + "/stories/new/")

    pick_persona(page, "marlowe", "Sam Marlowe")
    pick_persona(page, "captain", "Captain Imani Okafor")
    expect(chip(page, "noir-detective").locator(".context-preview")).to_contain_text("Cynical on the surface")
    expect(chip(page, "starship-captain").locator(".context-preview")).to_contain_text("Decisive")
    summary = page.locator(".persona-option", has_text="Captain Imani Okafor").locator(".persona-summary")
    expect(summary).to_have_text("Commander of a deep-space survey ship, calm under fire, hates waste.")
    fetched = len(contexts)
    assert fetched >= 1

    # Removing and re-adding a persona shows its preview again from the session cache: no request.
    chip(page, "noir-detective").get_by_role("button", name="Remove Sam Marlowe").click()
    pick_persona(page, "marlowe", "Sam Marlowe")
    expect(chip(page, "noir-detective").locator(".context-preview")).to_contain_text("Cynical on the surface")
    assert len(contexts) == fetched

    page.get_by_label("Plot").fill(PLOT)
    expect(page.locator("#plot-count")).to_contain_text(f"{len(PLOT)} / ")
    page.get_by_label("Title").fill("The stolen map")
    expect(page.get_by_label("Model", exact=True)).to_have_value("offline")
    assert page.get_by_label("Model", exact=True).locator("option:checked").inner_text() == "offline model"
    generate(page)

    page.wait_for_function("() => window.__stream.firstScene !== null")
    first = page.evaluate("window.__stream.firstScene")
    assert first["savedVisible"] is False, "the first scene must be on screen before the story is saved"
    assert first["heading"].strip()
    screenshot(page, "create-page-streaming")

    saved = page.get_by_role("link", name="Open the story (version 1)")
    expect(saved).to_be_visible()
    samples = page.evaluate("window.__stream.progress")
    moving = [value for value in samples if value > 0]
    assert len(set(moving)) >= 2 and moving == sorted(moving), f"progress did not move forward: {samples}"
    expect(page.locator("#stream-stats")).to_contain_text("Finished")
    # Screen readers hear each scene as it is written, then the save.
    announced = page.evaluate("window.__stream.announced")
    assert f"Scene 1 written: {first['heading']}" in announced
    assert "Saved as version 1." in announced

    saved.click()
    expect(page.get_by_role("heading", level=1)).to_have_text("The stolen map")
    expect(page.locator(".version-heading")).to_contain_text("Version 1")
    cast = page.locator(".cast")
    expect(cast).to_contain_text("Sam Marlowe")
    expect(cast).to_contain_text("Captain Imani Okafor")
    assert page.locator(".screenplay .scene").count() >= 1
    version_row = page.locator("table.versions tbody tr")
    expect(version_row).to_have_count(1)
    expect(version_row).to_contain_text("offline model")
    expect(version_row).to_contain_text("out")
    expect(version_row).to_contain_text("$0.00")
    screenshot(page, "story-page")
    with page.expect_download() as download:
        page.get_by_role("link", name="Fountain").click()
    assert download.value.suggested_filename.endswith(".fountain")
    assert watched.dialogs == [] and watched.errors == []


def test_regenerating_makes_version_2_and_the_comparison_shows_both(
    app_server: AppServer, watched: Watched
) -> None:
    page = watched.page
    generate_story(
        page,
        app_server,
        personas=[("nonna", "Nonna Lucia"), ("outlaw", "Dusty")],
        plot="A grandmother and an outlaw run an inn where the stew is the only law.",
    )
    persona_requests = count_requests(page, "/api/personas/")
    page.get_by_role("link", name="Open the story (version 1)").click()
    expect(page.locator(".version-heading")).to_contain_text("Version 1")
    # Reading a story costs no persona request; opening "Regenerate" loads the picker.
    page.wait_for_load_state("networkidle")
    assert persona_requests == []

    page.locator("#regenerate > summary").click()
    # Same cast and plot to start with, both editable.
    expect(chip(page, "grandmother-chef")).to_be_visible()
    expect(chip(page, "western-outlaw")).to_be_visible()
    plot = page.get_by_label("Plot")
    expect(plot).to_have_value("A grandmother and an outlaw run an inn where the stew is the only law.")
    plot.fill("A grandmother and an outlaw run an inn. A rival cook arrives at midnight.")
    generate(page, button="Generate a new version")
    page.get_by_role("link", name="Open the story (version 2)").click()
    expect(page.locator(".version-heading")).to_contain_text("Version 2")
    rows = page.locator("table.versions tbody tr")
    expect(rows).to_have_count(2)

    page.get_by_role("link", name="Compare with v2").click()
    expect(page.get_by_role("heading", name="Comparing version 1 and version 2")).to_be_visible()
    assert page.locator(".compare-left .scene").count() >= 1
    assert page.locator(".compare-right .scene").count() >= 1
    assert watched.dialogs == [] and watched.errors == []


def test_cancel_stops_the_stream_and_saves_nothing(app_server: AppServer, watched: Watched) -> None:
    page = watched.page
    log_in(page, app_server)
    stories_before = page.locator(".story-item").count()
    page.goto(app_server.url + "/stories/new/")
    pick_persona(page, "halcyon", "HALCYON")
    page.get_by_label("Plot").fill(
        " ".join(
            f"Floor {n} of the tower goes dark and the building AI explains why, politely." for n in range(12)
        )
    )
    page.get_by_label("Length").select_option(index=page.get_by_label("Length").locator("option").count() - 1)
    generate(page)
    expect(page.locator("#stream-raw-all")).not_to_be_empty()
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#stream-stats")).to_have_text("Cancelled. Nothing was saved.")
    raw_at_cancel = page.locator("#stream-raw-all").inner_text()
    page.wait_for_timeout(1000)
    assert page.locator("#stream-raw-all").inner_text() == raw_at_cancel, "text kept arriving after cancel"
    expect(page.locator("#stream-saved")).to_be_hidden()

    page.goto(app_server.url + "/")
    assert page.locator(".story-item").count() == stories_before
    page.goto(app_server.url + "/runs/")
    expect(page.locator("tbody tr").first.locator(".status")).to_have_text("Cancelled")


def test_cancel_pressed_while_the_socket_is_connecting_asks_for_nothing(
    app_server: AppServer, watched: Watched
) -> None:
    # Was: the page said "Cancelling…", then sent the generate once the socket opened, and the run it
    # had been told to cancel was written, saved and paid for.
    page = watched.page
    page.add_init_script(HELD_SOCKETS)
    sent: list[str] = []
    page.on("websocket", lambda socket: socket.on("framesent", lambda payload: sent.append(str(payload))))
    log_in(page, app_server)
    page.goto(app_server.url + "/stories/new/")
    pick_persona(page, "halcyon", "HALCYON")
    page.get_by_label("Plot").fill(PLOT)
    generate(page)
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#stream-stats")).to_have_text("Cancelled. Nothing was saved.")
    expect(page.get_by_role("button", name="Generate")).to_be_enabled()
    expect(page.get_by_role("button", name="Generate")).to_be_focused()
    with page.expect_event("websocket") as opened:
        sockets_release(page)
    opened.value.wait_for_event("close")
    assert sent == [], "the generation was asked for after its cancel"
    expect(page.locator("#stream-stats")).to_have_text("Cancelled. Nothing was saved.")
    assert page.get_by_label("Plot").input_value() == PLOT
    assert watched.dialogs == [] and watched.errors == []


def test_markup_in_personas_and_plots_is_shown_as_text_and_never_runs(
    app_server: AppServer, watched: Watched
) -> None:
    page = watched.page
    log_in(page, app_server)
    page.goto(app_server.url + "/stories/new/")
    pick_persona(page, "trickster", "Trickster")
    trickster = chip(page, "trickster")
    expect(trickster.locator(".persona-chip-name")).to_have_text(
        "<img src=x onerror=alert('persona-name')>Trickster"
    )
    expect(trickster.locator(".context-preview")).to_contain_text("<script>alert('persona-context')</script>")
    pick_persona(page, "marlowe", "Sam Marlowe")
    plot = "<img src=x onerror=alert('plot')> and <script>alert('plot-script')</script> walk into a bar."
    page.get_by_label("Plot").fill(plot)
    page.get_by_label("Title").fill("<script>alert('title')</script>")
    generate(page)
    page.get_by_role("link", name="Open the story (version 1)").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("<script>alert('title')</script>")
    expect(page.locator("p.plot")).to_have_text(plot)
    expect(page.locator(".cast")).to_contain_text("<img src=x onerror=alert('persona-name')>Trickster")
    assert page.locator("main img").count() == 0
    page.reload()
    assert watched.dialogs == [], watched.dialogs
    assert watched.errors == [], watched.errors


def test_a_refused_generation_shows_why_and_retry_resends_the_same_request(
    app_server: AppServer, watched: Watched
) -> None:
    page = watched.page
    sent: list[str | bytes] = []
    page.on("websocket", lambda socket: socket.on("framesent", lambda payload: sent.append(payload)))
    log_in(page, app_server, ("busy-writer", "busy-writer-pw-2026"))
    page.goto(app_server.url + "/stories/new/")
    pick_persona(page, "halcyon", "HALCYON")
    page.get_by_label("Plot").fill("The lifts stop between floors and the building AI starts a negotiation.")
    generate(page)

    error = page.locator("#stream-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("at a time")
    expect(page.locator("#alert-announcer")).to_contain_text("at a time")
    retry = page.get_by_role("button", name="Retry")
    expect(retry).to_be_visible()
    expect(page.get_by_role("button", name="Cancel")).to_be_hidden()
    assert len(sent) == 1

    retry.click()
    expect(retry).to_be_visible()
    page.wait_for_function("() => !document.getElementById('stream-error').hidden")
    assert len(sent) == 2 and json.loads(sent[1]) == json.loads(sent[0])
    assert json.loads(sent[0])["personas"] == ["rogue-ai"]
    assert watched.errors == []


def test_parallel_writing_shows_the_outline_then_fills_in_every_scene(
    app_server: AppServer, watched: Watched
) -> None:
    page = watched.page
    generate_story(
        page,
        app_server,
        personas=[("mika", "Mika Sato"), ("marlowe", "Sam Marlowe")],
        plot="A teenage hacker hires a detective. The job is a missing server. The server is in a church."
        " The priest knows more than he says. Everyone meets at the docks at dawn.",
        mode="parallel",
    )
    expect(page.get_by_role("link", name="Open the story (version 1)")).to_be_visible()
    stream = page.evaluate("window.__stream")
    assert stream["mostPending"] >= 2, "the outline's scenes should show before they are written"
    expect(page.locator("#stream-scenes .scene-pending")).to_have_count(0)
    streamed = page.locator("#stream-scenes .scene-heading").all_inner_texts()
    assert len(streamed) >= 3

    page.get_by_role("link", name="Open the story (version 1)").click()
    expect(page.locator(".version-heading")).to_contain_text("Version 1")
    assert page.locator(".screenplay .scene-heading").all_inner_texts() == streamed
    assert watched.dialogs == [] and watched.errors == []


def test_keyboard_focus_follows_generate_cancel_and_retry_instead_of_falling_to_the_page_top(
    app_server: AppServer, watched: Watched
) -> None:
    page = watched.page
    log_in(page, app_server)
    page.goto(app_server.url + "/stories/new/")
    pick_persona(page, "halcyon", "HALCYON")
    page.get_by_label("Plot").fill("The building AI holds the lifts until the tenants agree on a story.")
    generate_button = page.get_by_role("button", name="Generate")
    generate_button.focus()
    page.keyboard.press("Enter")
    # Generate is disabled while the run goes on: focus moves to Cancel, not to the top of the page.
    cancel = page.get_by_role("button", name="Cancel")
    expect(cancel).to_be_focused()
    expect(page.locator("#stream-raw-all")).not_to_be_empty()
    page.keyboard.press("Enter")
    expect(page.locator("#stream-stats")).to_have_text("Cancelled. Nothing was saved.")
    expect(generate_button).to_be_focused()

    page.get_by_role("button", name="Log out").click()
    log_in(page, app_server, ("busy-writer", "busy-writer-pw-2026"))
    page.goto(app_server.url + "/stories/new/")
    pick_persona(page, "halcyon", "HALCYON")
    page.get_by_label("Plot").fill("The lifts stop between floors and the building AI starts a negotiation.")
    generate_button.focus()
    page.keyboard.press("Enter")
    retry = page.get_by_role("button", name="Retry")
    expect(retry).to_be_focused()
    page.keyboard.press("Enter")
    expect(retry).to_be_focused()
    assert watched.dialogs == [] and watched.errors == []


def test_keyboard_focus_stays_in_the_cast_when_a_persona_is_removed(
    app_server: AppServer, watched: Watched
) -> None:
    # Remove goes with its chip: focus fell to the page's top, and a screen reader started over there.
    page = watched.page
    log_in(page, app_server)
    page.goto(app_server.url + "/stories/new/")
    pick_persona(page, "halcyon", "HALCYON")
    pick_persona(page, "nonna", "Nonna Lucia")
    page.get_by_role("button", name="Remove HALCYON").focus()
    page.keyboard.press("Enter")
    expect(chip(page, "rogue-ai")).to_have_count(0)
    expect(page.get_by_role("button", name="Remove Nonna Lucia")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#persona-selected-empty")).to_be_visible()
    expect(page.get_by_label("Find personas")).to_be_focused()
    assert watched.dialogs == [] and watched.errors == []


def test_a_search_with_a_lone_surrogate_is_sent_and_answered(app_server: AppServer, watched: Watched) -> None:
    # Was: encodeURIComponent threw on it, and the picker stayed on "Searching…" with an uncaught error.
    page = watched.page
    log_in(page, app_server)
    page.goto(app_server.url + "/stories/new/")
    with page.expect_response(lambda response: "search=noir%EF%BF%BD" in response.url):
        page.get_by_label("Find personas").evaluate(
            "box => { box.value = 'noir\\ud800'; box.dispatchEvent(new Event('input', {bubbles: true})); }"
        )
    expect(page.locator("#persona-results-status")).to_have_text("No persona matches that search.")
    with page.expect_response(lambda response: "search=marlowe" in response.url):
        page.get_by_label("Find personas").fill("marlowe")
    expect(page.locator(".persona-option", has_text="Sam Marlowe")).to_be_visible()
    assert watched.errors == []


def test_a_writer_signed_out_meanwhile_is_offered_a_sign_in_and_gets_the_plot_back(
    app_server: AppServer, watched: Watched
) -> None:
    # The page said "sign in to generate screenplays" and offered nothing; signing in meant reloading,
    # which lost the plot and the cast.
    page = watched.page
    log_in(page, app_server)
    page.goto(app_server.url + "/stories/new/")
    pick_persona(page, "halcyon", "HALCYON")
    plot = "A lighthouse keeper finds the lamp lit every night by someone else."
    page.get_by_label("Plot").fill(plot)
    signed_out_in_another_tab(page, app_server).close()
    generate(page)

    error = page.locator("#stream-error")
    expect(error).to_be_visible()
    sign_in = error.get_by_role("link", name="Sign in again")
    expect(sign_in).to_be_visible()
    assert sign_in.get_attribute("target") == "_blank"
    assert sign_in.get_attribute("href") == "/accounts/login/?next=/stories/new/"

    page.reload()  # to the login page, which comes back here
    page.get_by_label("Username").fill(WRITER[0])
    page.get_by_label("Password").fill(WRITER[1])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(app_server.url + "/stories/new/")
    expect(page.get_by_label("Plot")).to_have_value(plot)
    expect(chip(page, "rogue-ai")).to_be_visible()
    assert watched.errors == []


def test_a_right_to_left_plot_streams_right_to_left_with_its_punctuation_at_its_end(
    app_server: AppServer, watched: Watched
) -> None:
    # The streamed scenes' paragraphs took the page's direction: an Arabic action's closing "!" was
    # drawn at its right, where a reader of Arabic starts (the saved story's page likewise).
    page = watched.page
    generate_story(
        page, app_server, personas=[("marlowe", "Sam Marlowe")], plot="ليلى تبحث عن أخيها! الليل طويل."
    )
    expect(page.get_by_role("link", name="Open the story (version 1)")).to_be_visible()
    action = "#stream-scenes .scene:first-child .sp-action"
    expect(page.locator(action).first).to_have_text("ليلى تبحث عن أخيها!")
    assert page.evaluate(TEXT_LEFT, [action, "!"]) < page.evaluate(TEXT_LEFT, [action, "ليلى"])
    assert watched.dialogs == [] and watched.errors == []

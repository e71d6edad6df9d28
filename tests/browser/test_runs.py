"""A run outlives the page's socket (issue 16): a reload re-attaches, a cut socket resumes by itself.

The live server runs the offline model; the runs are long (the longest length) so that there is a
middle to reload in and to cut the socket in.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from playwright.sync_api import Page, WebSocketRoute, expect

from tests.browser.conftest import AppServer, Watched, log_in
from tests.browser.test_generate import chip, generate, generate_story, pick_persona

pytestmark = pytest.mark.browser

LONG_PLOT = " ".join(
    f"On floor {n} the lift stops and the building's AI tells the tenants a story instead." for n in range(12)
)


def _start_long_run(page: Page, server: AppServer) -> None:
    log_in(page, server)
    page.goto(server.url + "/stories/new/")
    pick_persona(page, "halcyon", "HALCYON")
    page.get_by_label("Plot").fill(LONG_PLOT)
    page.get_by_label("Length").select_option(index=page.get_by_label("Length").locator("option").count() - 1)
    generate(page)


def _scene_indexes(page: Page) -> list[str]:
    return page.locator("#stream-scenes > .scene").evaluate_all("nodes => nodes.map(n => n.dataset.index)")


def test_a_reload_mid_generation_redraws_the_scenes_so_far_and_follows_to_the_save(
    app_server: AppServer, watched: Watched
) -> None:
    page = watched.page
    _start_long_run(page, app_server)
    expect(page.locator("#stream-scenes .scene").first).to_be_visible()
    expect(page).to_have_url(re.compile(r"/stories/new/\?run=\d+$"))
    run_id = page.url.rsplit("=", 1)[1]
    shown = len(_scene_indexes(page))

    page.reload()
    # The scenes written so far are drawn again from the run's log, then the run goes on live.
    expect(page.locator("#stream-scenes .scene").nth(shown - 1)).to_be_visible()
    expect(page.locator("#stream-saved")).to_be_visible(timeout=60_000)
    expect(page.locator("#saved-link")).to_have_attribute("href", re.compile(r"^/stories/\d+/$"))
    indexes = _scene_indexes(page)
    assert indexes == [str(n) for n in range(len(indexes))], "a scene is missing or drawn twice"
    assert len(indexes) > shown
    assert page.url.endswith(f"?run={run_id}")
    page.goto(app_server.url + "/runs/")
    row = page.locator("tbody tr", has_text=f"#{run_id}")
    expect(row.locator(".status")).to_have_text("Succeeded")
    assert watched.dialogs == [] and watched.errors == []


# Every text the create page's polite live region is given, in order (each assignment of textContent
# adds its text node), for the test to read what a screen reader would be told.
HEARD = """
window.heard = [];
document.addEventListener("DOMContentLoaded", function () {
  const region = document.getElementById("announcer");
  if (!region) { return; }
  new MutationObserver(function (records) {
    records.forEach(function (record) {
      record.addedNodes.forEach(function (node) { window.heard.push(node.textContent); });
    });
  }).observe(region, { childList: true });
});
"""


def _heard(page: Page) -> list[str]:
    return [text for text in page.evaluate("window.heard") if text]


def test_a_reload_mid_generation_says_where_the_run_stands_once_then_announces_live_events(
    app_server: AppServer, watched: Watched
) -> None:
    # Was: the reload's replay announced every event at once ("Writing has started.", "Outline ready",
    # "Scene 1 written"...), each cutting the last, so a screen reader heard only the last of them.
    page = watched.page
    page.add_init_script(HEARD)
    _start_long_run(page, app_server)
    expect(page.locator("#stream-scenes .scene:not(.scene-pending)").first).to_be_visible()

    page.reload()
    page.wait_for_function("() => window.heard.some(Boolean)")
    summary = re.compile(
        r"^(The screenplay is being written: \d+ of \d+ scenes done\."
        r"|Scene \d+ of the screenplay is being written; \d+ scenes? done\.)$"
    )
    first = _heard(page)[0]
    assert summary.match(first), _heard(page)
    # Live events are announced again after it, each as it comes, to the save.
    expect(page.locator("#stream-saved")).to_be_visible(timeout=60_000)
    later = _heard(page)[1:]
    assert later and later[-1].startswith("Saved as version "), later
    assert all(re.match(r"^(Scene \d+ written: |Saved as version \d+\.)", text) for text in later), later
    assert watched.dialogs == [] and watched.errors == []


def _elapsed(page: Page) -> float:
    found = re.search(r"([\d.]+) s elapsed", page.locator("#stream-stats").inner_text())
    assert found, page.locator("#stream-stats").inner_text()
    return float(found.group(1))


def test_after_a_reload_the_elapsed_time_is_the_runs_own_at_once(
    app_server: AppServer, watched: Watched
) -> None:
    # Was: the clock started again from the replayed `accepted` (0.0 s) and caught up only at the next
    # `progress`; a model thinking, or waiting for its first token, sends none for a long while.
    page = watched.page
    _start_long_run(page, app_server)
    expect(page.locator("#stream-stats")).to_have_text(re.compile(r"\b([3-9]|\d{2,})\.\d s elapsed"))

    def without_progress(socket: WebSocketRoute) -> None:
        # No `progress` reaches the page from now on: what a model that writes nothing for a while
        # sends, replayed or live.
        server = socket.connect_to_server()
        server.on_message(
            lambda message: None if '"type": "progress"' in str(message) else socket.send(message)
        )

    page.route_web_socket("**/ws/generate/", without_progress)
    page.reload()
    expect(page.locator("#stream-scenes .scene:not(.scene-pending)").first).to_be_visible()
    assert _elapsed(page) >= 3.0
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#stream-stats")).to_have_text("Cancelled. Nothing was saved.")
    assert watched.dialogs == [] and watched.errors == []


def test_a_reload_mid_generation_keeps_the_plot_title_and_cast_in_the_form(
    app_server: AppServer, watched: Watched
) -> None:
    page = watched.page
    sent: list[dict[str, Any]] = []
    page.on(
        "websocket", lambda socket: socket.on("framesent", lambda payload: sent.append(json.loads(payload)))
    )
    log_in(page, app_server)
    page.goto(app_server.url + "/stories/new/")
    pick_persona(page, "halcyon", "HALCYON")
    page.get_by_label("Plot").fill(LONG_PLOT)
    page.get_by_label("Title").fill("Stories between floors")
    length = page.get_by_label("Length")
    length.select_option(index=length.locator("option").count() - 1)
    longest = length.input_value()
    generate(page)
    expect(page).to_have_url(re.compile(r"/stories/new/\?run=\d+$"))

    page.reload()
    # The run is followed again, and the form still holds what the writer asked for: nothing lost.
    expect(page.locator("#stream-raw-all")).not_to_be_empty()
    expect(page.get_by_label("Plot")).to_have_value(LONG_PLOT)
    expect(page.locator("#plot-count")).to_contain_text(f"{len(LONG_PLOT):,} / ")
    expect(page.get_by_label("Title")).to_have_value("Stories between floors")
    expect(page.get_by_label("Length")).to_have_value(longest)
    expect(chip(page, "rogue-ai").locator(".persona-chip-name")).to_have_text("HALCYON")
    expect(page.locator(".persona-chip")).to_have_count(1)

    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#stream-stats")).to_have_text("Cancelled. Nothing was saved.")
    page.get_by_role("button", name="Generate").click()
    page.wait_for_function("() => !document.getElementById('cancel').hidden")
    expect(page.locator("#stream-raw-all")).not_to_be_empty()
    requests = [message for message in sent if message["type"] == "generate"]
    assert len(requests) == 2 and requests[1] == requests[0], (
        "Generate after the reload asked for something else"
    )
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#stream-stats")).to_have_text("Cancelled. Nothing was saved.")
    assert watched.dialogs == [] and watched.errors == []


def test_a_cut_socket_reconnects_by_itself_and_resumes_after_its_last_event(
    app_server: AppServer, watched: Watched
) -> None:
    page = watched.page
    sockets: list[WebSocketRoute] = []
    sent: list[dict[str, Any]] = []

    def through(socket: WebSocketRoute) -> None:
        # A transparent proxy to the real server, which the test can cut from the page's side.
        server = socket.connect_to_server()

        def forward(message: str | bytes) -> None:
            sent.append(json.loads(message))
            server.send(message)

        socket.on_message(forward)
        sockets.append(socket)

    page.route_web_socket("**/ws/generate/", through)
    _start_long_run(page, app_server)
    expect(page.locator("#stream-scenes .scene").first).to_be_visible()
    sockets[0].close(code=4000, reason="network dropped")

    expect(page.locator("#stream-saved")).to_be_visible(timeout=60_000)
    assert len(sockets) >= 2, "the page did not reconnect"
    attach = next(message for message in sent if message["type"] == "attach")
    assert attach["after"] > 0 and isinstance(attach["run_id"], int)
    indexes = _scene_indexes(page)
    assert indexes == [str(n) for n in range(len(indexes))], "a scene is missing or drawn twice"
    assert [m["type"] for m in sent].count("generate") == 1
    assert watched.dialogs == [] and watched.errors == []


def test_a_refused_generate_after_a_run_leaves_no_run_in_the_address(
    app_server: AppServer, watched: Watched
) -> None:
    # Was: the finished run's ?run= stayed in the address bar, so a reload brought that old run back
    # in place of the writer's new request and its refusal.
    page = watched.page
    sockets: list[WebSocketRoute] = []

    def first_through_then_refused(socket: WebSocketRoute) -> None:
        sockets.append(socket)
        if len(sockets) == 1:
            socket.connect_to_server()
            return
        refusal = {
            "type": "error",
            "code": "rate_limited",
            "message": "30 generations an hour at most.",
            "retryable": True,
            "retry_after": 120,
        }
        socket.on_message(lambda message: socket.send(json.dumps(refusal)))

    page.route_web_socket("**/ws/generate/", first_through_then_refused)
    _start_long_run(page, app_server)
    expect(page).to_have_url(re.compile(r"/stories/new/\?run=\d+$"))
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#stream-stats")).to_have_text("Cancelled. Nothing was saved.")

    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#stream-error")).to_contain_text("30 generations an hour at most.")
    # Retry waits for the time the refusal gave (was: offered at once, for the same refusal).
    expect(page.locator("#retry")).to_be_disabled()
    expect(page.locator("#retry")).to_have_text("Retry in 2 min")
    expect(page.locator("#retry")).to_be_focused()  # focus stays on the run's controls
    page.locator("#retry").press("Enter")  # a press while waiting asks nothing
    expect(page.locator("#retry")).to_have_text("Retry in 2 min")
    expect(page).to_have_url(re.compile(r"/stories/new/$"))
    page.reload()
    expect(page.get_by_role("button", name="Generate")).to_be_enabled()
    expect(page.locator("#stream-stats")).not_to_have_text("Cancelled. Nothing was saved.")
    assert len(sockets) == 2, "the reload attached to the old run"
    assert watched.dialogs == []


def test_a_generate_refused_by_a_stopping_server_is_asked_again_on_a_new_socket(
    app_server: AppServer, watched: Watched
) -> None:
    # A server process in its graceful stop closes a socket that asks for a new run with 4503, before
    # starting anything; the page asks again on a new socket, which reaches a process that is serving.
    page = watched.page
    sockets: list[WebSocketRoute] = []
    sent: list[dict[str, Any]] = []

    def first_stopping_then_through(socket: WebSocketRoute) -> None:
        sockets.append(socket)
        if len(sockets) == 1:

            def stop(message: str | bytes) -> None:
                sent.append(json.loads(message))
                socket.close(code=4503)

            socket.on_message(stop)
            return
        server = socket.connect_to_server()

        def forward(message: str | bytes) -> None:
            sent.append(json.loads(message))
            server.send(message)

        socket.on_message(forward)

    page.route_web_socket("**/ws/generate/", first_stopping_then_through)
    log_in(page, app_server)
    page.goto(app_server.url + "/stories/new/")
    pick_persona(page, "halcyon", "HALCYON")
    page.get_by_label("Plot").fill("A lift that tells stories between floors.")
    generate(page)
    expect(page.locator("#stream-saved")).to_be_visible(timeout=60_000)
    assert len(sockets) == 2
    assert [message["type"] for message in sent] == ["generate", "generate"] and sent[0] == sent[1]
    expect(page.locator("#stream-error")).to_be_hidden()
    assert watched.dialogs == [] and watched.errors == []


def test_a_run_followed_on_a_stopping_server_is_attached_to_again_on_a_new_socket(
    app_server: AppServer, watched: Watched
) -> None:
    # make serve's graceful stop hands a run still going to another process, then closes the sockets
    # that follow it with 4503; the page attaches again at once, and says the server is restarting
    # (was: "Connection lost", as for a network fault).
    page = watched.page
    sockets: list[WebSocketRoute] = []
    sent: list[dict[str, Any]] = []

    def first_closed_after_a_scene(socket: WebSocketRoute) -> None:
        sockets.append(socket)
        server = socket.connect_to_server()

        def forward(message: str | bytes) -> None:
            sent.append(json.loads(message))
            server.send(message)

        socket.on_message(forward)
        if len(sockets) > 1:
            return

        def until_a_scene(message: str | bytes) -> None:
            socket.send(message)
            if json.loads(message)["type"] == "scene":
                socket.close(code=4503, reason="server_stopping")
                server.close()

        server.on_message(until_a_scene)

    page.route_web_socket("**/ws/generate/", first_closed_after_a_scene)
    # Every text the run's status line shows, from the page's start: the note lasts half a second.
    page.add_init_script(
        """window.__notes = [];
        document.addEventListener("DOMContentLoaded", () => {
          const stats = document.querySelector("#stream-stats");
          if (stats) new MutationObserver(() => window.__notes.push(stats.textContent))
            .observe(stats, {childList: true, characterData: true, subtree: true});
        });"""
    )
    _start_long_run(page, app_server)
    expect(page.locator("#stream-saved")).to_be_visible(timeout=90_000)
    notes = page.evaluate("window.__notes")
    assert any("The server is restarting; reconnecting" in note for note in notes), notes
    assert not any("Connection lost" in note for note in notes), notes
    assert len(sockets) == 2
    kinds = [message["type"] for message in sent]
    assert kinds == ["generate", "attach"], sent
    assert sent[1]["after"] > 0
    expect(page.locator("#stream-error")).to_be_hidden()
    assert watched.dialogs == [] and watched.errors == []


def test_retry_comes_back_once_the_refusals_wait_is_over(app_server: AppServer, watched: Watched) -> None:
    page = watched.page
    refusal = {
        "type": "error",
        "code": "busy",
        "message": "You already have 2 generation(s) running.",
        "retryable": True,
        "retry_after": 2,
    }
    page.route_web_socket(
        "**/ws/generate/", lambda socket: socket.on_message(lambda message: socket.send(json.dumps(refusal)))
    )
    log_in(page, app_server)
    page.goto(app_server.url + "/stories/new/")
    pick_persona(page, "halcyon", "HALCYON")
    page.get_by_label("Plot").fill("A lift that tells stories between floors.")
    generate(page)
    expect(page.locator("#retry")).to_have_text(re.compile(r"^Retry in [12] s$"))
    expect(page.locator("#retry")).to_be_disabled()
    expect(page.locator("#retry")).to_be_enabled(timeout=5_000)
    expect(page.locator("#retry")).to_have_text("Retry")
    assert watched.dialogs == [] and watched.errors == []


def test_the_story_pages_writing_notice_goes_once_the_run_it_names_has_ended_on_that_page(
    app_server: AppServer, watched: Watched
) -> None:
    page = watched.page
    generate_story(page, app_server, personas=[("halcyon", "HALCYON")], plot="The lift stops between floors.")
    page.get_by_role("link", name="Open the story (version 1)").click()
    page.locator("#regenerate > summary").click()
    expect(chip(page, "rogue-ai")).to_be_visible()
    page.get_by_label("Plot").fill(LONG_PLOT)
    length = page.get_by_label("Length")
    length.select_option(index=length.locator("option").count() - 1)
    generate(page, button="Generate a new version")
    expect(page).to_have_url(re.compile(r"/stories/\d+/\?run=\d+$"))
    run_id = page.url.rsplit("=", 1)[1]

    # Reloaded mid-run: the page says a new version is being written, and follows that run below.
    page.reload()
    notice = page.locator(".writing-notice")
    expect(notice).to_have_text(re.compile(rf"being written \(run #{run_id}\)"))
    expect(page.locator("#stream-saved")).to_be_visible(timeout=60_000)
    # The run ended on this very page: its notice no longer says a version is being written.
    expect(notice).to_have_count(0)
    assert watched.dialogs == [] and watched.errors == []


def test_a_plot_and_title_typed_but_not_sent_are_kept_across_a_reload_also_after_a_run(
    app_server: AppServer, watched: Watched
) -> None:
    page = watched.page
    log_in(page, app_server)
    page.goto(app_server.url + "/stories/new/")
    page.get_by_label("Plot").fill("A plot typed, then the tab reloaded by mistake.")
    page.get_by_label("Title").fill("Typed")
    page.reload()
    expect(page.get_by_label("Plot")).to_have_value("A plot typed, then the tab reloaded by mistake.")
    expect(page.get_by_label("Title")).to_have_value("Typed")
    expect(page.locator("#plot-count")).to_contain_text("47 / ")

    # After a run, the address names it and a reload follows it again: what the writer typed since
    # stays in the form, not the plot that run was asked with.
    pick_persona(page, "halcyon", "HALCYON")
    generate(page)
    expect(page.locator("#stream-saved")).to_be_visible(timeout=60_000)
    page.get_by_label("Plot").fill("The next plot, typed once the first run was done.")
    page.get_by_label("Title").fill("")
    page.reload()
    expect(page.locator("#stream-saved")).to_be_visible()
    expect(page.get_by_label("Plot")).to_have_value("The next plot, typed once the first run was done.")
    expect(page.get_by_label("Title")).to_have_value("")

    # It is this writer's: another one signing in in the same tab starts with an empty form.
    page.get_by_label("Title").fill("Private")
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/accounts/login/")
    log_in(page, app_server, ("intruder", "intruder-pw-2026"))
    page.goto(app_server.url + "/stories/new/")
    expect(page.locator("#persona-results-status")).not_to_have_text("Searching…")
    expect(page.get_by_label("Plot")).to_have_value("")
    expect(page.get_by_label("Title")).to_have_value("")
    assert watched.dialogs == [] and watched.errors == []


def test_the_writing_notice_of_a_story_open_in_another_tab_says_when_its_run_has_ended(
    app_server: AppServer, watched: Watched
) -> None:
    page = watched.page
    generate_story(page, app_server, personas=[("halcyon", "HALCYON")], plot="The lift stops on floor nine.")
    page.get_by_role("link", name="Open the story (version 1)").click()
    story_url = page.url
    page.locator("#regenerate > summary").click()
    expect(chip(page, "rogue-ai")).to_be_visible()
    page.get_by_label("Plot").fill(LONG_PLOT)
    length = page.get_by_label("Length")
    length.select_option(index=length.locator("option").count() - 1)
    generate(page, button="Generate a new version")
    expect(page).to_have_url(re.compile(r"/stories/\d+/\?run=\d+$"))
    run_id = page.url.rsplit("=", 1)[1]

    # The story open in another tab while that run writes: its notice, rendered then, used to say so
    # until a reload, long after the run had ended.
    other = page.context.new_page()
    other_errors: list[str] = []
    other.on("pageerror", lambda error: other_errors.append(str(error)))
    other.goto(story_url)
    notice = other.locator(".writing-notice")
    expect(notice).to_contain_text(f"being written (run #{run_id})")
    expect(page.locator("#stream-saved")).to_be_visible(timeout=60_000)
    expect(notice).to_contain_text(f"Run #{run_id} has written version 2", timeout=10_000)
    notice.get_by_role("link", name="Open it").click()
    expect(other.locator(".version-heading")).to_contain_text("Version 2")
    assert watched.dialogs == [] and watched.errors == [] and other_errors == []

"""generate.js against scripted WebSocket conversations that the offline server cannot produce on cue.

Playwright answers the page's /ws/generate/ socket itself here (the rest of the page is the live
server), to check how the page handles a save that fails after streaming, and the parallel-mode events
(an outline, then scenes and their text arriving out of order, placed by index).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, WebSocketRoute, expect

from tests.browser.conftest import AppServer, Watched, log_in

pytestmark = pytest.mark.browser


def scene(heading: str, line: str) -> dict[str, Any]:
    return {
        "heading": heading,
        "elements": [
            {"type": "action", "text": f"Inside {heading}."},
            {"type": "dialogue", "character": "HALCYON", "text": line},
        ],
    }


def script_socket(page: Page, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Answer every generate request with ``events``; returns the requests the page sent."""
    received: list[dict[str, Any]] = []

    def on_socket(socket: WebSocketRoute) -> None:
        def on_message(message: str | bytes) -> None:
            request = json.loads(message)
            received.append(request)
            if request.get("type") == "generate":
                for event in events:
                    socket.send(json.dumps(event))

        socket.on_message(on_message)

    page.route_web_socket("**/ws/generate/", on_socket)
    return received


def start(
    page: Page, server: AppServer, setup: Callable[[Page], list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    log_in(page, server)
    received = setup(page)
    page.goto(server.url + "/stories/new/")
    with page.expect_response(lambda response: "search=halcyon" in response.url):
        page.get_by_label("Find personas").fill("halcyon")
    page.locator(".persona-option", has_text="HALCYON").click()
    page.get_by_label("Plot").fill("The building AI locks the lobby.")
    page.get_by_role("button", name="Generate").click()
    return received


def test_a_failed_save_keeps_everything_that_was_streamed(app_server: AppServer, watched: Watched) -> None:
    events: list[dict[str, Any]] = [
        {"type": "accepted", "run_id": 7, "model": "offline", "max_tokens": 1024, "personas": ["rogue-ai"]},
        {"type": "delta", "text": '{"title": "Lockdown", "scenes": [{"heading": "INT. LOBBY - NIGHT"'},
        {"type": "scene", "index": 0, "scene": scene("INT. LOBBY - NIGHT", "The doors will stay closed.")},
        {"type": "delta", "text": ', {"heading": "INT. SERVER ROOM'},
        {"type": "progress", "output_tokens": 120, "elapsed_ms": 900, "eta_seconds": 1},
        {
            "type": "error",
            "code": "save_failed",
            "message": "The story could not be saved.",
            "retryable": True,
        },
    ]
    page = watched.page
    received = start(page, app_server, lambda p: script_socket(p, events))
    expect(page.locator("#stream-error")).to_contain_text("The story could not be saved.")
    expect(page.locator("#stream-error")).to_contain_text("kept below")
    expect(page.locator("#stream-scenes .scene-heading")).to_have_text(["INT. LOBBY - NIGHT"])
    expect(page.locator("#stream-scenes .sp-line")).to_have_text(["The doors will stay closed."])
    expect(page.locator("#stream-raw-details")).to_have_attribute("open", "")
    expect(page.locator("#stream-raw-all")).to_contain_text('"heading": "INT. SERVER ROOM')
    expect(page.locator("#stream-saved")).to_be_hidden()
    expect(page.get_by_role("button", name="Retry")).to_be_visible()
    assert received[0]["type"] == "generate" and received[0]["personas"] == ["rogue-ai"]
    assert watched.errors == []


def test_parallel_scenes_arriving_out_of_order_are_placed_by_index(
    app_server: AppServer, watched: Watched
) -> None:
    events: list[dict[str, Any]] = [
        {"type": "accepted", "run_id": 8, "model": "offline", "max_tokens": 1024, "personas": ["rogue-ai"]},
        {
            "type": "outline",
            "scenes": [{"index": i, "heading": h} for i, h in enumerate(["INT. A", "INT. B", "INT. C"])],
        },
        {"type": "scene_delta", "index": 2, "text": "third scene, being written"},
        {"type": "scene", "index": 2, "scene": scene("INT. C", "Third.")},
        {"type": "scene_delta", "index": 1, "text": "<img src=x onerror=alert('delta')>"},
        {"type": "scene", "index": 0, "scene": scene("INT. A", "First.")},
    ]
    page = watched.page
    start(page, app_server, lambda p: script_socket(p, events))
    headings = page.locator("#stream-scenes .scene-heading")
    expect(headings).to_have_text(["INT. A", "INT. B", "INT. C"])
    # Scene 1 is still being written: its placeholder shows its raw text, as text.
    pending = page.locator("#stream-scenes .scene-pending")
    expect(pending).to_have_count(1)
    expect(pending.locator(".raw")).to_have_text("<img src=x onerror=alert('delta')>")
    expect(page.locator("#stream-scenes .sp-line")).to_have_text(["First.", "Third."])
    assert page.locator("#stream img").count() == 0
    assert watched.dialogs == [] and watched.errors == []


def test_a_lost_connection_says_so_until_it_is_back_and_a_cancel_says_it_is_cancelling(
    app_server: AppServer, watched: Watched
) -> None:
    events = [
        {"type": "accepted", "run_id": 9, "model": "offline", "max_tokens": 1024, "personas": ["rogue-ai"]},
        {"type": "scene", "index": 0, "scene": scene("INT. LOBBY - NIGHT", "The doors will stay closed.")},
        {"type": "progress", "output_tokens": 120, "elapsed_ms": 900, "eta_seconds": 30},
    ]
    sockets: list[WebSocketRoute] = []

    def server_goes_away(page: Page) -> list[dict[str, Any]]:
        received: list[dict[str, Any]] = []

        def on_socket(socket: WebSocketRoute) -> None:
            sockets.append(socket)
            if len(sockets) > 1:
                socket.close(code=1006)  # the server is still away: every reconnect fails at once
                return

            def on_message(message: str | bytes) -> None:
                received.append(json.loads(message))
                if received[-1].get("type") == "generate":
                    for event in events:
                        socket.send(json.dumps(event))

            socket.on_message(on_message)

        page.route_web_socket("**/ws/generate/", on_socket)
        return received

    page = watched.page
    start(page, app_server, server_goes_away)
    stats = page.locator("#stream-stats")
    expect(page.locator("#stream-scenes .scene-heading")).to_have_text(["INT. LOBBY - NIGHT"])
    expect(stats).to_contain_text("about 30 s left")
    sockets[0].close(code=1006)
    expect(stats).to_contain_text("Connection lost; reconnecting in")
    # The progress ticker redraws the line four times a second: the news must survive it.
    page.wait_for_timeout(1_000)
    assert "Connection lost; reconnecting in" in stats.inner_text()
    assert "s left" not in stats.inner_text()
    # Cancelled while away: the page says so, and that the cancel waits for the connection.
    page.get_by_role("button", name="Cancel").click()
    expect(stats).to_contain_text("Cancelling")
    page.wait_for_timeout(1_000)
    assert "Cancelling" in stats.inner_text()
    assert watched.errors == []


def test_keyboard_focus_follows_a_scene_rewrite_to_its_cancel_and_back_instead_of_the_page_top(
    app_server: AppServer, watched: Watched
) -> None:
    # The rewrite button disables itself and Cancel hides itself when pressed: focus fell to the page's
    # top, so a keyboard user had to tab through the whole page to cancel, or to try again.
    def on_socket(socket: WebSocketRoute) -> None:
        def on_message(message: str | bytes) -> None:
            request = json.loads(message)
            if request["type"] == "regenerate_scene":
                socket.send(
                    json.dumps({"type": "accepted", "run_id": 11, "model": "offline", "max_tokens": 1024})
                )
                socket.send(json.dumps({"type": "scene_delta", "index": 0, "text": '{"heading": "INT. KIT'}))
            elif request["type"] == "cancel":
                socket.send(json.dumps({"type": "cancelled", "run_id": 11}))

        socket.on_message(on_message)

    page = watched.page
    log_in(page, app_server)
    page.route_web_socket("**/ws/generate/", on_socket)
    page.goto(f"{app_server.url}/stories/{app_server.ids['two_versions_story']}/")
    page.get_by_text("Rewrite this scene").first.click()
    form = page.locator("form.scene-rewrite-form").first
    form.get_by_label("What should change?").fill("Make it rain.")
    form.get_by_label("What should change?").press("Tab")
    rewrite = form.get_by_role("button", name="Rewrite scene 1 as a new version")
    expect(rewrite).to_be_focused()
    page.keyboard.press("Enter")
    expect(form.locator(".rewrite-stream")).to_have_text('{"heading": "INT. KIT')
    cancel = form.get_by_role("button", name="Cancel the rewrite")
    expect(cancel).to_be_focused()
    page.keyboard.press("Enter")
    expect(form.get_by_role("status")).to_have_text("Cancelled: nothing was saved.")
    expect(rewrite).to_be_focused()
    assert watched.errors == []


def test_the_text_being_written_reads_as_a_screenplay_not_as_json(
    app_server: AppServer, watched: Watched
) -> None:
    # The "Being written" pane showed the model's reply as it came: keys, quotes, braces and escapes. It
    # now shows the scene in progress as heading, action and dialogue, cut where the stream is.
    events: list[dict[str, Any]] = [
        {"type": "accepted", "run_id": 9, "model": "offline", "max_tokens": 1024, "personas": ["rogue-ai"]},
        {"type": "delta", "text": '{"title": "Lockdown", "logline": "A door.", "characters": [{"name": "HAL'},
        {"type": "delta", "text": 'CYON"}], "scenes": [{"heading": "INT. LOBBY - NIGHT"'},
        {"type": "scene", "index": 0, "scene": scene("INT. LOBBY - NIGHT", "The doors will stay closed.")},
        {
            "type": "delta",
            "text": ', {"heading": "INT. SERVER ROOM - NIGHT", "elements": [{"type": "action", ',
        },
        {
            "type": "delta",
            "text": '"text": "Fans roar.\\nLights blink."}, {"type": "dialogue", "character": "HALC',
        },
        {
            "type": "delta",
            "text": 'YON", "parenthetical": "calm", "text": "Nobody \\"leaves\\" <b>tonight</b> \\u00e9t\\u00',
        },
    ]
    page = watched.page
    start(page, app_server, lambda p: script_socket(p, events))
    pane = page.locator("#stream-raw")
    expect(pane.locator(".live-heading")).to_have_text("INT. SERVER ROOM - NIGHT")
    expect(pane.locator(".live-action")).to_have_text("Fans roar.\nLights blink.")
    expect(pane.locator(".live-character")).to_have_text("HALCYON")
    expect(pane.locator(".live-parenthetical")).to_have_text("(calm)")
    # Cut inside an escape: shown up to it; markup in the text is text.
    expect(pane.locator(".live-line")).to_have_text('Nobody "leaves" <b>tonight</b> ét')
    assert pane.locator("b").count() == 0
    assert '"heading"' not in pane.inner_text() and "{" not in pane.inner_text()
    # The finished scene is drawn in its place, and the reply as it came is kept whole below.
    expect(page.locator("#stream-scenes .scene-heading")).to_have_text(["INT. LOBBY - NIGHT"])
    expect(page.locator("#stream-raw-all")).to_contain_text('{"heading": "INT. SERVER ROOM - NIGHT"')
    assert watched.errors == []


def test_an_outline_being_written_shows_its_scenes_and_their_summaries(
    app_server: AppServer, watched: Watched
) -> None:
    events: list[dict[str, Any]] = [
        {"type": "accepted", "run_id": 10, "model": "offline", "max_tokens": 1024, "personas": ["rogue-ai"]},
        {"type": "outline_delta", "text": '{"title": "Lockdown", "logline": "A door.", "characters": [], '},
        {"type": "outline_delta", "text": '"scenes": [{"heading": "INT. A", "summary": "It starts.", '},
        {
            "type": "outline_delta",
            "text": '"characters": ["HALCYON"], "change": ""}, {"heading": "INT. B", "summ',
        },
    ]
    page = watched.page
    start(page, app_server, lambda p: script_socket(p, events))
    pane = page.locator("#stream-raw")
    expect(pane.locator(".live-heading")).to_have_text(["INT. A", "INT. B"])
    expect(pane.locator(".live-title")).to_have_text("Lockdown")
    expect(pane.locator(".live-summary")).to_have_text(["A door.", "It starts."])
    assert "change" not in pane.inner_text()
    assert watched.errors == []


def test_text_that_is_not_the_contracts_json_is_shown_as_it_came(
    app_server: AppServer, watched: Watched
) -> None:
    events: list[dict[str, Any]] = [
        {"type": "accepted", "run_id": 11, "model": "offline", "max_tokens": 1024, "personas": ["rogue-ai"]},
        {"type": "delta", "text": "Here is <i>a</i> screenplay:\n"},
    ]
    page = watched.page
    start(page, app_server, lambda p: script_socket(p, events))
    expect(page.locator("#stream-raw")).to_have_text("Here is <i>a</i> screenplay:\n")
    assert page.locator("#stream-raw i").count() == 0
    assert watched.errors == []

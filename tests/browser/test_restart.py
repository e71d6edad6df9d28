"""What a writer sees of a run after the server restarted, on the embedded defaults (no Redis).

Without Redis a run's event log is the server process's memory, so a restart loses it; the run's end
and its saved version are in the database. Each test has its own server (its own SQLite file), which
it stops and starts again, so the suite's shared server is never restarted under other tests.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import OwnServer, Watched, log_in
from tests.browser.test_generate import generate, pick_persona

pytestmark = pytest.mark.browser


def _generated(page: Page, server: OwnServer) -> str:
    """A finished run of the writer's, saved; its id."""
    log_in(page, server)
    page.goto(server.url + "/stories/new/")
    pick_persona(page, "halcyon", "HALCYON")
    page.get_by_label("Plot").fill("A lift that tells stories between floors, until one floor is missing.")
    generate(page)
    expect(page.locator("#stream-saved")).to_be_visible(timeout=60_000)
    return page.url.rsplit("=", 1)[1]


def _headings(page: Page, selector: str) -> list[str]:
    return page.locator(selector).evaluate_all("nodes => nodes.map(n => n.textContent.trim())")


def test_a_run_finished_before_a_restart_shows_its_saved_scenes_on_the_create_page(
    own_server: OwnServer, watched: Watched
) -> None:
    # Was: the page re-attached, got the run's end rebuilt from the database (`saved`, `done`) and
    # showed the story's link over an empty stream: no scene of the screenplay it had written.
    page, server = watched.page, own_server
    run_id = _generated(page, server)
    streamed = _headings(page, "#stream-scenes .scene-heading")
    assert streamed
    expect(page.locator("#stream-stats")).to_contain_text("Finished")
    finished = page.locator("#stream-stats").inner_text()

    server.restart()
    page.goto(f"{server.url}/stories/new/?run={run_id}")  # a reload, or the runs page's link
    expect(page.locator("#stream-saved")).to_be_visible()
    expect(page.locator("#stream-stats")).to_contain_text("Finished")
    # The run's own time and output, from its `done` (was: the time since the page loaded, "0.0 s").
    assert page.locator("#stream-stats").inner_text() == finished
    expect(page.locator("#stream-scenes .scene")).to_have_count(len(streamed))
    assert _headings(page, "#stream-scenes .scene-heading") == streamed
    assert page.locator("#stream-scenes .sp-action").count() > 0
    page.locator("#saved-link").click()
    # The click returns once the story's page has started to load, not once it is in.
    expect(page.locator(".screenplay .scene-heading")).to_have_count(len(streamed))
    assert _headings(page, ".screenplay .scene-heading") == streamed
    assert watched.dialogs == [] and watched.errors == []

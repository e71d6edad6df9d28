"""What a writer sees of a run after the server restarted, on the embedded defaults (no Redis).

Without Redis a run's event log is the server process's memory, so a restart loses it; the run's end
and its saved version are in the database. Each test has its own server (its own SQLite file), which
it stops and starts again, so the suite's shared server is never restarted under other tests.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ROOT, Watched, _server_env, log_in
from tests.browser.test_generate import generate, pick_persona
from tests.live_server import daphne_start, daphne_stop

pytestmark = pytest.mark.browser


@dataclass
class RestartableServer:
    """A live server that a test can restart: ``url`` changes (a new port), its database does not."""

    env: dict[str, str]
    log: Path
    url: str = ""
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.url, self.process = daphne_start(env=self.env, log=self.log)

    def stop(self) -> None:
        if self.process is not None:
            daphne_stop(self.process)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def server(chromium: str, tmp_path: Path) -> Iterator[RestartableServer]:
    env = _server_env(tmp_path / "db.sqlite3")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    subprocess.run(
        [sys.executable, "tests/browser/seed.py"], cwd=ROOT, env=env, check=True, capture_output=True
    )
    started = RestartableServer(env=env, log=tmp_path / "daphne.log")
    started.start()
    try:
        yield started
    finally:
        started.stop()


def _generated(page: Page, server: RestartableServer) -> str:
    """A finished run of the writer's, saved; its id."""
    log_in(page, server)  # type: ignore[arg-type]  # it reads only .url
    page.goto(server.url + "/stories/new/")
    pick_persona(page, "halcyon", "HALCYON")
    page.get_by_label("Plot").fill("A lift that tells stories between floors, until one floor is missing.")
    generate(page)
    expect(page.locator("#stream-saved")).to_be_visible(timeout=60_000)
    return page.url.rsplit("=", 1)[1]


def _headings(page: Page, selector: str) -> list[str]:
    return page.locator(selector).evaluate_all("nodes => nodes.map(n => n.textContent.trim())")


def test_a_run_finished_before_a_restart_shows_its_saved_scenes_on_the_create_page(
    server: RestartableServer, watched: Watched
) -> None:
    # Was: the page re-attached, got the run's end rebuilt from the database (`saved`, `done`) and
    # showed the story's link over an empty stream: no scene of the screenplay it had written.
    page = watched.page
    run_id = _generated(page, server)
    streamed = _headings(page, "#stream-scenes .scene-heading")
    assert streamed

    server.restart()
    page.goto(f"{server.url}/stories/new/?run={run_id}")  # a reload, or the runs page's link
    expect(page.locator("#stream-saved")).to_be_visible()
    expect(page.locator("#stream-stats")).to_contain_text("Finished")
    expect(page.locator("#stream-scenes .scene")).to_have_count(len(streamed))
    assert _headings(page, "#stream-scenes .scene-heading") == streamed
    assert page.locator("#stream-scenes .sp-action").count() > 0
    page.locator("#saved-link").click()
    assert _headings(page, ".screenplay .scene-heading") == streamed
    assert watched.dialogs == [] and watched.errors == []

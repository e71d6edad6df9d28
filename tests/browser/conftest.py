"""A live daphne server on the offline model, and Chromium driven by Playwright, for the browser tests.

The server runs in a subprocess on its own SQLite file (migrated and seeded first), whatever database
the rest of the suite uses, so the browser sees exactly what a writer would: HTTP, the WebSocket, static
files, sessions. The offline model is paced so that one generation takes a couple of seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from storyproject.env import envbool
from tests.live_server import daphne_start, daphne_stop, server_env

ROOT = Path(__file__).resolve().parents[2]
# docs/pages.md shows docs/screenshots/; a test run rewrites them only when asked, so `make test` leaves
# the working tree clean: UPDATE_SCREENSHOTS=1 make test.
SCREENSHOTS = (
    ROOT / "docs" / "screenshots"
    if os.environ.get("UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "story-screenshots"
)
CHROMIUM = "/usr/bin/chromium"
# Without Chromium the browser tests skip with this line; CI sets STORY_REQUIRE_BROWSER=1 (.ci/run) so
# that a machine without it fails instead: the pages must never go untested there.
CHROMIUM_MISSING = "install Debian's chromium: apt-get install chromium"
REQUIRE_BROWSER = "STORY_REQUIRE_BROWSER"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WRITER = ("writer", "writer-demo-2026")
# A slow network, for page.add_init_script: each WebSocket the page makes stays CONNECTING until the
# test calls sockets_release(page), which opens them for real with the listeners the page added.
HELD_SOCKETS = """
const Real = window.WebSocket;
window.socketsRelease = [];
window.WebSocket = function (url, protocols) {
  const listeners = [];
  const pending = {
    readyState: 0,
    send() { throw new Error("not open yet"); },
    close() {},
    addEventListener(type, listener) { listeners.push([type, listener]); },
  };
  window.socketsRelease.push(function () {
    const socket = new Real(url, protocols);
    listeners.forEach(function (entry) { socket.addEventListener(entry[0], entry[1]); });
    Object.defineProperty(pending, "readyState", { get: function () { return socket.readyState; } });
    pending.send = function (data) { socket.send(data); };
    pending.close = function (code) { socket.close(code); };
  });
  return pending;
};
Object.assign(window.WebSocket, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
"""


@dataclass
class AppServer:
    url: str
    ids: dict[str, int]
    log: Path


@dataclass
class Watched:
    """A page with every dialog and uncaught script error it produced."""

    page: Page
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _server_env(database: Path) -> dict[str, str]:
    return server_env(
        database=database,
        STORY_OFFLINE_TOKENS_PER_SECOND=os.environ.get("BROWSER_OFFLINE_TOKENS_PER_SECOND", "400"),
        # The pages' tests watch single mode's stream; parallel mode's test picks it on the form.
        STORY_DEFAULT_MODE="single",
    )


@dataclass
class OwnServer:
    """A live server of one test's own, on its own SQLite file: the test may restart it (``url`` then
    changes, a new port; its database does not) or change its data (``manage``) without touching the
    server the other tests share."""

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

    def manage(self, *args: str) -> str:
        """``manage.py ARGS`` on this server's database; its output."""
        command = [sys.executable, "manage.py", *args]
        done = subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout


def _migrated_and_seeded(env: dict[str, str]) -> dict[str, int]:
    python = sys.executable
    subprocess.run([python, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    seeded = subprocess.run(
        [python, "tests/browser/seed.py"], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )
    return dict(json.loads(seeded.stdout.strip().splitlines()[-1]))


def chromium_executable(*, path: str = CHROMIUM) -> str:
    """``path`` when Chromium is there; else skip the test, or fail it when STORY_REQUIRE_BROWSER is on."""
    if os.access(path, os.X_OK):
        return path
    reason = f"{path} not found: {CHROMIUM_MISSING}"
    if envbool(REQUIRE_BROWSER, False):
        pytest.fail(f"{reason} ({REQUIRE_BROWSER} is set, so the browser tests may not be skipped)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> str:
    # Session-scoped: checked once, and the skip (or failure) applies to every browser test.
    return chromium_executable()


@pytest.fixture(scope="session")
def app_server(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    # Needs ``chromium`` so that a machine without it never starts the server for nothing.
    workdir = tmp_path_factory.mktemp("live-server")
    env = _server_env(workdir / "db.sqlite3")
    ids = _migrated_and_seeded(env)
    url, process = daphne_start(env=env, log=workdir / "daphne.log")
    try:
        yield AppServer(url=url, ids=ids, log=workdir / "daphne.log")
    finally:
        daphne_stop(process)


@pytest.fixture
def own_server(chromium: str, tmp_path: Path) -> Iterator[OwnServer]:
    server = OwnServer(env=_server_env(tmp_path / "db.sqlite3"), log=tmp_path / "daphne.log")
    _migrated_and_seeded(server.env)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="package")
def browser(chromium: str) -> Iterator[Browser]:
    # Package-scoped: Playwright's sync API marks its event loop as running in this thread between
    # calls, so while it lives, asyncio.run() (the management commands) fails in every later test.
    # It is closed when the last browser test is done.
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _watch(page: Page) -> Watched:
    watched = Watched(page=page)

    def on_dialog(dialog: Any) -> None:
        watched.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda error: watched.errors.append(str(error)))
    return watched


@pytest.fixture
def watched(browser: Browser) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield _watch(page)
    context.close()


@pytest.fixture
def phone(browser: Browser) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield _watch(page)
    context.close()


def log_in(page: Page, server: AppServer | OwnServer, credentials: tuple[str, str] = WRITER) -> None:
    page.goto(server.url + "/accounts/login/")
    page.get_by_label("Username").fill(credentials[0])
    page.get_by_label("Password").fill(credentials[1])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(server.url + "/")


def signed_out_in_another_tab(page: Page, server: AppServer) -> Page:
    """The writer logs out in a new tab of ``page``'s browser; that tab, on the login page."""
    other = page.context.new_page()
    other.goto(server.url + "/")
    other.get_by_role("button", name="Log out").click()
    other.wait_for_url("**/accounts/login/")
    return other


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sockets_release(page: Page) -> None:
    """Open every socket that HELD_SOCKETS held back so far."""
    page.evaluate("window.socketsRelease.forEach(function (release) { release(); })")

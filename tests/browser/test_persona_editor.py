"""The persona editor in Chromium (issue 18): the live context preview follows what the editor types,
before anything is saved, under the Content-Security-Policy."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import AppServer, Watched

pytestmark = pytest.mark.browser

EDITOR = ("editor", "editor-demo-2026")


def test_typing_in_the_voice_field_updates_the_live_preview_before_saving(
    app_server: AppServer, watched: Watched
) -> None:
    page = watched.page
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(app_server.url + "/admin/login/")
    page.get_by_label("Username").fill(EDITOR[0])
    page.get_by_label("Password").fill(EDITOR[1])
    page.get_by_role("button", name="Log in").click()
    page.goto(app_server.url + "/admin/personas/personaconfig/?q=noir-detective")
    page.locator("#result_list tbody th a").first.click()
    live = page.locator(".persona-live-context")
    expect(live).to_have_text("")
    page.locator("textarea[name=voice]").fill("")
    page.locator("textarea[name=voice]").press_sequentially("Whispers only, in the rain.")
    expect(live).to_contain_text("Voice: Whispers only, in the rain.")
    expect(page.locator(".persona-live-status")).to_contain_text("tokens (estimate).")
    assert float(page.locator(".persona-live-meter").evaluate("meter => meter.value")) > 0
    # Not saved: the saved context below still has the old voice.
    expect(page.locator(".field-context_preview .persona-context")).not_to_contain_text("Whispers only")
    assert violations == []
    assert watched.errors == []

"""The Content-Security-Policy in a real browser: every page, the admin and Swagger UI work under it
with no violation reported (an inline script, style or foreign asset would be blocked and reported)."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import AppServer, Watched, log_in

pytestmark = pytest.mark.browser

ADMIN = ("admin", "admin-demo-2026")


def _violations(page: Page) -> list[str]:
    found: list[str] = []
    page.on(
        "console",
        lambda message: found.append(message.text) if "Content Security Policy" in message.text else None,
    )
    # The DOM event catches what the console may word differently.
    page.add_init_script(
        "window.__csp = []; document.addEventListener('securitypolicyviolation',"
        " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    return found


def _dom_violations(page: Page) -> Any:
    return page.evaluate("window.__csp")


def _failed_requests(page: Page) -> list[str]:
    """Every request of the page answered 4xx or 5xx (a missing icon, a stylesheet, a script)."""
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    return failed


def test_writer_pages_run_under_the_csp_without_violations(app_server: AppServer, watched: Watched) -> None:
    page = watched.page
    console = _violations(page)
    failed = _failed_requests(page)
    log_in(page, app_server)
    for path in ["/", "/stories/new/", f"/stories/{app_server.ids['seeded_story']}/", "/runs/", "/account/"]:
        response = page.goto(app_server.url + path)
        assert response is not None and response.status == 200, path
        assert "script-src 'self' 'nonce-" in response.headers["content-security-policy"]
        page.wait_for_load_state("networkidle")
        assert _dom_violations(page) == [], path
    assert console == []
    assert watched.errors == []
    assert failed == []


def test_swagger_ui_renders_the_schema_under_the_csp_from_local_assets(
    app_server: AppServer, watched: Watched
) -> None:
    page = watched.page
    console = _violations(page)
    foreign: list[str] = []
    page.on(
        "request",
        lambda request: foreign.append(request.url) if not request.url.startswith(app_server.url) else None,
    )
    page.goto(app_server.url + "/api/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Screenplay studio API")
    expect(page.locator(".opblock-summary-path", has_text="/api/stories/{id}/").first).to_be_visible()
    assert _dom_violations(page) == []
    assert console == []
    assert foreign == []


def test_the_admin_works_under_the_csp(app_server: AppServer, watched: Watched) -> None:
    page = watched.page
    console = _violations(page)
    failed = _failed_requests(page)
    page.goto(app_server.url + "/admin/login/")
    page.get_by_label("Username").fill(ADMIN[0])
    page.get_by_label("Password").fill(ADMIN[1])
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Site administration")).to_be_visible()
    page.goto(app_server.url + "/admin/personas/personaconfig/")
    page.locator("#result_list tbody th a").first.click()
    # The per-part form (personas/forms.py); the raw JSON sits under the collapsed "Advanced".
    expect(page.locator("textarea[name=voice]")).to_be_visible()
    page.wait_for_load_state("networkidle")
    assert _dom_violations(page) == []
    assert console == []
    assert watched.errors == []
    assert failed == []

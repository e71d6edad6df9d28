from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client


def _policy(response: Any) -> dict[str, str]:
    header = response["Content-Security-Policy"]
    return dict(part.strip().split(" ", 1) for part in header.split(";"))


@pytest.mark.parametrize("url", ["/admin/login/", "/api/docs/", "/no-such-page/"])
def test_every_page_has_a_strict_content_security_policy(db: None, url: str) -> None:
    response = Client().get(url)
    policy = _policy(response)
    assert re.fullmatch(r"'self' 'nonce-[\w-]{24}'", policy["script-src"])
    assert "unsafe-inline" not in response["Content-Security-Policy"]
    assert "unsafe-eval" not in response["Content-Security-Policy"]
    assert policy["frame-ancestors"] == "'none'"
    assert policy["object-src"] == "'none'"
    assert policy["base-uri"] == "'self'"
    assert policy["connect-src"] == "'self' ws://testserver wss://testserver"
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"


def test_the_nonce_changes_on_every_request(db: None) -> None:
    client = Client()
    first = _policy(client.get("/admin/login/"))["script-src"]
    second = _policy(client.get("/admin/login/"))["script-src"]
    assert first != second


def test_swagger_ui_needs_no_inline_script_and_no_cdn(db: None) -> None:
    page = Client().get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    nonce = _policy(page)["style-src"].split("'nonce-")[1].rstrip("'")
    # Every script is a file from our own origin; the one inline style block carries the nonce.
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, flags=re.S)
    assert scripts
    assert all('src="/' in attrs and not body.strip() for attrs, body in scripts)
    assert f'<style nonce="{nonce}">' in html
    assert "//cdn" not in html
    assert "https://" not in html
    init = Client().get("/api/docs/?script=")
    assert init.status_code == 200
    assert init["Content-Type"].startswith("application/javascript")
    assert "/api/schema/" in init.content.decode()


def test_the_static_assets_swagger_loads_are_served(db: None) -> None:
    html = Client().get("/api/docs/").content.decode()
    for src in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
        response = Client().get(src)
        assert response.status_code == 200, src


def test_swagger_ui_links_back_to_the_site_and_the_api_token(db: None) -> None:
    # The API's page had no link out of it: a writer who opened it from the README had to edit the URL.
    html = Client().get("/api/docs/").content.decode()
    assert '<a href="/">← Screenplay studio</a>' in html
    assert '<a href="/account/">Your API token</a>' in html

"""The project's own URLs outside the apps: the site icon."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client


@pytest.mark.django_db
def test_the_icon_is_linked_from_the_pages_and_favicon_ico_leads_to_it(writer: Any) -> None:
    # Without it every page, the admin and Swagger UI logged a 404 in the browser's console.
    client = Client()
    client.force_login(writer)
    page = client.get("/")
    assert page.status_code == 200
    assert b'<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in page.content
    redirect = client.get("/favicon.ico")
    assert (redirect.status_code, redirect["Location"]) == (301, "/static/favicon.svg")
    icon = client.get("/static/favicon.svg")
    assert icon.status_code == 200 and icon["Content-Type"] == "image/svg+xml"
    assert b"".join(icon.streaming_content).startswith(b"<svg")  # type: ignore[attr-defined]

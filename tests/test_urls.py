"""The project's own URLs outside the apps: the site icon, the 404 and 500 answers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.http import StreamingHttpResponse
from django.test import Client
from django.urls import get_resolver

from stories.models import Story
from storyproject.urls import server_error


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
    assert isinstance(icon, StreamingHttpResponse) and b"".join(icon).startswith(b"<svg")


@pytest.mark.django_db
def test_a_missing_page_is_the_sites_own_404_and_the_api_answers_json(
    writer: Any, other_writer: Any, settings: Any
) -> None:
    # Was Django's bare "Not Found" page (no way back), and an HTML page for a script asking for JSON.
    settings.DEBUG = False
    theirs = Story.objects.create(owner=other_writer, title="<b>Theirs</b>", plot="p")
    client = Client()
    client.force_login(writer)
    for path in (f"/stories/{theirs.pk}/", "/stories/999999/", "/no-such-page/"):
        page = client.get(path, HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8")
        assert page.status_code == 404, path
        assert page["Content-Type"].startswith("text/html")
        text = page.content.decode()
        assert "That page does not exist, or it is not yours." in text
        assert 'href="/"' in text and "Theirs" not in text and "writer" in text  # the site's header
    for path, accept in (
        ("/api/no-such-endpoint/", "text/html"),
        (f"/stories/{theirs.pk}/", "application/json"),
    ):
        answer = client.get(path, HTTP_ACCEPT=accept)
        assert (answer.status_code, answer.json()) == (404, {"detail": "Not found.", "code": "not_found"})


def test_a_server_error_is_a_page_that_needs_nothing_and_says_nothing_of_the_error(rf: Any) -> None:
    assert get_resolver().resolve_error_handler(500) is server_error
    page = server_error(rf.get("/stories/", HTTP_ACCEPT="text/html"))
    assert page.status_code == 500
    assert b"Something went wrong on our side" in page.content
    answer = server_error(rf.get("/api/stories/"))
    assert (answer.status_code, json.loads(answer.content)) == (
        500,
        {"detail": "The server failed; try again later.", "code": "server_error"},
    )


@pytest.mark.django_db
def test_a_form_opened_before_signing_in_again_is_refused_with_the_sites_own_page(writer: Any) -> None:
    # "Make this the current version" without JavaScript, after signing in again in another tab: the
    # form's CSRF token is stale, and the writer got Django's technical "CSRF verification failed" page.
    story = Story.objects.create(owner=writer, title="T", plot="p")
    client = Client(enforce_csrf_checks=True)
    client.force_login(writer)
    client.get("/")  # the token cookie the form was rendered with
    stale = client.cookies["csrftoken"].value
    client.cookies["csrftoken"] = "r" * 32  # signing in again (another tab) rotated it
    url = f"/stories/{story.pk}/versions/1/restore/"
    referer = f"http://testserver/stories/{story.pk}/?version=1"
    page = client.post(url, {"csrfmiddlewaretoken": stale}, HTTP_REFERER=referer, HTTP_ACCEPT="text/html")
    assert page.status_code == 403
    text = page.content.decode()
    assert "This form has expired" in text and "reload the page, and send it again" in text
    assert f'href="{referer}"' in text and "CSRF verification failed" not in text
    # A referer elsewhere is not linked; a script asking for JSON gets JSON.
    elsewhere = client.post(url, {"csrfmiddlewaretoken": stale}, HTTP_REFERER="https://evil.example/x")
    assert "evil.example" not in elsewhere.content.decode()
    answer = client.post(url, {"csrfmiddlewaretoken": stale}, HTTP_ACCEPT="application/json")
    assert (answer.status_code, answer.json()["code"]) == (403, "csrf_failed")

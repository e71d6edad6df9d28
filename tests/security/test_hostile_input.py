"""Hostile text in the URL, cookies and headers is a 400 naming the problem, never a 500 (issue 13).

PostgreSQL refuses NUL in text: before the check, each of these was a 500 in the PostgreSQL pass,
which runs these same tests.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client
from rest_framework.authtoken.models import Token

from storyproject.asgi import application


@pytest.fixture
def signed_in(user_factory: Any) -> Client:
    # A superuser with a token, so that every URL below reaches its view (and its queries).
    user = user_factory("boss", is_staff=True, is_superuser=True)
    client = Client(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    client.force_login(user)
    return client


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/api/personas/a%00b/", "The URL path contains a NUL (\\u0000) character"),
        ("/api/personas/a%00b/context/", "The URL path contains a NUL (\\u0000) character"),
        ("/api/personas/contexts/?names=a%00b", 'The query parameter "names" contains a NUL'),
        ("/api/personas/?search=x&a%00=1", "A query parameter name contains a NUL"),
    ],
)
def test_nul_in_an_api_url_is_a_json_400(signed_in: Client, url: str, message: str) -> None:
    response = signed_in.get(url)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_characters"
    assert response.json()["detail"].startswith(message)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/?q=a%00b", "The query parameter &quot;q&quot; contains a NUL"),
        ("/admin/personas/personaconfig/?q=a%00b", "The query parameter &quot;q&quot; contains a NUL"),
        ("/stories/1%00/", "The URL path contains a NUL"),
    ],
)
def test_nul_in_a_page_url_is_an_html_400(signed_in: Client, url: str, message: str) -> None:
    response = signed_in.get(url)
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    assert message in response.content.decode()


@pytest.mark.django_db
def test_nul_in_the_session_cookie_is_a_400(client: Client) -> None:
    # The cookie parser decodes the octal escape \000 into NUL; the session store then queried with it.
    client.cookies["sessionid"] = "abcdefgh\x00ij"
    response = client.get("/")
    assert response.status_code == 400
    assert "The cookie &quot;sessionid&quot; contains a NUL" in response.content.decode()


@pytest.mark.django_db
def test_nul_in_an_api_token_is_a_400() -> None:
    response = Client().get("/api/stories/", HTTP_AUTHORIZATION="Token ab\x00cd")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("The Authorization header contains a NUL")


@pytest.mark.django_db
def test_nul_in_a_json_text_field_is_one_400_naming_the_field(signed_in: Client) -> None:
    response = signed_in.post(
        "/api/stories/import/", {"fountain": "INT. A\x00"}, content_type="application/json"
    )
    assert response.status_code == 400
    assert json.dumps(response.json()).count("NUL") == 1
    assert "fountain contains a NUL" in json.dumps(response.json())


@pytest.mark.django_db
def test_ordinary_urls_are_untouched(signed_in: Client, persona_factory: Any) -> None:
    persona_factory("hero")
    assert signed_in.get("/api/personas/?search=h%C3%A9%0A").status_code == 200
    assert signed_in.get("/?q=caf%C3%A9").status_code == 200


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("path", "cookie"),
    [("/ws/generate/", b'sessionid="abcdefgh\\000ij"'), ("/ws/generate/?x=a%00b", b"")],
    ids=["session-cookie", "query"],
)
async def test_nul_in_a_websocket_handshake_is_refused_not_a_crash(
    path: str, cookie: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    # The same check on the WebSocket stack: Channels' session middleware queried with the cookie.
    headers = [(b"host", b"127.0.0.1:8000"), (b"origin", b"http://127.0.0.1:8000"), (b"cookie", cookie)]
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    await communicator.disconnect()
    assert not connected
    assert any("WebSocket handshake refused" in record.getMessage() for record in caplog.records)


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [False, True])
def test_more_query_parameters_than_django_reads_is_a_400_saying_so(
    signed_in: Client, settings: Any, debug: bool
) -> None:
    # Under DEBUG (make run's default) Django's debug page read the query again and raised again: daphne
    # answered "500 Exception inside application". Without it, the 400 said "invalid_characters".
    settings.DEBUG = debug
    query = "&".join(f"a{number}=1" for number in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1))
    response = signed_in.get(f"/api/personas/?{query}")
    assert response.status_code == 400
    assert response.json() == {
        "detail": "The request has more than 1000 query parameters (DATA_UPLOAD_MAX_NUMBER_FIELDS).",
        "code": "bad_request",
    }
    page = signed_in.get(f"/?{query}")
    assert page.status_code == 400
    assert "The request has more than 1000 query parameters" in page.content.decode()

"""The live context preview view (issue 18): the form's current values in, the exact context out."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client, override_settings

from personas.models import PersonaConfig

PREVIEW = "/admin/personas/personaconfig/preview/"


@pytest.mark.django_db
def test_the_preview_answers_the_exact_context_of_unsaved_values_and_saves_nothing(
    editor_client: Client, persona_factory: Any
) -> None:
    persona = persona_factory("hero", voice="Plain.", description="A hero.")
    data = {
        "persona_id": persona.pk,
        "voice": "Gravel, typed but not saved.",
        "description": "A hero.",
        "example_lines": "One.\r\nTwo.",
        "tags": "never, in, context",
        "config_data": '{"voice": "Plain.", "description": "A hero.", "private": {"notes": "SECRET"}}',
    }
    answer = editor_client.post(PREVIEW, data).json()
    assert answer == {
        "context": "Description: A hero.\n\nVoice: Gravel, typed but not saved.\n\nExample lines:\n- One.\n- Two.",
        "cut": "",
        "tokens": 23,  # 87 ASCII characters / 3.8, rounded up
        "full_tokens": 23,
        "budget": 600,
        "shortened": False,
    }
    persona.refresh_from_db()
    assert (persona.config_data["voice"], persona.version) == ("Plain.", 1)


@pytest.mark.django_db
def test_the_preview_of_a_new_persona_needs_no_id_and_keeps_raw_json_edits(editor_client: Client) -> None:
    answer = editor_client.post(PREVIEW, {"config_data": '{"system_prompt": "Be terse."}'}).json()
    assert answer["context"] == "Instructions: Be terse."


@pytest.mark.django_db
@override_settings(PERSONA_CONTEXT_TOKEN_BUDGET=40)
def test_the_preview_says_when_and_by_how_much_the_context_is_over_the_budget(editor_client: Client) -> None:
    answer = editor_client.post(PREVIEW, {"backstory": "He talks a lot. " * 30, "config_data": "{}"}).json()
    assert answer["shortened"] is True
    assert answer["context"].endswith("[shortened]")
    # The cut: the model gets the text before it; the rest is what the preview shows struck through.
    kept = answer["context"].removesuffix(" [shortened]")
    assert kept.endswith("a lot.") and answer["cut"].startswith(" He talks")
    assert "Backstory: " + ("He talks a lot. " * 30).strip() == kept + answer["cut"]
    assert answer["tokens"] <= 40 < answer["full_tokens"]
    assert answer["budget"] == 40


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"private": "{oops", "config_data": "{}"}, "Private: The text is not valid JSON"),
        ({"config_data": '["a list"]'}, "The config must be a JSON object"),
        (
            {"summary": "s" * 501, "config_data": "{}"},
            "Summary: Ensure this value has at most 500 characters (it has 501).",
        ),
        (
            {"voice": "x" * 20_001, "config_data": "{}"},
            "Voice: Ensure this value has at most 20000 characters",
        ),
    ],
)
def test_bad_values_get_a_400_naming_the_problem(
    editor_client: Client, data: dict[str, str], message: str
) -> None:
    response = editor_client.post(PREVIEW, data)
    assert response.status_code == 400
    assert any(error.startswith(message) for error in response.json()["errors"]), response.json()


@pytest.mark.django_db
def test_the_preview_takes_posts_only(editor_client: Client) -> None:
    assert editor_client.get(PREVIEW).status_code == 405


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("role", "expected"),
    [("anonymous", 401), ("writer", 403), ("staff", 403), ("adder", 403), ("viewer", 200), ("changer", 200)],
)
def test_who_may_preview(user_factory: Any, role: str, expected: int) -> None:
    codenames = {
        "adder": ["add_personaconfig"],
        "viewer": ["view_personaconfig"],
        "changer": ["change_personaconfig"],
    }
    client = Client()
    if role != "anonymous":
        user = user_factory(role, is_staff=role != "writer")
        user.user_permissions.add(*Permission.objects.filter(codename__in=codenames.get(role, [])))
        client.force_login(user)
    response = client.post(PREVIEW, {"voice": "Hi.", "config_data": "{}"})
    assert response.status_code == expected
    if role in ("anonymous", "writer"):
        # JSON the editor's script shows, not admin_view's redirect to the login page's HTML.
        assert response["Content-Type"] == "application/json"
        assert response.json()["errors"][0].startswith(
            "You are signed out" if role == "anonymous" else "This account may not use the admin"
        )
    assert not PersonaConfig.objects.exists()


@pytest.mark.django_db
def test_a_signed_out_editors_preview_says_so_in_json(editor_client: Client) -> None:
    # The page's script read admin_view's redirect to the login page as JSON: "Unexpected token '<'".
    editor_client.logout()
    response = editor_client.post(PREVIEW, {"voice": "Hi.", "config_data": "{}"})
    assert response.status_code == 401
    assert response.json() == {
        "errors": [
            "You are signed out: sign in again in another tab (your edits on this page are kept until you "
            "leave it), then type on to see the preview."
        ]
    }


@pytest.mark.django_db
def test_the_preview_still_checks_the_csrf_token(editor_client: Client) -> None:
    editor_client.handler.enforce_csrf_checks = True
    response = editor_client.post(PREVIEW, {"voice": "Hi.", "config_data": "{}"})
    assert response.status_code == 403
    assert b"This form has expired" in response.content  # the site's CSRF failure page


@pytest.mark.django_db
def test_a_text_over_its_limit_in_the_raw_json_is_said_by_its_size_not_quoted_back(
    editor_client: Client,
) -> None:
    config = {"backstory": "Once upon a time. " * 1200}  # 21,600 characters
    answer = editor_client.post(PREVIEW, {"config_data": json.dumps(config)})
    assert answer.status_code == 400
    assert answer.json() == {"errors": ["backstory: is 21600 characters long; the limit is 20000"]}

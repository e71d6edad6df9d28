from __future__ import annotations

from typing import Any

import pytest
from django.test import Client, override_settings


@pytest.mark.django_db
def test_the_change_page_previews_the_context_escaped_with_its_estimate(
    editor_client: Client, persona_factory: Any
) -> None:
    persona = persona_factory(
        "mallory", voice="<script>alert('x')</script> Sly.", private={"notes": "PRIVATE-NOTE"}
    )
    page = editor_client.get(f"/admin/personas/personaconfig/{persona.pk}/change/").content.decode()
    assert "Context preview" in page
    assert "About 11 tokens</strong> (estimate; budget 600)." in page
    assert "<p>Voice: &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; Sly.</p>" in page
    assert "<script>alert('x')</script>" not in page
    assert "shortened" not in page.split("Context preview")[1].split("</div>")[0]


@pytest.mark.django_db
@override_settings(PERSONA_CONTEXT_TOKEN_BUDGET=60)
def test_the_preview_says_when_the_context_was_shortened(editor_client: Client, persona_factory: Any) -> None:
    persona = persona_factory("talker", voice="Fast.", backstory="He talks a lot.\nReally a lot. " * 40)
    page = editor_client.get(f"/admin/personas/personaconfig/{persona.pk}/change/").content.decode()
    assert "(estimate; budget 60). It was shortened to fit the budget.</p>" in page
    assert "[shortened]" in page


@pytest.mark.django_db
def test_the_add_page_explains_there_is_no_preview_yet(editor_client: Client) -> None:
    page = editor_client.get("/admin/personas/personaconfig/add/").content.decode()
    assert "Save the persona to see the context that goes into prompts." in page

"""The generation settings page in the admin: the default model is a choice among usable models."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from stories.models import GenerationSettings
from stories.selectors import generation_settings_forget, generation_settings_get

pytestmark = pytest.mark.django_db

URL = "/admin/stories/generationsettings/add/"


@pytest.fixture
def editor(user_factory: Any, settings: Any) -> Client:
    settings.STORY_MODEL = "claude-sonnet-5-5"
    settings.STORY_MODELS = ["claude-sonnet-5-5", "claude-haiku-5-5"]
    client = Client()
    client.force_login(user_factory("editor", is_staff=True, is_superuser=True))
    return client


def _post(client: Client, model: str) -> Any:
    return client.post(URL, {"default_model": model, "default_max_tokens": "", "formatting_rules": ""})


def test_the_default_model_is_chosen_from_the_models_writers_may_pick(editor: Client) -> None:
    html = editor.get(URL).content.decode()
    assert '<select name="default_model"' in html
    assert '<option value="claude-haiku-5-5">Claude Haiku 5.5 (claude-haiku-5-5)</option>' in html
    assert _post(editor, "claude-haiku-5-5").status_code == 302
    assert GenerationSettings.objects.get().default_model == "claude-haiku-5-5"


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "claude-sonnet-4-6-typo", "gpt-4"])
def test_a_retired_or_unknown_model_is_refused_with_a_form_error(editor: Client, model: str) -> None:
    response = _post(editor, model)
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not GenerationSettings.objects.exists()


def test_a_configured_model_that_has_retired_is_not_offered(editor: Client, settings: Any) -> None:
    # Configured before its retirement; the registry drops it once it is within a week of it.
    settings.STORY_MODELS = ["claude-sonnet-5-5", "claude-sonnet-4-5"]
    html = editor.get(URL).content.decode()
    assert 'value="claude-sonnet-4-5"' not in html
    assert 'value="claude-sonnet-5-5"' in html


def test_a_default_max_tokens_a_run_would_not_use_and_overlong_rules_are_form_errors(
    editor: Client, settings: Any
) -> None:
    settings.STORY_MAX_MAX_TOKENS = 16_000
    form = {"default_model": "", "formatting_rules": ""}
    response = editor.post(URL, {**form, "default_max_tokens": "64000"})
    assert response.status_code == 200
    assert "Between 256 and 16000" in response.content.decode()
    response = editor.post(URL, {**form, "default_max_tokens": "", "formatting_rules": "x" * 20_001})
    assert response.status_code == 200
    assert "Ensure this value has at most 20000 characters" in response.content.decode()
    assert not GenerationSettings.objects.exists()
    assert (
        editor.post(URL, {**form, "default_max_tokens": "16000", "formatting_rules": "Obey."}).status_code
        == 302
    )
    assert GenerationSettings.objects.get().default_max_tokens == 16_000


def test_a_default_max_tokens_a_usable_model_cannot_take_is_a_form_error(
    editor: Client, settings: Any
) -> None:
    # Was: saved, and cut to the model's max output on every run that took it, without a word.
    settings.STORY_MODELS = ["claude-sonnet-5-5", "claude-haiku-4-5"]
    # Haiku 4.5 writes at most 64,000 tokens, thinking included: 61,952 are left for the text.
    settings.STORY_MAX_MAX_TOKENS, settings.STORY_THINKING_BUDGET_TOKENS = 64_000, 2048
    form = {"default_model": "claude-sonnet-5-5", "formatting_rules": ""}
    response = editor.post(URL, {**form, "default_max_tokens": "63000"})
    assert response.status_code == 200
    assert (
        "At most 61952 for Claude Haiku 4.5 (legacy) (claude-haiku-4-5), a model writers may use: its max output, "
        "less the tokens set aside for thinking." in response.content.decode()
    )
    assert not GenerationSettings.objects.exists()
    assert editor.post(URL, {**form, "default_max_tokens": "61952"}).status_code == 302
    assert GenerationSettings.objects.get().default_max_tokens == 61_952


def test_empty_defaults_follow_the_environment_of_a_deploy_even_with_the_settings_cached(
    settings: Any,
) -> None:
    # Was: the cache (Redis, shared by every process and kept across a restart) held the settings merged
    # with the environment of the process that read them: after a deploy that set STORY_MODEL to Claude,
    # writers' runs went on being written by the offline model for up to five minutes.
    generation_settings_forget()
    settings.STORY_MODEL, settings.STORY_MODELS, settings.STORY_MAX_TOKENS = "offline", [], 4096
    assert generation_settings_get().default_model == "offline"  # read, and cached, before the deploy
    settings.STORY_MODEL, settings.STORY_MODELS = "claude-sonnet-5-5", ["claude-sonnet-5-5"]
    settings.STORY_MAX_TOKENS = 8192
    effective = generation_settings_get()
    assert (effective.default_model, effective.default_max_tokens) == ("claude-sonnet-5-5", 8192)
    # What the admin set still wins, whatever the environment says.
    GenerationSettings.objects.create(pk=1, default_model="claude-sonnet-5-5", default_max_tokens=2048)
    generation_settings_forget()
    settings.STORY_MAX_TOKENS = 4096
    assert generation_settings_get().default_max_tokens == 2048

"""POST /api/ai/generate-screenplay/: the same pipeline, blocking, with a status per error code."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from stories.models import GenerationRun, ScreenplayVersion, StoryCast
from tests.fake_anthropic import FakeAnthropic, Reply, screenplay_text, token_count
from tests.stories.generation.conftest import generate_message, screenplay

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/api/ai/generate-screenplay/"


def _body(**fields: Any) -> dict[str, Any]:
    body = generate_message(**fields)
    del body["type"]
    return body


@pytest.fixture
def api(writer: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(writer)
    return client


def test_it_generates_saves_and_returns_the_story_and_version(
    api: APIClient, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    expected = screenplay(scenes=3)
    fake_anthropic.script(Reply(text=screenplay_text(expected)))
    response = api.post(URL, _body(title="Falcon"), format="json")
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["version"]["number"] == 1 and data["version"]["content"] == expected
    assert data["story"]["title"] == "Falcon"
    version = ScreenplayVersion.objects.get()
    assert version.content == expected and version.run_id == data["run_id"]
    assert StoryCast.objects.filter(story=version.story).count() == 2
    assert data["usage"]["output_tokens"] == token_count(screenplay_text(expected))
    # Its date as every other endpoint writes it (DRF: UTC as "Z"); it was "+00:00" here alone.
    listed = api.get(f"/api/stories/{version.story_id}/versions/").json()["results"][0]
    assert data["version"]["created_at"] == listed["created_at"] and listed["created_at"].endswith("Z")
    assert set(data["timings"]) == {"context_ms", "prompt_ms", "ttft_ms", "llm_ms", "save_ms", "total_ms"}


def test_the_offline_model_works_without_a_key(api: APIClient, cast: Any, offline: None) -> None:
    response = api.post(URL, _body(), format="json")
    assert response.status_code == 201
    assert GenerationRun.objects.get().model == "offline"


@pytest.mark.parametrize(
    "body,status",
    [
        ({"plot": "", "personas": ["noir-detective"]}, 400),
        ({"plot": "x", "personas": "noir-detective"}, 400),
        ({"plot": "x", "personas": ["noir-detective"], "max_tokens": 10}, 400),
        ({"plot": "x", "personas": ["nobody"]}, 400),
    ],
)
def test_bad_requests_are_400_with_a_code(
    api: APIClient, cast: Any, fake_anthropic: FakeAnthropic, body: dict[str, Any], status: int
) -> None:
    response = api.post(URL, body, format="json")
    assert response.status_code == status
    assert response.json()["code"] in {"invalid_request", "unknown_personas"}
    assert fake_anthropic.requests == []


def test_a_plot_with_a_control_character_is_a_400_naming_it(
    api: APIClient, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    response = api.post(URL, _body(plot="A heist.\x00", title="Fog"), format="json")
    assert response.status_code == 400 and "plot contains a NUL" in response.json()["message"]
    response = api.post(URL, _body(plot="A heist.\x85In fog."), format="json")
    assert response.status_code == 400
    assert response.json() == {
        "code": "invalid_request",
        "message": "plot contains a control character (U+0085); only tabs and line breaks may be in it",
        "retryable": False,
    }
    assert fake_anthropic.requests == [] and not GenerationRun.objects.exists()


@pytest.mark.parametrize(
    "reply,status,code",
    [
        (
            Reply(status=529, error_type="overloaded_error", headers={"retry-after-ms": "1"}),
            503,
            "llm_overloaded",
        ),
        (
            Reply(status=429, error_type="rate_limit_error", headers={"retry-after-ms": "1"}),
            503,
            "llm_rate_limited",
        ),
        (Reply(status=500, error_type="api_error", headers={"retry-after-ms": "1"}), 502, "llm_unavailable"),
        (Reply(text='{"title": "x", "scenes": [', stall_after=1, chunk_chars=5), 504, "llm_timeout"),
        (Reply(text="", stop_reason="refusal"), 422, "llm_refused"),
        (Reply(text="not json at all"), 502, "invalid_output"),
        (Reply(status=402, error_type="billing_error"), 503, "llm_quota"),
        (
            Reply(
                status=400,
                error_type="invalid_request_error",
                error_message="Your credit balance is too low to access the Anthropic API.",
            ),
            503,
            "llm_quota",
        ),
        (
            Reply(status=429, error_type="rate_limit_error", error_code="contract_spend_limit_reached"),
            503,
            "llm_quota",
        ),
        (Reply(status=401, error_type="authentication_error"), 502, "llm_config"),
        (Reply(status=404, error_type="not_found_error"), 502, "llm_config"),
    ],
)
def test_upstream_failures_get_a_fitting_status(
    api: APIClient, cast: Any, fake_anthropic: FakeAnthropic, reply: Reply, status: int, code: str
) -> None:
    fake_anthropic.script(reply, reply, reply)
    response = api.post(URL, _body(), format="json")
    assert (response.status_code, response.json()["code"]) == (status, code)
    assert not ScreenplayVersion.objects.exists()
    assert GenerationRun.objects.get().status == "failed"


def test_anonymous_callers_are_refused(cast: Any, offline: None) -> None:
    response = APIClient().post(URL, _body(), format="json")
    assert response.status_code in (401, 403)
    assert not GenerationRun.objects.exists()


def test_the_hourly_limit_answers_429_with_retry_after(
    api: APIClient, writer: Any, cast: Any, offline: None, settings: Any
) -> None:
    settings.STORY_GENERATIONS_PER_HOUR = 1
    assert api.post(URL, _body(), format="json").status_code == 201
    response = api.post(URL, _body(), format="json")
    assert response.status_code == 429 and response.json()["code"] == "rate_limited"
    assert int(response["Retry-After"]) > 0
    assert GenerationRun.objects.count() == 1


def test_a_story_deleted_between_the_save_and_the_answer_is_a_404_saying_so(
    api: APIClient, cast: Any, offline: None, monkeypatch: Any
) -> None:
    # The writer deletes the story elsewhere the moment the run has saved it: the answer says what
    # happened (it was a 500, the saved version not found).
    from stories import selectors
    from stories.models import Story

    read = selectors.story_version_saved_get
    deleted: list[int] = []

    def deleted_first(*, story_id: int, number: int) -> Any:
        assert api.delete(f"/api/stories/{story_id}/").status_code == 204
        deleted.append(story_id)
        return read(story_id=story_id, number=number)

    monkeypatch.setattr(selectors, "story_version_saved_get", deleted_first)
    response = api.post(URL, _body(), format="json")
    assert response.status_code == 404, response.content
    assert response.json() == {
        "code": "not_found",
        "message": f"story {deleted[0]} was deleted after version 1 of it was saved, with that version",
        "retryable": False,
    }
    assert not Story.objects.exists()
    assert GenerationRun.objects.get().status == "succeeded"


def test_a_story_deleted_between_its_check_and_the_admission_is_forbidden_with_no_run(
    api: APIClient, writer: Any, cast: Any, offline: None, monkeypatch: Any
) -> None:
    # The writer deletes the story elsewhere just after the request found it theirs: the run's row,
    # pointing at it, broke the foreign key at the admission's commit, an IntegrityError answered 502
    # llm_unavailable ("an unexpected failure") and logged as an ERROR (seen on PostgreSQL with a
    # generation and a delete sent at once).
    from stories.generation import pipeline
    from stories.models import Story

    story = Story.objects.create(owner=writer, title="T", plot="P")
    owned = pipeline.story_owned

    def deleted_after(*, story_id: int, user_id: int) -> bool:
        found = owned(story_id=story_id, user_id=user_id)
        Story.objects.filter(pk=story_id).delete()
        return found

    monkeypatch.setattr(pipeline, "story_owned", deleted_after)
    response = api.post(URL, _body(story_id=story.pk), format="json")
    assert (response.status_code, response.json()["code"]) == (403, "forbidden"), response.content
    assert not GenerationRun.objects.exists()


def test_a_model_title_on_several_lines_becomes_a_one_line_story_title(
    api: APIClient, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    expected = screenplay(scenes=1)
    expected["title"] = "The\nMaltese\r\n  Falcon"
    fake_anthropic.script(Reply(text=screenplay_text(expected)))
    response = api.post(URL, _body(), format="json")
    assert response.status_code == 201, response.content
    assert response.json()["story"]["title"] == "The Maltese Falcon"
    # The screenplay itself keeps what the model wrote.
    assert response.json()["version"]["content"]["title"] == "The\nMaltese\r\n  Falcon"


def test_null_optional_fields_are_taken_as_not_given(api: APIClient, cast: Any, offline: None) -> None:
    # `"title": null` was a 400 ("title must be a string"), where the other optional fields took null as
    # "not given". (`wait` stays a strict boolean: tests/stories/runs/test_api_runs.py.)
    body = _body(title=None, story_id=None, model=None, max_tokens=None, mode=None)
    response = api.post(URL, body, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["story"]["title"] == response.json()["version"]["content"]["title"]


def test_one_persona_named_thirteen_times_is_one_persona(api: APIClient, cast: Any, offline: None) -> None:
    # Refused 400 "at most 12 personas may take part", though duplicates are dropped (as on the socket).
    response = api.post(URL, _body(personas=["noir-detective"] * 13), format="json")
    assert response.status_code == 201, response.content
    assert GenerationRun.objects.get(pk=response.json()["run_id"]).persona_names == ["noir-detective"]


def test_regenerating_a_story_from_a_new_plot_makes_it_the_storys_plot(
    api: APIClient, writer: Any, cast: Any, offline: None
) -> None:
    first = api.post(URL, _body(plot="A heist in the fog.", title="Fog"), format="json").json()
    story_id = first["story"]["id"]
    # Regenerate with the plot edited: the story page's form, and every scene rewrite of the new version,
    # start from the story's plot. It stayed the old one.
    response = api.post(URL, _body(plot="A heist at sea.", story_id=story_id), format="json")
    assert response.status_code == 201, response.content
    assert response.json()["story"] == {
        "id": story_id,
        "title": "Fog",
        "plot": "A heist at sea.",
        "url": f"/stories/{story_id}/",
    }
    response = api.post(URL, _body(plot="A heist at sea.", title="Sea", story_id=story_id), format="json")
    assert response.json()["story"]["title"] == "Sea"
    page = Client()
    page.force_login(writer)
    form = page.get(f"/stories/{story_id}/").content.decode()
    assert "A heist at sea." in form and "A heist in the fog." not in form

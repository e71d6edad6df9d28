"""Rewriting one scene of a saved version: API, socket and story page; the result is a new version."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from django.utils.html import escape
from rest_framework.test import APIClient

from personas.models import PersonaConfig
from stories.generation.regenerate import scene_regenerate_request_parse
from stories.generation.validation import CastEntry
from stories.models import GenerationRun, ScreenplayVersion, Story
from stories.services import ScreenplayDraft, screenplay_version_create, screenplay_version_write
from tests.fake_anthropic import FakeAnthropic
from tests.fake_screenwriter import FakeScreenwriter, last_user_text
from tests.stories.generation.conftest import MODEL, screenplay, ws_connect, ws_events

pytestmark = pytest.mark.django_db(transaction=True)


def _story_with_version(user: Any, *, model: str = MODEL, scenes: int = 3) -> tuple[int, dict[str, Any]]:
    content = screenplay(scenes=scenes)
    version = screenplay_version_create(
        user_id=user.pk,
        draft=ScreenplayDraft(
            title="The Falcon",
            plot="A statue, a lie, a fog.",
            content=content,
            model=model,
            max_tokens=2000,
            cast=[
                CastEntry(persona="noir-detective", character_name="SAM SPADE", order=0),
                CastEntry(persona="femme-fatale", character_name="BRIGID", order=1),
            ],
        ),
    )
    return version.story_id, content


def _rewritten() -> dict[str, Any]:
    new = screenplay(scenes=3)
    new["scenes"][1]["elements"] = [
        {"type": "action", "text": "The rain stops."},
        {"type": "dialogue", "character": "BRIGID", "text": "Now you see me."},
    ]
    return new


def _expected_after_rewrite(old: dict[str, Any]) -> dict[str, Any]:
    expected = copy.deepcopy(old)
    expected["scenes"][1] = {
        "heading": old["scenes"][1]["heading"],
        # The outline rebuilt from the version takes a scene's first action as its summary.
        "summary": "Rain on the window, take 2.",
        "elements": _rewritten()["scenes"][1]["elements"],
    }
    return expected


def test_the_api_rewrites_one_scene_and_saves_a_new_version(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    story_id, old = _story_with_version(writer)
    fake_anthropic.default = FakeScreenwriter(_rewritten(), tokens_per_second=4000)
    client = APIClient()
    client.force_authenticate(writer)
    response = client.post(
        f"/api/stories/{story_id}/versions/1/scenes/1/regenerate/",
        {"instructions": "Make it <rain> stop."},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["version"]["number"] == 2
    versions = {v.number: v.content for v in ScreenplayVersion.objects.filter(story_id=story_id)}
    assert versions[1] == old
    assert versions[2] == _expected_after_rewrite(old)
    # One call, for that scene, with the version's outline in the cached prefix and the instructions escaped.
    (request,) = fake_anthropic.requests
    assert "Step 2: write scene 2 of 3" in last_user_text(request.body)
    assert "<instructions>\nMake it &lt;rain&gt; stop.\n</instructions>" in last_user_text(request.body)
    outline_block = request.body["system"][2]
    assert outline_block["cache_control"] == {"type": "ephemeral"}
    assert all(scene["heading"] in outline_block["text"] for scene in old["scenes"])
    assert request.body["model"] == MODEL
    run = GenerationRun.objects.get(pk=response.json()["run_id"])
    assert run.mode == "parallel" and run.status == "succeeded"
    assert run.details["regenerated_scene"] == 1 and run.details["base_version"] == 1


def test_the_api_answers_404_for_a_story_deleted_while_its_scene_is_rewritten(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The URL names the story, the writer's when the request came: deleted meanwhile by another tab,
    # the rewrite answered 403 forbidden "that story does not exist or is not yours" (a generation's
    # refusal of a story_id it was given); it is the 404 the URL answers a moment later.
    from stories import api

    story_id, _ = _story_with_version(writer)
    found = api.selectors.story_get_for_user

    def found_then_deleted(**kwargs: Any) -> Story:
        story = found(**kwargs)
        Story.objects.filter(pk=story.pk).delete()
        return story

    monkeypatch.setattr(api.selectors, "story_get_for_user", found_then_deleted)
    client = APIClient()
    client.force_authenticate(writer)
    response = client.post(f"/api/stories/{story_id}/versions/1/scenes/1/regenerate/", {}, format="json")
    assert response.status_code == 404, response.content
    assert response.json() == {
        "code": "not_found",
        "message": f"story {story_id} was deleted while its scene was being rewritten; nothing was saved",
        "retryable": False,
    }
    assert fake_anthropic.requests == []


def test_the_api_answers_404_for_a_story_deleted_while_its_scenes_rewrite_runs_and_the_run_stops(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # Deleted while the model writes the scene: the deletion cancels the run (nothing more is paid for),
    # and the request answers the 404 its URL now answers, not "the generation was cancelled".
    import threading
    import time

    from tests.fake_anthropic import Reply

    story_id, _ = _story_with_version(writer)
    fake_anthropic.script(
        Reply(text=json.dumps({"scene": screenplay(scenes=1)["scenes"][0]}) * 20, tokens_per_second=20)
    )
    client = APIClient()
    client.force_authenticate(writer)
    answered: list[Any] = []
    request = threading.Thread(
        target=lambda: answered.append(
            client.post(f"/api/stories/{story_id}/versions/1/scenes/1/regenerate/", {}, format="json")
        )
    )
    request.start()
    while not fake_anthropic.requests and request.is_alive():
        time.sleep(0.05)
    deleter = APIClient()
    deleter.force_authenticate(writer)
    assert deleter.delete(f"/api/stories/{story_id}/").status_code == 204
    request.join(timeout=20)
    assert answered and answered[0].status_code == 404, answered and answered[0].content
    assert answered[0].json()["message"] == (
        f"story {story_id} was deleted while its scene was being rewritten; nothing was saved"
    )
    assert fake_anthropic.wait_for_disconnect(fake_anthropic.requests[0], 1.0)
    assert GenerationRun.objects.get().status == "cancelled"


def test_a_story_deleted_as_its_version_is_read_is_a_404_not_a_missing_version(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A moment later than the test above: the rewrite found the story, then not its version (deleted
    # with it by another tab), and answered 400 "the story has no version 1" of a story that had it
    # (seen on PostgreSQL with a rewrite and a delete sent at once).
    from stories.generation import regenerate

    story_id, _ = _story_with_version(writer)
    find = regenerate.story_version_find

    def deleted_first(*, story: Story, number: int) -> Any:
        Story.objects.filter(pk=story.pk).delete()  # another request
        return find(story=story, number=number)

    monkeypatch.setattr(regenerate, "story_version_find", deleted_first)
    client = APIClient()
    client.force_authenticate(writer)
    response = client.post(f"/api/stories/{story_id}/versions/1/scenes/1/regenerate/", {}, format="json")
    assert response.status_code == 404, response.content
    assert response.json()["code"] == "not_found"
    assert fake_anthropic.requests == []


def test_the_api_refuses_another_writers_story_and_a_scene_that_does_not_exist(
    writer: Any, other_writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    story_id, _ = _story_with_version(writer)
    intruder = APIClient()
    intruder.force_authenticate(other_writer)
    assert intruder.post(f"/api/stories/{story_id}/versions/1/scenes/0/regenerate/").status_code == 404
    owner = APIClient()
    owner.force_authenticate(writer)
    missing = owner.post(f"/api/stories/{story_id}/versions/1/scenes/3/regenerate/", {}, format="json")
    assert missing.status_code == 400 and missing.json()["code"] == "invalid_request"
    assert "3 scenes" in missing.json()["message"]
    too_long = owner.post(
        f"/api/stories/{story_id}/versions/1/scenes/0/regenerate/",
        {"instructions": "x" * 2001},
        format="json",
    )
    assert too_long.status_code == 400
    assert APIClient().post(f"/api/stories/{story_id}/versions/1/scenes/0/regenerate/").status_code in (
        401,
        403,
    )
    # The story page's form for a version the story does not have: a 404, not a redirect to one.
    page = Client()
    page.force_login(writer)
    for number in (9, 2**70):
        assert page.post(f"/stories/{story_id}/versions/{number}/scenes/0/regenerate/").status_code == 404
    assert not fake_anthropic.requests
    assert fake_anthropic.requests == []
    assert ScreenplayVersion.objects.filter(story_id=story_id).count() == 1


def _rewrite_post(writer: Any, body: str) -> tuple[int, Any]:
    """A new story's version 1, and the writer's raw JSON ``body`` posted to rewrite its first scene."""
    story_id, _ = _story_with_version(writer)
    client = APIClient()
    client.force_authenticate(writer)
    url = f"/api/stories/{story_id}/versions/1/scenes/0/regenerate/"
    return story_id, client.post(url, body, content_type="application/json")


def test_the_api_refuses_a_body_that_is_not_a_json_object(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # Issue 13 item 7: a list body was read as an empty object, so the scene was rewritten (201).
    story_id, response = _rewrite_post(writer, '[{"instructions": "Faster."}]')
    assert response.status_code == 400
    assert response.json() == {"detail": "The request body must be a JSON object ({...}), not a list."}
    assert fake_anthropic.requests == []
    assert ScreenplayVersion.objects.filter(story_id=story_id).count() == 1


def test_the_api_names_a_hostile_unknown_field_without_failing(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # An unknown key holding a lone surrogate was named verbatim: the 400's body could not be encoded
    # (a 500), and on the socket the error frame could not be sent (the connection failed with 1011).
    story_id, response = _rewrite_post(writer, '{"\\ud800": 1}')
    assert response.status_code == 400
    assert response.json() == {
        "code": "invalid_request",
        "message": "unknown fields: '\\ud800'",
        "retryable": False,
    }
    assert fake_anthropic.requests == []
    assert ScreenplayVersion.objects.filter(story_id=story_id).count() == 1


def test_the_api_refuses_the_sockets_address_fields_in_the_body(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # The URL names the story, version and scene; a body naming another scene was ignored, and the
    # URL's scene rewritten (a model call paid for, a version saved) where any other field is refused.
    for field in ("index", "version", "story_id"):
        story_id, response = _rewrite_post(writer, json.dumps({field: 2, "instructions": "Faster."}))
        assert response.status_code == 400, response.content
        assert response.json() == {
            "code": "invalid_request",
            "message": f"unknown fields: {field!r}",
            "retryable": False,
        }
        assert ScreenplayVersion.objects.filter(story_id=story_id).count() == 1
    assert fake_anthropic.requests == []


async def test_the_socket_rewrites_one_scene_streaming_it_then_saves_a_new_version(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    story_id, old = await sync_to_async(_story_with_version)(writer)
    fake_anthropic.default = FakeScreenwriter(_rewritten(), tokens_per_second=4000, chunk_chars=8)
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to(
            {"type": "regenerate_scene", "story_id": story_id, "version": 1, "index": 1}
        )
        events = await ws_events(communicator)
    finally:
        await communicator.disconnect()
    types = [event["type"] for event in events]
    assert types[0] == "accepted" and types[-2:] == ["saved", "done"]
    assert {e["index"] for e in events if e["type"] in ("scene_delta", "scene")} == {1}
    streamed = "".join(e["text"] for e in events if e["type"] == "scene_delta")
    assert json.loads(streamed) == {"outline": None, "scene": _rewritten()["scenes"][1]}
    assert events[-2]["version"] == 2 and events[-2]["story_id"] == story_id
    saved = await ScreenplayVersion.objects.aget(story_id=story_id, number=2)
    assert saved.content == _expected_after_rewrite(old)


async def test_the_socket_refuses_a_bad_rewrite_message(writer: Any, cast: Any, offline: None) -> None:
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to(
            {"type": "regenerate_scene", "story_id": 1, "version": "one", "index": 0}
        )
        event = json.loads(await communicator.receive_from())
    finally:
        await communicator.disconnect()
    assert event["code"] == "invalid_request" and "version" in event["message"]


def _story_page(writer: Any) -> tuple[int, dict[str, Any], Client, str]:
    """A story with one offline version; its content, a client signed in as ``writer``, its page."""
    story_id, content = _story_with_version(writer, model="offline")
    client = Client()
    client.force_login(writer)
    return story_id, content, client, client.get(f"/stories/{story_id}/").content.decode()


def test_the_story_page_offers_a_rewrite_per_scene_and_shows_the_new_version(
    writer: Any, cast: Any, offline: None
) -> None:
    story_id, old, client, page = _story_page(writer)
    assert page.count("Rewrite scene") == 3
    form_action = f"/stories/{story_id}/versions/1/scenes/2/regenerate/"
    assert f'action="{form_action}"' in page
    response = client.post(form_action, {"instructions": "Make it <rain>."})
    assert response.status_code == 302 and response["Location"] == f"/stories/{story_id}/?version=2"
    new = ScreenplayVersion.objects.get(story_id=story_id, number=2).content
    assert new["scenes"][:2] == old["scenes"][:2]
    assert new["scenes"][2] != old["scenes"][2]
    shown = client.get(response["Location"]).content.decode()
    assert "Scene 3 rewritten: this is version 2." in shown
    # The writer's words are in the new scene, escaped on the page.
    assert "This time: Make it &lt;rain&gt;." in shown and "<rain>" not in shown


def test_a_failed_rewrite_on_the_story_page_says_why_and_saves_nothing(
    writer: Any, cast: Any, offline: None
) -> None:
    story_id, _ = _story_with_version(writer, model="offline")
    PersonaConfig.objects.filter(name="femme-fatale").update(is_active=False)
    client = Client()
    client.force_login(writer)
    page = client.get(f"/stories/{story_id}/").content.decode()
    # The rewrite form's socket path comes from the server, as the create page's does.
    assert page.count('data-ws-path="/ws/generate/"') == 3
    response = client.post(f"/stories/{story_id}/versions/1/scenes/0/regenerate/", {"instructions": "Rain."})
    assert response.status_code == 400
    shown = response.content.decode()
    assert "The scene could not be rewritten: personas no longer available: femme-fatale" in shown
    # The form is open again with what the writer typed, to send once the cast is fixed.
    assert '<details class="scene-rewrite" open>' in shown and 'value="Rain." autofocus' in shown
    assert not ScreenplayVersion.objects.filter(story_id=story_id, number=2).exists()
    assert GenerationRun.objects.get().error_code == "unknown_personas"


def _rewritten_scenes(*indices: int) -> dict[str, Any]:
    new = screenplay(scenes=3)
    for index in indices:
        new["scenes"][index]["elements"] = [{"type": "action", "text": f"Scene {index + 1}, rewritten."}]
    return new


async def _rewrite_events(writer: Any, story_id: int, index: int) -> list[dict[str, Any]]:
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to(
            {"type": "regenerate_scene", "story_id": story_id, "version": 1, "index": index}
        )
        return await ws_events(communicator, timeout=20)
    finally:
        await communicator.disconnect()


async def test_two_rewrites_of_the_latest_version_at_once_keep_both_scenes(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # Two scenes of version 1 rewritten at once (two forms of the story page): the second to finish was
    # saved as version 1 with its own scene only, so the latest version lost the first one's scene.
    story_id, old = await sync_to_async(_story_with_version)(writer)
    fake_anthropic.default = FakeScreenwriter(
        _rewritten_scenes(1, 2), tokens_per_second=300, chunk_chars=8, scene_tokens_per_second={2: 150}
    )
    first, second = await asyncio.gather(
        _rewrite_events(writer, story_id, 1), _rewrite_events(writer, story_id, 2)
    )
    assert [first[-2]["type"], second[-2]["type"]] == ["saved", "saved"]
    assert (first[-2]["version"], second[-2]["version"]) == (2, 3)
    versions = {v.number: v.content async for v in ScreenplayVersion.objects.filter(story_id=story_id)}
    assert [s["elements"][0]["text"] for s in versions[2]["scenes"]] == [
        "Rain on the window, take 1.",
        "Scene 2, rewritten.",
        "Rain on the window, take 3.",
    ]
    assert [s["elements"][0]["text"] for s in versions[3]["scenes"]] == [
        "Rain on the window, take 1.",
        "Scene 2, rewritten.",
        "Scene 3, rewritten.",
    ]
    assert versions[3]["scenes"][1] == versions[2]["scenes"][1]
    assert versions[1] == old


async def test_a_rewrite_whose_scene_another_tab_changed_meanwhile_is_a_conflict_and_saves_nothing(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    story_id, old = await sync_to_async(_story_with_version)(writer)
    fake_anthropic.default = FakeScreenwriter(_rewritten_scenes(1), tokens_per_second=150, chunk_chars=8)
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to(
            {"type": "regenerate_scene", "story_id": story_id, "version": 1, "index": 1}
        )
        while json.loads(await communicator.receive_from(timeout=10))["type"] != "scene_delta":
            pass
        # Another tab saves an edit of that very scene while it is being rewritten.
        edited = copy.deepcopy(old)
        edited["scenes"][1]["elements"][0]["text"] = "Edited in the other tab."
        story = await Story.objects.aget(pk=story_id)
        await sync_to_async(screenplay_version_write)(user_id=writer.pk, story=story, content=edited)
        events = await ws_events(communicator, timeout=20)
    finally:
        await communicator.disconnect()
    error = events[-1]
    assert (error["type"], error["code"], error["retryable"]) == ("error", "version_conflict", False)
    assert "version 2 was saved while scene 2 was being rewritten" in error["message"]
    assert "saved" not in [e["type"] for e in events]
    latest = await ScreenplayVersion.objects.filter(story_id=story_id).order_by("-number").afirst()
    assert latest is not None and latest.number == 2
    assert latest.content["scenes"][1]["elements"][0]["text"] == "Edited in the other tab."
    run = await GenerationRun.objects.aget(pk=events[0]["run_id"])
    assert run.status == "failed" and run.error_code == "version_conflict"
    # The rewritten scene was paid for: it is kept in the run's raw text.
    assert "Scene 2, rewritten." in run.raw_text


async def test_a_rewrites_progress_says_how_long_its_scene_has_left(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # The other scenes of the version counted as written by the run: a scene's length was the run's
    # output shared among them, so the time left was 0 s from the first progress event to the last.
    story_id, _ = await sync_to_async(_story_with_version)(writer)
    fake_anthropic.default = FakeScreenwriter(_rewritten(), tokens_per_second=60, chunk_chars=8)
    events = await _rewrite_events(writer, story_id, 1)
    assert events[-1]["type"] == "done"
    scene_at = [event["type"] for event in events].index("scene")
    progress = [event for event in events[:scene_at] if event["type"] == "progress"]
    assert len(progress) >= 3
    assert all(event["eta_seconds"] > 0 for event in progress[:2]), progress
    assert all((event["scenes_done"], event["scenes_total"]) == (2, 3) for event in progress)


async def _cancelled_from_a_socket(writer: Any, post: Any) -> Any:
    """``post()`` (a blocking rewrite, in a thread) while the writer cancels its run from a socket."""
    answer = asyncio.ensure_future(sync_to_async(post, thread_sensitive=False)())
    run = None
    for _ in range(200):
        run = await GenerationRun.objects.filter(status="streaming").afirst()
        if run is not None:
            break
        await asyncio.sleep(0.02)
    assert run is not None
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to({"type": "cancel", "run_id": run.pk})
        response = await asyncio.wait_for(answer, 20)
    finally:
        await communicator.disconnect()
    assert (await GenerationRun.objects.aget(pk=run.pk)).status == "cancelled"
    return response


def _signed_in(writer: Any, where: str) -> Any:
    client: Any = APIClient(raise_request_exception=False)
    if where == "api":
        client.force_authenticate(writer)
    else:
        client.force_login(writer)
    return client


@pytest.mark.parametrize("where", ["api", "page"])
async def test_a_blocking_rewrite_cancelled_from_another_tab_says_so(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, where: str
) -> None:
    # The run can be cancelled from elsewhere while the request waits for it (docs/protocol.md); the
    # API and the story page's form both answered that with a 500.
    story_id, _ = await sync_to_async(_story_with_version)(writer)
    fake_anthropic.default = FakeScreenwriter(_rewritten(), tokens_per_second=30, chunk_chars=8)
    client = await sync_to_async(_signed_in)(writer, where)
    prefix = "/api" if where == "api" else ""
    url = f"{prefix}/stories/{story_id}/versions/1/scenes/1/regenerate/"
    response = await _cancelled_from_a_socket(writer, lambda: client.post(url, {}, format="json"))
    if where == "api":
        assert response.status_code == 409
        assert response.json() == {"detail": "the generation was cancelled; nothing was saved"}
    else:
        assert response.status_code == 409
        assert "The rewrite was cancelled; nothing was saved." in response.content.decode()
    assert await ScreenplayVersion.objects.filter(story_id=story_id).acount() == 1


async def test_a_blocking_generation_cancelled_from_another_tab_is_a_409(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.default = FakeScreenwriter(screenplay(scenes=3), tokens_per_second=30, chunk_chars=8)
    client = await sync_to_async(_signed_in)(writer, "api")
    body = {"plot": "A statue, a lie, a fog.", "personas": ["noir-detective", "femme-fatale"]}
    response = await _cancelled_from_a_socket(
        writer, lambda: client.post("/api/ai/generate-screenplay/", body, format="json")
    )
    assert response.status_code == 409
    assert response.json() == {"detail": "the generation was cancelled; nothing was saved"}
    assert not await ScreenplayVersion.objects.aexists()


async def test_a_rewrite_from_a_page_another_tab_has_overtaken_is_a_conflict_before_any_call(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # The page shows version 1 as the latest; another tab saves version 2. A rewrite of version 1 was
    # taken for a rewrite of an older version on purpose: version 3 was version 1 and its new scene,
    # and the other tab's edit was gone from the latest version. base_version says what the page knew.
    story_id, old = await sync_to_async(_story_with_version)(writer)
    story = await Story.objects.aget(pk=story_id)
    edited = copy.deepcopy(old)
    edited["scenes"][0]["elements"][0]["text"] = "Edited in the other tab."
    await sync_to_async(screenplay_version_write)(user_id=writer.pk, story=story, content=edited)
    fake_anthropic.default = FakeScreenwriter(_rewritten(), tokens_per_second=4000)
    communicator = await ws_connect(writer)
    try:
        message = {"type": "regenerate_scene", "story_id": story_id, "version": 1, "index": 1}
        await communicator.send_json_to({**message, "base_version": 1})
        refused = json.loads(await communicator.receive_from(timeout=5))
        await communicator.send_json_to({**message, "base_version": 3})
        missing = json.loads(await communicator.receive_from(timeout=5))
        # Knowing version 2, a rewrite of version 1 is what the writer asked for.
        await communicator.send_json_to({**message, "base_version": 2})
        events = await ws_events(communicator)
    finally:
        await communicator.disconnect()
    assert refused == {
        "type": "error",
        "code": "version_conflict",
        "message": "version 2 was saved after version 1, the latest this rewrite knew of; nothing was rewritten",
        "retryable": False,
    }
    assert (missing["code"], missing["message"]) == ("invalid_request", "the story has no version 3")
    assert events[-2]["type"] == "saved" and events[-2]["version"] == 3
    assert len(fake_anthropic.requests) == 1


def test_the_story_pages_rewrite_form_sends_the_latest_version_it_shows(
    writer: Any, cast: Any, offline: None
) -> None:
    story_id, _, client, page = _story_page(writer)
    assert page.count('name="base_version" value="1"') == 3
    story = Story.objects.get(pk=story_id)
    screenplay_version_write(user_id=writer.pk, story=story, content=screenplay(scenes=3))
    url = f"/stories/{story_id}/versions/1/scenes/0/regenerate/"
    response = client.post(url, {"base_version": "1"})
    assert response.status_code == 409
    assert "version 2 was saved after version 1, the latest this rewrite knew of" in response.content.decode()
    assert not ScreenplayVersion.objects.filter(story_id=story_id, number=3).exists()
    # Without JavaScript the form posts the same field; a form without it still rewrites.
    assert client.post(url, {"base_version": "2"})["Location"] == f"/stories/{story_id}/?version=3"


def test_any_scene_of_a_version_can_be_rewritten_whatever_the_outline_limit(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic, settings: Any
) -> None:
    # The index was bounded by ten times STORY_PARALLEL_MAX_SCENES, which bounds outlines only: with it
    # at 2, scene 21 of an imported or single-pass version of 25 could not be rewritten (its form failed
    # with "index must be between 0 and 20").
    settings.STORY_PARALLEL_MAX_SCENES = 2
    story_id, _ = _story_with_version(writer, scenes=25)
    fake_anthropic.default = FakeScreenwriter(screenplay(scenes=25), tokens_per_second=4000)
    client = APIClient()
    client.force_authenticate(writer)
    response = client.post(f"/api/stories/{story_id}/versions/1/scenes/24/regenerate/", {}, format="json")
    assert response.status_code == 201, response.content
    assert "Step 2: write scene 25 of 25" in last_user_text(fake_anthropic.requests[0].body)
    missing = client.post(f"/api/stories/{story_id}/versions/1/scenes/25/regenerate/", {}, format="json")
    assert missing.json()["message"] == "version 1 has 25 scenes; index 25 is not one"
    single, _ = _story_with_version(writer, scenes=1)
    past = client.post(f"/api/stories/{single}/versions/1/scenes/1/regenerate/", {}, format="json")
    assert past.json()["message"] == "version 1 has 1 scene; index 1 is not one"  # was "1 scenes"


async def test_null_instructions_on_the_socket_are_no_instructions(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # `"instructions": null` was refused ("instructions must be a string"), where `model`, `max_tokens`
    # and `base_version` took null as "not given".
    story_id, _ = await sync_to_async(_story_with_version)(writer)
    fake_anthropic.default = FakeScreenwriter(_rewritten(), tokens_per_second=4000)
    communicator = await ws_connect(writer)
    try:
        await communicator.send_json_to(
            {
                "type": "regenerate_scene",
                "story_id": story_id,
                "version": 1,
                "index": 1,
                "instructions": None,
                "model": None,
                "max_tokens": None,
                "base_version": None,
            }
        )
        events = await ws_events(communicator)
    finally:
        await communicator.disconnect()
    assert events[-1]["type"] == "done", events[-1]
    assert "<instructions>" not in last_user_text(fake_anthropic.requests[0].body)


def test_whitespace_around_instructions_does_not_count_against_their_limit() -> None:
    request = scene_regenerate_request_parse(
        {"story_id": 1, "version": 1, "index": 0, "instructions": "\n" + "i" * 2000 + "\n"}
    )
    assert request.instructions == "i" * 2000


INSTRUCTIONS_REFUSED = (
    "instructions contain a control character (U+001B); only tabs and line breaks may be in it"
)


def test_instructions_with_a_control_character_are_refused_by_the_api_and_the_page(
    writer: Any, cast: Any, offline: None
) -> None:
    story_id, _, client, _ = _story_page(writer)
    api = APIClient()
    api.force_authenticate(writer)
    url = f"/api/stories/{story_id}/versions/1/scenes/0/regenerate/"
    response = api.post(url, {"instructions": "Rain.\x1b[2J"}, format="json")
    assert response.status_code == 400
    assert (response.json()["code"], response.json()["message"]) == ("invalid_request", INSTRUCTIONS_REFUSED)
    page = client.post(f"/stories/{story_id}/versions/1/scenes/0/regenerate/", {"instructions": "Rain.\x1b"})
    assert page.status_code == 400
    assert INSTRUCTIONS_REFUSED in page.content.decode()
    assert not GenerationRun.objects.exists()
    assert not ScreenplayVersion.objects.filter(story_id=story_id, number=2).exists()


def test_instructions_refused_on_the_story_page_are_kept_in_the_open_form(
    writer: Any, cast: Any, offline: None
) -> None:
    # Without JavaScript the rewrite form posts, and a refusal redirected to the story page: the field
    # came back empty, and 2,000 characters of instructions (or a paste one over) had to be typed again.
    story_id, _, client, _ = _story_page(writer)
    typed = 'Make the chef quieter, "softer" & <calmer>. ' * 50  # 2,250 characters
    response = client.post(f"/stories/{story_id}/versions/1/scenes/1/regenerate/", {"instructions": typed})
    assert response.status_code == 400
    page = response.content.decode()
    assert "instructions are longer than 2000 characters" in page
    assert "Version 1" in page
    assert page.count('<details class="scene-rewrite" open>') == 1
    form = page.split('<details class="scene-rewrite" open>')[1]
    assert f'action="/stories/{story_id}/versions/1/scenes/1/regenerate/"' in form
    assert f'value="{escape(typed)}" autofocus' in form
    assert "<calmer>" not in page
    # The page is served at the form's URL: its links to versions name the story page, not "?version=".
    assert f'<a href="/stories/{story_id}/?version=1">v1</a>' in page and 'href="?' not in page
    assert not GenerationRun.objects.exists()


async def test_instructions_with_a_control_character_are_refused_on_the_socket(
    writer: Any, cast: Any, offline: None
) -> None:
    story_id, _ = await sync_to_async(_story_with_version)(writer, model="offline")
    communicator = await ws_connect(writer)
    try:
        message = {"type": "regenerate_scene", "story_id": story_id, "version": 1, "index": 0}
        await communicator.send_json_to({**message, "instructions": "Rain.\x1b[2J"})
        event = json.loads(await communicator.receive_from())
        assert (event["code"], event["message"]) == ("invalid_request", INSTRUCTIONS_REFUSED)
        # Lines and tabs are kept.
        await communicator.send_json_to({**message, "instructions": "Rain.\n\tThen sun."})
        assert (await ws_events(communicator))[-1]["type"] == "done"
    finally:
        await communicator.disconnect()
    run = await GenerationRun.objects.aget()
    assert run.status == "succeeded"


def test_a_scene_of_a_version_whose_persona_was_deleted_since_is_rewritten(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    # A restored version may name a persona an editor deleted since (its part is uncast): rewriting any
    # of its scenes was refused "unknown personas: femme-fatale" for good, where the writer expects the
    # part to stay as written and the rewrite to use the personas that still exist.
    story_id, old = _story_with_version(writer)
    uncast = copy.deepcopy(old)
    for character in uncast["characters"]:
        if character.get("persona") == "femme-fatale":
            character["persona"] = None
    story = Story.objects.get(pk=story_id)
    screenplay_version_write(user_id=writer.pk, story=story, content=uncast)
    PersonaConfig.objects.filter(name="femme-fatale").delete()
    client = APIClient()
    client.force_authenticate(writer)
    assert client.post(f"/api/stories/{story_id}/versions/1/restore/").status_code == 201
    fake_anthropic.default = FakeScreenwriter(_rewritten(), tokens_per_second=4000)
    response = client.post(f"/api/stories/{story_id}/versions/3/scenes/1/regenerate/", {}, format="json")
    assert response.status_code == 201, response.content
    saved = ScreenplayVersion.objects.get(story_id=story_id, number=4).content
    assert saved["characters"] == old["characters"]
    assert saved["scenes"][1]["elements"] == _rewritten()["scenes"][1]["elements"]

from __future__ import annotations

import io
import json
from typing import Any
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import AsyncClient, override_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from personas.services import EDITORS_GROUP
from stories import services
from stories.models import GenerationRun, ScreenplayVersion, Story, StoryCast
from tests.conftest import etag_revalidated

SCREENPLAY = {
    "title": "The Heist",
    "characters": [{"name": "MAX", "persona": "hero"}],
    "scenes": [
        {
            "heading": "INT. VAULT - NIGHT",
            "elements": [{"type": "dialogue", "character": "MAX", "text": "Now."}],
        },
        {"heading": "EXT. ROOF - DAWN", "elements": [{"type": "action", "text": "Sirens."}]},
    ],
}


def client_for(user: Any) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


@pytest.fixture
def story(writer: Any, persona_factory: Any) -> Story:
    story = Story.objects.create(owner=writer, title="The Heist", plot="A crew robs a vault.")
    StoryCast.objects.create(story=story, persona=persona_factory("hero"), character_name="MAX", order=0)
    for number in (1, 2):
        run = GenerationRun.objects.create(
            user=writer,
            story=story,
            status="succeeded",
            model="offline",
            max_tokens=1024,
            persona_names=["hero"],
            ttft_ms=120 * number,
            total_ms=900 * number,
            input_tokens=300,
            output_tokens=700 * number,
        )
        ScreenplayVersion.objects.create(
            story=story, number=number, content=SCREENPLAY, model="offline", max_tokens=1024, run=run
        )
    Story.objects.filter(pk=story.pk).update(latest_version_number=2)
    story.refresh_from_db()
    return story


def test_the_owner_lists_creates_reads_changes_and_deletes_a_story(writer: Any, story: Story) -> None:
    client = client_for(writer)
    listed = client.get("/api/stories/").json()
    assert listed["count"] == 1
    assert listed["results"][0]["title"] == "The Heist"
    assert listed["results"][0]["cast"] == [{"persona": "hero", "character_name": "MAX", "order": 0}]

    created = client.post("/api/stories/", {"title": "  Second  ", "plot": "Two go."}, format="json")
    assert created.status_code == 201
    assert created.json()["title"] == "Second"
    assert Story.objects.get(pk=created.json()["id"]).owner == writer

    changed = client.patch(f"/api/stories/{story.pk}/", {"plot": "New plot."}, format="json")
    assert changed.status_code == 200
    assert changed.json()["plot"] == "New plot."
    assert changed.json()["title"] == "The Heist"
    story.refresh_from_db()
    assert story.plot == "New plot."

    assert client.delete(f"/api/stories/{story.pk}/").status_code == 204
    assert not Story.objects.filter(pk=story.pk).exists()
    # The runs stay as measurements, detached from the deleted story.
    assert GenerationRun.objects.filter(user=writer, story=None).count() == 2


def test_a_page_of_versions_costs_the_same_queries_whatever_their_number_and_looseness(
    writer: Any, django_assert_max_num_queries: Any
) -> None:
    # Each version's title and scene count were read from its content, loaded one version at a time: a
    # page of 20 versions was 25 queries, and read all of each screenplay (megabytes for a feature film).
    story = Story.objects.create(owner=writer, title="Drafts", plot="A plot.", latest_version_number=60)
    scene = {"heading": "INT. ROOM", "elements": []}
    contents: list[Any] = [{"title": f"Draft {n}", "scenes": [scene] * (n % 4)} for n in range(1, 57)]
    # What an older version, or one edited in the admin, may hold: read as before.
    contents += [
        {"title": 7, "scenes": "none"},
        {"scenes": [scene]},
        ["not", "an", "object"],
        {"title": "Été"},
    ]
    ScreenplayVersion.objects.bulk_create(
        ScreenplayVersion(story=story, number=number, content=content)
        for number, content in enumerate(contents, start=1)
    )
    client = client_for(writer)
    with django_assert_max_num_queries(6):
        page = client.get(f"/api/stories/{story.pk}/versions/").json()
    summaries = [(v["number"], v["title"], v["scene_count"]) for v in page["results"]]
    assert summaries[:5] == [(60, "Été", 0), (59, "", 0), (58, "", 1), (57, "7", 0), (56, "Draft 56", 0)]
    assert summaries[5:] == [(n, f"Draft {n}", n % 4) for n in range(55, 40, -1)]


def test_versions_are_listed_newest_first_and_one_version_carries_its_content(
    writer: Any, story: Story
) -> None:
    client = client_for(writer)
    versions = client.get(f"/api/stories/{story.pk}/versions/").json()
    assert [v["number"] for v in versions["results"]] == [2, 1]
    assert versions["results"][0]["scene_count"] == 2
    assert "content" not in versions["results"][0]
    one = client.get(f"/api/stories/{story.pk}/versions/1/").json()
    assert one["content"] == SCREENPLAY
    assert client.get(f"/api/stories/{story.pk}/versions/3/").status_code == 404


def test_runs_list_the_users_runs_with_timings_and_usage(
    writer: Any, other_writer: Any, story: Story
) -> None:
    GenerationRun.objects.create(user=other_writer, model="offline", max_tokens=1, status="failed")
    body = client_for(writer).get("/api/runs/").json()
    assert body["count"] == 2
    newest = body["results"][0]
    assert newest["version"] == 2
    assert newest["story"] == story.pk
    assert newest["timings"]["ttft_ms"] == 240
    assert newest["timings"]["total_ms"] == 1800
    assert newest["usage"] == {
        "input_tokens": 300,
        "output_tokens": 1400,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
    }
    assert newest["usage_estimated"] is False
    assert "raw_text" not in newest


def test_the_run_list_is_paginated(writer: Any) -> None:
    GenerationRun.objects.bulk_create(
        GenerationRun(user=writer, model="offline", max_tokens=1024, status="succeeded") for _ in range(25)
    )
    first = client_for(writer).get("/api/runs/").json()
    assert first["count"] == 25
    assert len(first["results"]) == 20
    assert first["next"].endswith("/api/runs/?page=2")


# --- The owner / other user / anonymous / editor matrix ---------------------------------------


def _routes(story: Story) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [
        ("get", f"/api/stories/{story.pk}/", None),
        ("patch", f"/api/stories/{story.pk}/", {"title": "Taken over"}),
        ("delete", f"/api/stories/{story.pk}/", None),
        ("get", f"/api/stories/{story.pk}/versions/", None),
        ("get", f"/api/stories/{story.pk}/versions/1/", None),
    ]


@pytest.fixture
def editor(user_factory: Any) -> Any:
    editor = user_factory("ed", is_staff=True)
    editor.groups.add(Group.objects.get(name=EDITORS_GROUP))
    return editor


@pytest.mark.parametrize("who", ["other_writer", "editor"])
@pytest.mark.parametrize("route", range(5))
def test_another_users_story_versions_are_not_found_and_unchanged(
    request: pytest.FixtureRequest, who: str, route: int, story: Story
) -> None:
    method, url, data = _routes(story)[route]
    response = getattr(client_for(request.getfixturevalue(who)), method)(url, data, format="json")
    assert response.status_code == 404
    story.refresh_from_db()
    assert story.title == "The Heist"
    assert story.versions.count() == 2


@pytest.mark.parametrize("who", ["other_writer", "editor"])
def test_lists_never_show_another_users_stories_or_runs(
    request: pytest.FixtureRequest, who: str, story: Story
) -> None:
    client = client_for(request.getfixturevalue(who))
    assert client.get("/api/stories/").json()["count"] == 0
    assert client.get("/api/runs/").json()["count"] == 0


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "/api/stories/"),
        ("post", "/api/stories/"),
        ("get", "/api/stories/{id}/"),
        ("patch", "/api/stories/{id}/"),
        ("delete", "/api/stories/{id}/"),
        ("get", "/api/stories/{id}/versions/"),
        ("get", "/api/stories/{id}/versions/1/"),
        ("get", "/api/runs/"),
    ],
)
def test_anonymous_requests_get_401_and_change_nothing(method: str, url: str, story: Story) -> None:
    response = getattr(APIClient(), method)(
        url.format(id=story.pk), {"title": "x", "plot": "y"}, format="json"
    )
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert Story.objects.filter(pk=story.pk, title="The Heist").exists()
    assert Story.objects.count() == 1


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_a_token_sent_as_a_bearer_token_is_a_401_that_says_how_to_send_it(
    writer: Any, story: Story, scheme: str
) -> None:
    # Most HTTP tools send an API key as "Authorization: Bearer <key>"; the answer was "Authentication
    # credentials were not provided.", which says the header was not there at all.
    key = Token.objects.create(user=writer).key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{scheme} {key}")
    response = client.patch(f"/api/stories/{story.pk}/", {"title": "Changed"}, format="json")
    assert (response.status_code, response["WWW-Authenticate"]) == (401, "Token")
    assert response.json()["detail"] == (
        "Send the API token as 'Authorization: Token <key>': the Bearer scheme is not read."
    )
    assert Story.objects.get(pk=story.pk).title == story.title
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get(f"/api/stories/{story.pk}/").status_code == 200


def test_a_huge_story_id_is_a_404_not_a_database_error(writer: Any) -> None:
    client = client_for(writer)
    assert client.get(f"/api/stories/{10**30}/").status_code == 404
    assert client.get(f"/api/stories/{10**30}/versions/{10**30}/").status_code == 404


# --- Input bounds -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"title": "x" * 201, "plot": "p"}, "title", "no more than 200 characters"),
        ({"title": "", "plot": "p"}, "title", "may not be blank"),
        ({"title": "t", "plot": " \n\t\u3000 "}, "plot", "may not be blank"),
        ({"plot": "p"}, "title", "required"),
        ({"title": "t", "plot": "p" * 101}, "plot", "no more than 100 characters (it has 101)"),
        ({"title": "t", "plot": ["a list"]}, "plot", "Not a valid string"),
        ({"title": "t", "plot": 0}, "plot", "Not a valid string"),
        ({"title": 12.5, "plot": "p"}, "title", "Not a valid string"),
        ({"title": "nul\x00here", "plot": "p"}, "title", "title contains a NUL"),
        ('{"title": "t", "plot": "lone \\ud800 surrogate"}', "plot", "unpaired UTF-16 surrogate"),
        ('{"title": "low \\udfff", "plot": "p"}', "title", "unpaired UTF-16 surrogate"),
        ('{"title": "t", "plot": "x\\u0000"}', "plot", "plot contains a NUL"),
    ],
)
@override_settings(STORY_MAX_PLOT_CHARS=100)
def test_bad_story_input_is_a_400_naming_the_field(
    writer: Any, body: dict[str, Any] | str, field: str, message: str
) -> None:
    # Lone surrogates can only travel as JSON escapes: those bodies are sent as raw JSON text.
    text = body if isinstance(body, str) else json.dumps(body)
    response = client_for(writer).post("/api/stories/", text, content_type="application/json")
    assert response.status_code == 400
    assert message in " ".join(response.json()[field])
    assert Story.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (
            '{"title": "t", "plot": "lone \\ud800 surrogate"}',
            "plot",
            "plot contains an unpaired UTF-16 surrogate (\\ud800-\\udfff), which is not valid Unicode.",
        ),
        (
            '{"title": "t", "plot": "x\\u0000"}',
            "plot",
            "plot contains a NUL (\\u0000) character, which cannot be stored.",
        ),
    ],
)
def test_text_the_database_cannot_store_is_said_once_without_the_value(
    writer: Any, story: Story, body: str, field: str, message: str
) -> None:
    # DRF's own surrogate check answered too ("Surrogate characters are not allowed: U+D800."): two
    # messages for one problem, the second naming the character sent.
    client = client_for(writer)
    created = client.post("/api/stories/", body, content_type="application/json")
    changed = client.patch(f"/api/stories/{story.pk}/", body, content_type="application/json")
    assert (created.status_code, created.json()) == (400, {field: [message]})
    assert (changed.status_code, changed.json()) == (400, {field: [message]})


def test_an_emoji_plot_is_stored_and_returned_intact(writer: Any) -> None:
    plot = "A heist \U0001f3ac with a paired surrogate pair in JSON"
    client = client_for(writer)
    created = client.post(
        "/api/stories/",
        '{"title": "Emoji", "plot": "A heist \\ud83c\\udfac with a paired surrogate pair in JSON"}',
        content_type="application/json",
    )
    assert created.status_code == 201
    assert Story.objects.get().plot == plot


def test_a_plot_of_whitespace_only_is_refused_as_blank_as_a_generation_refuses_it(
    writer: Any, story: Story
) -> None:
    # The story kept a plot of spaces, and every generation from its page then failed with
    # "plot must not be empty".
    response = client_for(writer).patch(f"/api/stories/{story.pk}/", {"plot": "\n   \n"}, format="json")
    assert (response.status_code, response.json()) == (400, {"plot": ["This field may not be blank."]})
    story.refresh_from_db()
    assert story.plot == "A crew robs a vault."


def test_a_nul_byte_in_a_patch_is_a_400_and_changes_nothing(writer: Any, story: Story) -> None:
    response = client_for(writer).patch(
        f"/api/stories/{story.pk}/", '{"plot": "a\\u0000b"}', content_type="application/json"
    )
    assert response.status_code == 400
    story.refresh_from_db()
    assert story.plot == "A crew robs a vault."


def test_a_story_deleted_while_a_patch_changes_it_is_a_404(
    writer: Any, story: Story, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another tab deletes the story after this PATCH found it: the save of its title updated no row,
    # and Django's "Save with update_fields did not affect any rows." was a 500 (seen on PostgreSQL with
    # a rename and a delete sent at once).
    clean = services.text_clean_or_reject

    def deleted_first(value: str, *, field: str) -> str:
        services.story_delete(story=Story.objects.get(pk=story.pk))  # another request's copy of it
        return clean(value, field=field)

    monkeypatch.setattr(services, "text_clean_or_reject", deleted_first)
    response = client_for(writer).patch(f"/api/stories/{story.pk}/", {"title": "New"}, format="json")
    assert (response.status_code, response.json()) == (404, {"detail": f"No story {story.pk} among yours."})
    assert not Story.objects.exists()


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        ("not json at all", "application/json", 400),
        ("[" * 100_000, "application/json", 400),
        ('{"title": "t", "plot": "p"}', "text/plain", 415),
        ("<story/>", "application/xml", 415),
        ('"just a string"', "application/json", 400),
        ("[1, 2]", "application/json", 400),
        ('{"title": "t", "plot": NaN}', "application/json", 400),
    ],
)
def test_malformed_bodies_are_client_errors(writer: Any, body: str, content_type: str, status: int) -> None:
    response = client_for(writer).post("/api/stories/", body, content_type=content_type)
    assert response.status_code == status
    assert Story.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # json.loads kept the last of a repeated key without a word: the story was saved with the
        # second plot, the first lost.
        (
            '{"title": "t", "plot": "The whole plot.", "plot": "The"}',
            'JSON parse error - The JSON has the key "plot" twice in one object (only the last would be '
            "kept): remove one.",
        ),
        # The message was Python's: "... use sys.set_int_max_str_digits() to increase the limit".
        (
            '{"title": "t", "plot": "p", "n": ' + "1" * 5000 + "}",
            "JSON parse error - The JSON holds an integer longer than 64 digits.",
        ),
    ],
)
def test_a_json_body_with_a_key_twice_or_a_huge_number_is_a_400_saying_so(
    writer: Any, story: Story, body: str, message: str
) -> None:
    client = client_for(writer)
    created = client.post("/api/stories/", body, content_type="application/json")
    changed = client.patch(f"/api/stories/{story.pk}/", body, content_type="application/json")
    assert (created.status_code, created.json()) == (400, {"detail": message})
    assert (changed.status_code, changed.json()) == (400, {"detail": message})
    assert Story.objects.get().plot == "A crew robs a vault."


@pytest.mark.parametrize(
    ("method", "url"), [("post", "/api/stories/"), ("patch", "story"), ("post", "generate")]
)
def test_every_json_endpoint_refuses_a_body_that_is_not_an_object(
    writer: Any, story: Story, method: str, url: str
) -> None:
    # One check in the parser for every endpoint (the scene rewrite read a list as an empty object).
    url = {"story": f"/api/stories/{story.pk}/", "generate": "/api/ai/generate-screenplay/"}.get(url, url)
    response = getattr(client_for(writer), method)(url, '["title", "plot"]', content_type="application/json")
    assert response.status_code == 400
    assert response.json()["detail"] == "The request body must be a JSON object ({...}), not a list."
    assert Story.objects.get().title == "The Heist"


@pytest.mark.parametrize("url", ["/api/ai/generate-screenplay/", "regenerate"])
@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "multipart/form-data"])
def test_the_generation_endpoints_take_json_only_as_their_schema_says(
    writer: Any, story: Story, url: str, content_type: str
) -> None:
    # Their fields are JSON types (a list of personas, a boolean wait, an integer max_tokens), which a form
    # cannot carry: the schema offered form bodies, and every form generation was a 400 "personas must be
    # a list of persona names".
    path = (
        "/api/stories/{story_id}/versions/{number}/scenes/{index}/regenerate/" if url == "regenerate" else url
    )
    url = f"/api/stories/{story.pk}/versions/1/scenes/0/regenerate/" if url == "regenerate" else url
    client = client_for(writer)
    if content_type == "multipart/form-data":
        response = client.post(url, {"plot": "A heist.", "personas": "hero"}, format="multipart")
    else:
        response = client.post(url, "plot=A+heist.&personas=hero", content_type=content_type)
    assert response.status_code == 415
    assert content_type in response.json()["detail"]
    assert GenerationRun.objects.filter(status="streaming").count() == 0
    assert ScreenplayVersion.objects.filter(story=story).count() == 2
    schema = client.get("/api/schema/?format=json").json()
    assert list(schema["paths"][path]["post"]["requestBody"]["content"]) == ["application/json"]


@override_settings(API_MAX_BODY_BYTES=4096)
def test_a_body_over_the_limit_is_a_413_before_it_is_parsed(writer: Any) -> None:
    body = '{"title": "t", "plot": "' + "p" * 5000 + '"}'
    response = client_for(writer).post("/api/stories/", body, content_type="application/json")
    assert response.status_code == 413
    assert "larger than 4096 bytes" in response.json()["detail"]


def test_a_huge_form_body_is_a_client_error(writer: Any) -> None:
    response = client_for(writer).post(
        "/api/stories/",
        "title=t&plot=" + "p" * 3_000_000,
        content_type="application/x-www-form-urlencoded",
    )
    assert 400 <= response.status_code < 500
    assert Story.objects.count() == 0


_FIELDS_OVER = (
    {f"field{number}": "x" for number in range(6)},
    400,
    "The form has more than 5 fields (DATA_UPLOAD_MAX_NUMBER_FIELDS).",
)
_BYTES_OVER = (
    {"fountain": "INT. A - DAY\n\n" + "Sirens. " * 400},
    413,
    "The form is larger than 2048 bytes, not counting its files (DATA_UPLOAD_MAX_MEMORY_SIZE).",
)


@pytest.mark.parametrize(
    ("form", "url", "data", "status", "message"),
    [
        ("multipart", "/api/stories/", *_FIELDS_OVER),
        ("urlencoded", "/api/stories/", *_FIELDS_OVER),
        (
            "multipart",
            "/api/stories/import/",
            {f"file{number}": io.BytesIO(b"INT. A - DAY") for number in range(3)},
            400,
            "The form has more than 2 files (DATA_UPLOAD_MAX_NUMBER_FILES).",
        ),
        ("multipart", "versions", *_BYTES_OVER),
        ("urlencoded", "versions", *_BYTES_OVER),
    ],
)
@override_settings(
    DATA_UPLOAD_MAX_NUMBER_FIELDS=5, DATA_UPLOAD_MAX_NUMBER_FILES=2, DATA_UPLOAD_MAX_MEMORY_SIZE=2048
)
def test_a_form_past_djangos_limits_is_a_json_error_saying_which(
    writer: Any, story: Story, form: str, url: str, data: dict[str, Any], status: int, message: str
) -> None:
    # Django's parsers raise these as SuspiciousOperation, which DRF leaves to Django: an API client got
    # "The request could not be understood." (under DEBUG, as make run serves, Django's HTML page), and
    # a form over the size limit a 400 where the API's own size limit is a 413.
    url = f"/api/stories/{story.pk}/versions/" if url == "versions" else url
    client = client_for(writer)
    if form == "multipart":
        response = client.post(url, data, format="multipart")
    else:
        response = client.post(url, urlencode(data), content_type="application/x-www-form-urlencoded")
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": message}
    assert Story.objects.count() == 1
    assert ScreenplayVersion.objects.filter(story=story).count() == 2


@pytest.mark.parametrize(
    ("form", "url", "data", "field"),
    [
        # The story was saved with the last plot, the first lost; two files imported the second alone.
        ("urlencoded", "story", "title=A+heist&plot=The+whole+plot.&plot=The", "plot"),
        (
            "multipart",
            "/api/stories/import/",
            {
                "file": [
                    SimpleUploadedFile("one.fountain", b"INT. A - DAY\n\nOne."),
                    SimpleUploadedFile("two.fountain", b"INT. B - DAY\n\nTwo."),
                ]
            },
            "file",
        ),
        ("multipart", "versions", {"fountain": ["INT. A - DAY\n\nOne.", "INT. B - DAY\n\nTwo."]}, "fountain"),
    ],
)
def test_a_form_with_a_field_twice_is_a_400_naming_it_and_saves_nothing(
    writer: Any, story: Story, form: str, url: str, data: Any, field: str
) -> None:
    url = {"story": f"/api/stories/{story.pk}/", "versions": f"/api/stories/{story.pk}/versions/"}.get(
        url, url
    )
    client = client_for(writer)
    if form == "multipart":
        response = client.post(url, data, format="multipart")
    else:
        response = client.patch(url, data, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400
    assert response.json() == {
        field: [f"The form has the field '{field}' twice (only the last would be kept): send it once."]
    }
    story.refresh_from_db()
    assert (story.title, story.plot) == ("The Heist", "A crew robs a vault.")
    assert Story.objects.count() == 1
    assert ScreenplayVersion.objects.filter(story=story).count() == 2


@pytest.mark.parametrize(
    ("method", "url", "body", "unknown", "reads"),
    [
        (
            "post",
            "/api/stories/",
            {"title": "New", "plot": "A plot.", "tilte": "Typo"},
            "tilte",
            "title, plot",
        ),
        ("patch", "story", {"tilte": "Renamed"}, "tilte", "title, plot"),
        # Read-only fields are not written: sending them is a mistake to hear of, too.
        ("patch", "story", {"title": "Renamed", "latest_version": 9}, "latest_version", "title, plot"),
        (
            "post",
            "versions",
            {"fountain": "INT. A - DAY\n\nOne.", "base_verison": 1},
            "base_verison",
            "fountain, base_version, content, save_anyway",
        ),
        (
            "post",
            "/api/stories/import/",
            {"fountain": "INT. A - DAY\n\nOne.", "csat": {}},
            "csat",
            "file, fountain, cast",
        ),
    ],
)
def test_a_json_field_the_endpoint_does_not_read_is_a_400_naming_it_and_saves_nothing(
    writer: Any, story: Story, method: str, url: str, body: dict[str, Any], unknown: str, reads: str
) -> None:
    # A misspelt field was dropped without a word: {"tilte": ...} answered 200 with the title unchanged.
    url = {"story": f"/api/stories/{story.pk}/", "versions": f"/api/stories/{story.pk}/versions/"}.get(
        url, url
    )
    response = getattr(client_for(writer), method)(url, body, format="json")
    assert response.status_code == 400
    assert response.json() == {unknown: [f"Unknown field: this endpoint reads {reads}."]}
    story.refresh_from_db()
    assert (story.title, story.plot) == ("The Heist", "A crew robs a vault.")
    assert Story.objects.count() == 1
    assert ScreenplayVersion.objects.filter(story=story).count() == 2


def test_unknown_fields_are_named_five_at_most_and_forms_are_held_to_the_same(
    writer: Any, story: Story
) -> None:
    client = client_for(writer)
    many = {"title": "Renamed", **{f"extra{index:04}": index for index in range(1000)}}
    response = client.patch(f"/api/stories/{story.pk}/", many, format="json")
    assert response.status_code == 400
    assert response.json() == {
        **{f"extra{index:04}": ["Unknown field: this endpoint reads title, plot."] for index in range(5)},
        "non_field_errors": ["995 more unknown fields (1000 in all)."],
    }
    # A form: its unknown field too, given once or twice; the CSRF token an HTML form carries is not one.
    for body in ("title=Renamed&note=a", "title=Renamed&note=a&note=b"):
        response = client.patch(
            f"/api/stories/{story.pk}/", body, content_type="application/x-www-form-urlencoded"
        )
        assert response.json() == {"note": ["Unknown field: this endpoint reads title, plot."]}
    response = client.patch(
        f"/api/stories/{story.pk}/",
        "title=Renamed&csrfmiddlewaretoken=x",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    # A form's dict, given one key a field (cast.BOB=...), is the field's.
    imported = client.post(
        "/api/stories/import/",
        {"file": SimpleUploadedFile("a.fountain", b"INT. A - DAY\n\nBOB\nHi."), "cast.BOB": "hero"},
        format="multipart",
    )
    assert imported.status_code == 201, imported.content


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("/api/stories/{id}/diff/?from=1&to=2&from=2", "from"),
        ("/api/stories/{id}/versions/1/export/?format=json&format=pdf", "format"),
        ("/api/runs/{run}/events/?after=0&after=3", "after"),
        ("/api/stories/?page=1&page=2", "page"),
        ("/api/personas/?search=her&search=vil", "search"),
    ],
)
def test_a_query_parameter_given_twice_is_a_400_naming_it(
    writer: Any, story: Story, url: str, name: str
) -> None:
    # The last was read without a word: ?from=1&to=2&from=2 compared version 2 with itself, and
    # ?format=json&format=pdf downloaded a PDF.
    run = GenerationRun.objects.filter(story=story).first()
    assert run is not None
    response = client_for(writer).get(url.format(id=story.pk, run=run.pk))
    assert (response.status_code, response.json()) == (
        400,
        {
            "detail": f"The query has the parameter '{name}' twice (only the last would be read): send it once.",
            "code": "parameter_twice",
        },
    )
    assert response["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("method", "url", "unknown", "read"),
    [
        ("get", "/api/runs/?status=zzz", "'status'", "page, format"),
        ("get", "/api/stories/?pagee=2", "'pagee'", "page, format"),
        ("get", "/api/stories/{id}/?page=2", "'page'", "format"),
        ("get", "/api/stories/{id}/versions/?sort=number", "'sort'", "page, format"),
        ("get", "/api/stories/{id}/versions/1/?content=no", "'content'", "format"),
        ("get", "/api/stories/{id}/versions/1/export/?format=pdf&fmt=fdx", "'fmt'", "format"),
        ("get", "/api/stories/{id}/diff/?from=1&to=2&context=3", "'context'", "from, to, format"),
        ("get", "/api/runs/{run}/events/?after=0&since=3", "'since'", "after, confirm, format"),
        ("get", "/api/personas/?q=her", "'q'", "search, page, format"),
        ("get", "/api/personas/contexts/?names=a&name=b", "'name'", "names, format"),
        ("get", "/api/personas/hero/?x=1", "'x'", "format"),
        ("post", "/api/stories/?page=2", "'page'", "format"),
        ("delete", "/api/stories/{id}/?force=1", "'force'", "format"),
    ],
)
def test_a_query_parameter_the_endpoint_does_not_read_is_a_400_naming_it(
    writer: Any, story: Story, method: str, url: str, unknown: str, read: str
) -> None:
    # Was ignored: /api/runs/?status=zzz listed every run and ?pagee=2 the first page, 200, so a client
    # took the answer for the one it asked for; a DELETE with a parameter it meant deleted anyway.
    run = GenerationRun.objects.filter(story=story).first()
    assert run is not None
    client = client_for(writer)
    response = getattr(client, method)(url.format(id=story.pk, run=run.pk))
    assert (response.status_code, response.json()) == (
        400,
        {
            "detail": f"Unknown query parameter {unknown}: this endpoint reads {read}.",
            "code": "unknown_parameter",
        },
    )
    assert Story.objects.filter(pk=story.pk).exists()


@pytest.mark.parametrize("body", [b"title=caf%E9&plot=P", b"title=caf\xe9&plot=P", b"title=T&pl%FFot=P"])
def test_a_form_body_that_is_not_utf8_is_a_400_not_saved_with_replacement_characters(
    writer: Any, story: Story, body: bytes
) -> None:
    # Was 201 with the title "caf\ufffd" (Django decodes a form with errors="replace"), where the same
    # title in a JSON body is a 400: the writer's letter was lost without a word.
    client = client_for(writer)
    count = Story.objects.count()
    response = client.post("/api/stories/", body, content_type="application/x-www-form-urlencoded")
    assert (response.status_code, response.json()) == (
        400,
        {
            "detail": "Form parse error - the body is not utf-8 text (percent-encode each field's utf-8 bytes)."
        },
    )
    assert Story.objects.count() == count
    changed = client.patch(
        f"/api/stories/{story.pk}/", body, content_type="application/x-www-form-urlencoded"
    )
    assert changed.status_code == 400
    story.refresh_from_db()
    assert "\ufffd" not in story.title
    good = client.post(
        "/api/stories/", "title=caf%C3%A9+bar&plot=P", content_type="application/x-www-form-urlencoded"
    )
    assert (good.status_code, good.json()["title"]) == (201, "café bar")


def _multipart(*parts: tuple[bytes, bytes, bytes | None]) -> bytes:
    """A multipart/form-data body (boundary "B") of (name, value, file name or None) parts."""
    body = b""
    for name, value, filename in parts:
        file_part = b'; filename="' + filename + b'"' if filename is not None else b""
        body += b'--B\r\nContent-Disposition: form-data; name="' + name + b'"' + file_part + b"\r\n\r\n"
        body += value + b"\r\n"
    return body + b"--B--\r\n"


@pytest.mark.parametrize(
    ("url", "parts"),
    [
        ("/api/stories/", [(b"title", b"caf\xe9", None), (b"plot", b"P", None)]),
        ("/api/stories/", [(b"title", b"T", None), (b"plot", b"\xc9t\xe9", None)]),
        (
            "/api/stories/import/",
            [(b"file", b"INT. A\n\nHi.\n", b"a.fountain"), (b"cast", b'{"B\xc9A": null}', None)],
        ),
    ],
)
def test_a_multipart_form_whose_fields_are_not_utf8_is_a_400_not_saved_with_replacement_characters(
    writer: Any, url: str, parts: list[tuple[bytes, bytes, bytes | None]]
) -> None:
    # Was: 201, the Latin-1 title saved as "caf\ufffd" (Django's multipart parser decodes each field's
    # value with errors="replace"), where a urlencoded or JSON body like it is a 400. (A part whose
    # headers are not UTF-8, a field's or a file's name, Django skips: the field is then missing.)
    client = client_for(writer)
    count = Story.objects.count()
    response = client.post(url, _multipart(*parts), content_type="multipart/form-data; boundary=B")
    assert (response.status_code, response.json()) == (
        400,
        {"detail": "Multipart form parse error - a field is not utf-8 text (send each field's utf-8 bytes)."},
    )
    assert Story.objects.count() == count


@pytest.mark.parametrize(
    "body",
    [
        b'{"title": "New title"}',  # JSON sent with a multipart Content-Type
        b'--B\r\nContent-Disposition: form-data; name="t\xe9tle"\r\n\r\nNew title\r\n--B--\r\n',
        b"--B\r\nContent-Type: text/plain\r\n\r\nNew title\r\n--B--\r\n",  # a part with no name
    ],
)
def test_a_multipart_body_with_no_part_django_can_read_is_a_400_not_an_empty_patch(
    writer: Any, story: Story, body: bytes
) -> None:
    # Django's multipart parser skips what it cannot read (no boundary in the body, a part whose headers
    # are not UTF-8 or that has no name), so a PATCH of such a body was a PATCH of nothing: 200, the
    # title unchanged, and the client took its edit for saved.
    title = story.title
    response = client_for(writer).patch(
        f"/api/stories/{story.pk}/", body, content_type="multipart/form-data; boundary=B"
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith(
        "Multipart form parse error - no part of the body could be read"
    )
    story.refresh_from_db()
    assert story.title == title


def test_an_empty_multipart_form_is_still_an_empty_patch(writer: Any, story: Story) -> None:
    response = client_for(writer).patch(
        f"/api/stories/{story.pk}/", b"--B--\r\n", content_type="multipart/form-data; boundary=B"
    )
    assert response.status_code == 200


def test_a_multipart_form_in_utf8_keeps_its_letters(writer: Any) -> None:
    client = client_for(writer)
    form = _multipart((b"title", "café «noir»".encode(), None), (b"plot", "Été.".encode(), None))
    created = client.post("/api/stories/", form, content_type="multipart/form-data; boundary=B")
    assert created.status_code == 201, created.json()
    assert (created.json()["title"], created.json()["plot"]) == ("café «noir»", "Été.")
    upload = _multipart((b"file", "INT. CAFÉ - DAY\n\nHé.\n".encode(), "été.fountain".encode()))
    imported = client.post("/api/stories/import/", upload, content_type="multipart/form-data; boundary=B")
    assert imported.status_code == 201, imported.json()
    assert imported.json()["version"]["content"]["scenes"][0]["heading"] == "INT. CAFÉ - DAY"


def test_many_unknown_query_parameters_are_named_five_at_most(writer: Any, story: Story) -> None:
    query = urlencode({f"p{n:02}": "1" for n in range(30)})
    response = client_for(writer).get(f"/api/stories/?{query}")
    assert response.status_code == 400
    assert response.json()["detail"] == (
        "Unknown query parameters 'p00', 'p01', 'p02', 'p03', 'p04' and 25 more (30 in all): "
        "this endpoint reads page, format."
    )


@pytest.mark.parametrize(
    ("method", "url", "allow"),
    [
        ("get", "/api/ai/generate-screenplay/?plot=A+heist", "POST, OPTIONS"),
        ("put", "/api/stories/{id}/?title=New", "GET, PATCH, DELETE, HEAD, OPTIONS"),
        ("delete", "/api/stories/?page=1", "GET, POST, HEAD, OPTIONS"),
        ("post", "/api/runs/{run}/?page=2", "GET, HEAD, OPTIONS"),
    ],
)
def test_a_method_the_endpoint_does_not_take_is_a_405_whatever_its_query(
    writer: Any, story: Story, method: str, url: str, allow: str
) -> None:
    # Was 400 "Unknown query parameter 'plot': this endpoint reads format.": a client trying a GET of the
    # generation with its fields in the query was told that plot is no parameter, not that it must POST.
    run = GenerationRun.objects.filter(story=story).first()
    assert run is not None
    response = getattr(client_for(writer), method)(url.format(id=story.pk, run=run.pk))
    assert response.status_code == 405
    assert response.json()["detail"] == f'Method "{method.upper()}" not allowed.'
    assert response["Allow"] == allow
    assert Story.objects.filter(pk=story.pk, title=story.title).exists()


def test_an_anonymous_request_with_an_unknown_parameter_is_a_401_first() -> None:
    assert APIClient().get("/api/stories/?zzz=1").status_code == 401


def test_a_format_no_renderer_has_is_a_400_naming_the_formats(writer: Any, story: Story) -> None:
    # Was DRF's bare 404 "Not found.", as if the story did not exist.
    client = client_for(writer)
    response = client.get(f"/api/stories/{story.pk}/?format=xml")
    assert (response.status_code, response.json()) == (
        400,
        {"detail": "format='xml' is not offered here; formats: json, api.", "code": "invalid_parameter"},
    )
    # DRF's own formats still work.
    assert client.get(f"/api/stories/{story.pk}/?format=json").json()["id"] == story.pk
    assert client.get("/api/stories/?format=json&page=1").status_code == 200
    browsable = client.get(f"/api/stories/{story.pk}/?format=api")
    assert (browsable.status_code, browsable["Content-Type"]) == (200, "text/html; charset=utf-8")


def test_the_schemas_unknown_format_names_each_format_once(writer: Any) -> None:
    # The schema has two renderers of each format (two media types): "formats: yaml, yaml, json, json."
    response = client_for(writer).get("/api/schema/?format=xml")
    # As JSON, as every API error: the schema's YAML renderer wrote DRF's error details as tagged
    # objects ("detail: string: ... code: parse_error").
    assert (response.status_code, response["Content-Type"]) == (400, "application/json")
    assert response.json() == {
        "detail": "format='xml' is not offered here; formats: yaml, json.",
        "code": "invalid_parameter",
    }


@pytest.mark.parametrize("debug", [False, True])
def test_a_write_to_an_api_url_without_its_slash_is_redirected_keeping_its_method_and_body(
    writer: Any, story: Story, settings: Any, debug: bool
) -> None:
    # Django redirected with 301, which clients follow with a GET: POST /api/stories listed the stories,
    # 200, and saved nothing. Under DEBUG (make run) it raised RuntimeError instead: a 500.
    settings.DEBUG = debug
    client = client_for(writer)
    created = client.post("/api/stories", {"title": "New", "plot": "A plot."}, format="json")
    changed = client.patch(f"/api/stories/{story.pk}", {"title": "Renamed"}, format="json")
    assert (created.status_code, created["Location"]) == (308, "/api/stories/")
    assert (changed.status_code, changed["Location"]) == (308, f"/api/stories/{story.pk}/")
    assert (
        client.post(
            "/api/stories", {"title": "New", "plot": "A plot."}, format="json", follow=True
        ).status_code
        == 201
    )
    assert Story.objects.filter(title="New").count() == 1
    # A read is redirected as Django always did.
    assert client.get("/api/stories").status_code == 301


def test_put_is_not_offered(writer: Any, story: Story) -> None:
    response = client_for(writer).put(f"/api/stories/{story.pk}/", {"title": "t", "plot": "p"}, format="json")
    assert response.status_code == 405


@pytest.mark.parametrize(
    ("plot", "code_point"), [("Esc\x1b[31m", "U+001B"), ("Bell\x07", "U+0007"), ("C1\x9b", "U+009B")]
)
def test_a_story_plot_with_a_control_character_is_refused_through_the_api(
    writer: Any, story: Story, plot: str, code_point: str
) -> None:
    # The page's Regenerate sends the story's plot to generate, which refuses it: refused here first.
    client = client_for(writer)
    created = client.post("/api/stories/", {"title": "T", "plot": plot}, format="json")
    assert created.status_code == 400
    assert created.json() == {
        "plot": [f"plot contains a control character ({code_point}); only tabs and line breaks may be in it."]
    }
    assert client.patch(f"/api/stories/{story.pk}/", {"plot": plot}, format="json").status_code == 400
    kept = client.patch(f"/api/stories/{story.pk}/", {"plot": "Two\r\nlines\tand a tab."}, format="json")
    assert kept.status_code == 200 and kept.json()["plot"] == "Two\r\nlines\tand a tab."


# Right-to-left marks, a zero-width space, an override, an isolate pair, a soft hyphen: each is text, and
# none is drawn. So are the Hangul fillers (letters: they were taken for visible), the Braille blank, a
# variation selector and the combining grapheme joiner.
@pytest.mark.parametrize(
    "title",
    [
        "\u200f\u200f",
        "\u200b",
        "\u202e",
        "\u2066\u2069",
        "\u00ad",
        "\u200e \u200e",
        "\u3164\u3164",
        "\u115f",
        "\uffa0",
        "\u2800 \u2800",
        "\ufe0f",
        "\u034f",
    ],
)
def test_a_story_title_with_nothing_visible_is_refused(writer: Any, story: Story, title: str) -> None:
    # Such a title was saved, and the story list's link to the story had no text to click on.
    client = client_for(writer)
    created = client.post("/api/stories/", {"title": title, "plot": "A plot."}, format="json")
    assert created.status_code == 400
    assert created.json()["title"] == ["title has no visible character; a title is something to read."]
    assert client.patch(f"/api/stories/{story.pk}/", {"title": title}, format="json").status_code == 400
    story.refresh_from_db()
    assert story.title == "The Heist"
    kept = client.patch(
        f"/api/stories/{story.pk}/", {"title": "\u200f\u05d4\u05e9\u05d5\u05d3"}, format="json"
    )
    assert kept.status_code == 200 and kept.json()["title"] == "\u200f\u05d4\u05e9\u05d5\u05d3"


@pytest.mark.parametrize("title", ["Two\nlines", "Tab\there", "Esc\x1b[31m", "Sep\u2028arated", "Del\x7f"])
def test_a_story_title_is_one_line_through_the_api_as_on_the_pages(
    writer: Any, story: Story, title: str
) -> None:
    # The API stored a title with a newline or an escape sequence, which the pages' field cannot hold.
    client = client_for(writer)
    created = client.post(
        "/api/stories/", {"title": title, "plot": "Two\nlines\tare fine here."}, format="json"
    )
    assert created.status_code == 400
    assert created.json()["title"][0].startswith("title contains a line break or another control character")
    changed = client.patch(f"/api/stories/{story.pk}/", {"title": title}, format="json")
    assert changed.status_code == 400
    story.refresh_from_db()
    assert story.title == "The Heist"
    assert Story.objects.count() == 1


@pytest.mark.parametrize(("title", "code_point"), [("\x1fNight", "U+001F"), ("Night\x85", "U+0085")])
def test_a_story_title_s_control_character_at_its_edge_is_refused_not_trimmed(
    writer: Any, story: Story, title: str, code_point: str
) -> None:
    # Python's str.strip() takes U+001C-U+001F and U+0085 for white space: such a title was cut and
    # saved, where the same character inside it (and a generate's title) is refused.
    client = client_for(writer)
    created = client.post("/api/stories/", {"title": title, "plot": "A plot."}, format="json")
    assert created.status_code == 400
    assert created.json()["title"][0].startswith(
        f"title contains a line break or another control character ({code_point})"
    )
    kept = client.patch(f"/api/stories/{story.pk}/", {"title": " \u00a0Night\u3000"}, format="json")
    assert kept.status_code == 200 and kept.json()["title"] == "Night"


@pytest.mark.parametrize("charset", ["bz2_codec", "zlib_codec"])
def test_a_multipart_form_in_a_charset_that_is_not_a_text_encoding_is_a_400(
    writer: Any, charset: str
) -> None:
    # The strict decoding wraps the form's own charset: one that decompresses (bz2, zlib)
    # stays refused, as DRF's parser refuses it, never decoded (Django ignores a charset it does not know).
    form = _multipart((b"title", b"T", None), (b"plot", b"P", None))
    content_type = f"multipart/form-data; boundary=B; charset={charset}"
    response = client_for(writer).post("/api/stories/", form, content_type=content_type)
    assert (response.status_code, response.json()) == (
        400,
        {"detail": f'Unsupported charset "{charset}" in request Content-Type header.'},
    )


@pytest.mark.django_db(transaction=True)
async def test_a_json_body_whose_charset_is_no_text_encoding_is_a_400_not_a_500(writer: Any) -> None:
    # application/json; charset=zlib: decoding the body raised LookupError, a 500 (through daphne's ASGI
    # request; the test client's WSGI one fails before any of this).
    client = AsyncClient()
    await client.aforce_login(writer)
    for charset in ("zlib", "rot13"):
        for url, body in (
            ("/api/stories/", b'{"title": "a", "plot": "b"}'),
            ("/api/stories/import/", b'{"fountain": "x"}'),
        ):
            response = await client.generic(
                "POST", url, body, content_type=f"application/json; charset={charset}"
            )
            assert (response.status_code, response.json()) == (
                400,
                {"detail": f'Unsupported charset "{charset}" in request Content-Type header.'},
            ), url
    assert not await Story.objects.aexists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    ["/api/stories/{story}/versions/", "/api/stories/{story}/versions/2/", "/api/runs/", "/api/runs/{run}/"],
)
def test_a_polled_read_has_an_etag_and_if_none_match_gets_a_304_until_it_changes(
    writer: Any, story: Story, url: str, user_factory: Any
) -> None:
    # Was: no ETag, If-None-Match ignored: a client polling its versions or a run got the whole body
    # every time.
    client = client_for(writer)
    run = GenerationRun.objects.filter(story=story).order_by("pk").last()
    assert run is not None
    url = url.format(story=story.pk, run=run.pk)
    first = client.get(url)
    etag = first["ETag"]
    assert first.status_code == 200 and etag.startswith('"') and first["Cache-Control"] == "private, no-cache"
    unchanged = client.get(url, HTTP_IF_NONE_MATCH=etag)
    assert (unchanged.status_code, unchanged.content, unchanged["ETag"]) == (304, b"", etag)
    assert client.get(url, HTTP_IF_NONE_MATCH=f"W/{etag}").status_code == 304
    assert client.get(url, HTTP_IF_NONE_MATCH='"other"').status_code == 200
    # A change of what the answer shows changes its ETag: the next poll gets the body.
    ScreenplayVersion.objects.filter(story=story, number=2).update(max_tokens=2048)
    GenerationRun.objects.filter(pk=run.pk).update(output_tokens=9999)
    changed = client.get(url, HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200 and changed["ETag"] != etag
    # Another writer gets a 404 with no ETag to learn from (the list: their own runs, none).
    other = client_for(user_factory("other")).get(url, HTTP_IF_NONE_MATCH=etag)
    assert other.status_code == (200 if url == "/api/runs/" else 404) and other.get("ETag") != etag


@pytest.mark.django_db
def test_the_story_list_has_an_etag_that_changes_with_what_it_shows(
    writer: Any, story: Story, user_factory: Any
) -> None:
    # Was: no ETag, If-None-Match ignored: a client polling its stories got the whole list every time.
    client = client_for(writer)
    for number in range(25):
        Story.objects.create(owner=writer, title=f"Other {number}", plot="p")
    first_page = etag_revalidated(client, "/api/stories/")
    second_page = etag_revalidated(client, "/api/stories/?page=2")
    assert first_page != second_page
    # A title, a new version, a cast change: each is shown, each changes the tag.
    for change in (
        lambda: Story.objects.filter(pk=story.pk).update(title="Renamed"),
        lambda: Story.objects.filter(pk=story.pk).update(latest_version_number=3),
        lambda: StoryCast.objects.filter(story=story).update(character_name="MAXINE"),
    ):
        change()
        assert client.get("/api/stories/?page=2", HTTP_IF_NONE_MATCH=second_page).status_code == 200
        second_page = etag_revalidated(client, "/api/stories/?page=2")
    # Another writer's list is theirs; a page past the end is a 404 without an ETag.
    assert client_for(user_factory("other")).get("/api/stories/")["ETag"] != first_page
    past = client.get("/api/stories/?page=9", HTTP_IF_NONE_MATCH=first_page)
    assert past.status_code == 404 and "ETag" not in past


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("/api/stories/{id}/", "No story {id} among yours."),
        ("/api/stories/{id}/versions/", "No story {id} among yours."),
        ("/api/stories/{id}/versions/1/stats/", "No story {id} among yours."),
        ("/api/stories/{id}/versions/1/export/?format=fountain", "No story {id} among yours."),
        ("/api/runs/{run}/", "No run {run} among yours."),
        ("/api/runs/{run}/events/", "No run {run} among yours."),
    ],
)
def test_a_404_says_what_is_not_among_the_writers_own_in_words_not_model_names(
    writer: Any, story: Story, user_factory: Any, path: str, detail: str
) -> None:
    # Was DRF's "No Story matches the given query." (and "No GenerationRun ...", "No ScreenplayVersion
    # ..."): the server's class names, where the events of the same run said "No such run among yours.".
    # Another writer's story or run is answered exactly as a missing one.
    run = GenerationRun.objects.filter(story=story).first()
    assert run is not None
    stranger = client_for(user_factory("stranger"))
    for story_id, run_id in ((story.pk, run.pk), (999_999, 999_999)):
        response = stranger.get(path.format(id=story_id, run=run_id))
        assert (response.status_code, response.json()["detail"]) == (
            404,
            detail.format(id=story_id, run=run_id),
        )


def test_a_version_a_story_does_not_have_is_a_404_naming_it(writer: Any, story: Story) -> None:
    client = client_for(writer)
    for path in ("versions/7/", "versions/7/stats/", "versions/7/export/?format=fdx", "diff/?from=1&to=7"):
        response = client.get(f"/api/stories/{story.pk}/{path}")
        assert (response.status_code, response.json()["detail"]) == (
            404,
            f"Story {story.pk} has no version 7.",
        )


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8"])
def test_a_json_body_that_starts_with_a_byte_order_mark_is_read(
    writer: Any, story: Story, content_type: str
) -> None:
    # Some clients write JSON files with a UTF-8 byte order mark (PowerShell 5's UTF8 encoding, Notepad):
    # the API answered 400 "Unexpected UTF-8 BOM (decode using utf-8-sig)", Python's advice to itself.
    # RFC 8259 section 8.1 lets a parser ignore the mark; it is ignored, and only at the start.
    client = client_for(writer)
    # Text, which the test client sends encoded in UTF-8: the mark's three bytes EF BB BF first.
    body = "\ufeff" + json.dumps({"title": "Marked"})
    response = client.generic("PATCH", f"/api/stories/{story.pk}/", body, content_type=content_type)
    assert (response.status_code, response.json()["title"]) == (200, "Marked")
    created = client.generic(
        "POST",
        "/api/stories/",
        "\ufeff" + json.dumps({"title": "New", "plot": "A plot."}),
        content_type=content_type,
    )
    assert created.status_code == 201
    twice = client.generic("PATCH", f"/api/stories/{story.pk}/", "\ufeff" + body, content_type=content_type)
    assert twice.status_code == 400
    assert "BOM" not in twice.json()["detail"] and "utf-8-sig" not in twice.json()["detail"]

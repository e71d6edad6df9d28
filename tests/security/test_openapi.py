from __future__ import annotations

import re
from datetime import timedelta
from io import StringIO
from typing import Any

import httpx
import pytest
import schemathesis
import yaml
from django.core.management import call_command
from django.test import Client, override_settings
from django.urls import resolve
from rest_framework.test import APIClient

from stories.generation.models_registry import usable_models
from stories.models import GenerationRun, ScreenplayVersion, Story
from storyproject.parsers import query_parameters_read


def test_the_openapi_schema_is_valid_and_every_view_is_described(db: None) -> None:
    out = StringIO()
    # --fail-on-warn: a view drf-spectacular cannot describe is a failure, not a log line.
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)
    schema = yaml.safe_load(out.getvalue())
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    for path in (
        "/api/stories/",
        "/api/stories/{id}/",
        "/api/stories/{story_id}/versions/",
        "/api/stories/{story_id}/versions/{number}/",
        "/api/runs/",
    ):
        assert path in paths
    assert set(paths["/api/stories/{id}/"]) == {"get", "patch", "delete"}
    assert {"tokenAuth", "cookieAuth"} <= set(schema["components"]["securitySchemes"])
    # A generation needs a plot and at least one persona: the schema says so, as the server does.
    generate = schema["components"]["schemas"]["GenerateScreenplayRequest"]
    assert set(generate["required"]) == {"plot", "personas"}
    assert generate["properties"]["personas"]["minItems"] == 1


@pytest.mark.django_db
def test_a_requests_model_is_one_the_deployment_allows_now(client: Any, settings: Any) -> None:
    first, second = usable_models()[:2]
    settings.STORY_MODELS = [first, second]
    schemas = _schema(client)["components"]["schemas"]
    for name in ("GenerateScreenplayRequest", "SceneRegenerateRequest"):
        assert schemas[name]["properties"]["model"]["enum"] == [first, second, settings.OFFLINE_MODEL, None]
    # Responses name the model a run used, which may have been retired since: no enum there.
    assert "enum" not in schemas["GenerationRun"]["properties"]["model"]
    settings.STORY_MODELS = [second]
    model = _schema(client)["components"]["schemas"]["GenerateScreenplayRequest"]["properties"]["model"]
    assert model["enum"] == [second, settings.OFFLINE_MODEL, None]


@pytest.mark.django_db
def test_an_imports_json_body_has_no_file_and_its_form_body_has(client: Any) -> None:
    schema = _schema(client)
    body = schema["paths"]["/api/stories/import/"]["post"]["requestBody"]["content"]
    component = schema["components"]["schemas"]

    def properties(media: str) -> dict[str, Any]:
        return component[body[media]["schema"]["$ref"].rsplit("/", 1)[1]]

    as_json = properties("application/json")
    assert "file" not in as_json["properties"] and as_json["required"] == ["fountain"]
    assert {"file", "fountain", "cast"} <= set(properties("multipart/form-data")["properties"])


@pytest.mark.parametrize("url", ["/api/schema/", "/api/docs/"])
def test_schema_and_docs_are_served_without_a_login(client: Client, url: str, db: None) -> None:
    response = client.get(url)
    assert response.status_code == 200


@pytest.mark.parametrize("url", ["/api/schema/", "/api/docs/"])
def test_schema_and_docs_answer_options_with_what_they_allow(client: Any, url: str, db: None) -> None:
    # Swagger UI's view renders HTML only: DRF's OPTIONS answer (metadata) made it raise
    # TemplateDoesNotExist, a 500 for anyone.
    response = client.options(url)
    assert response.status_code == 200
    assert response["Allow"] == "GET, HEAD, OPTIONS"


def _schema(client: Any) -> dict[str, Any]:
    return client.get("/api/schema/?format=json").json()


@pytest.mark.django_db
def test_every_status_a_list_endpoint_answers_for_its_own_parameters_is_in_the_schema(
    user_factory: Any,
) -> None:
    # A page past the end is DRF's 404 and an over-long persona search a 400: the schema documented
    # 200 alone, so a client generated from it had no shape for either (schemathesis: ST103).
    client = APIClient()
    client.force_authenticate(user_factory("reader"))
    paths = _schema(client)["paths"]
    tried = 0
    for path, operations in paths.items():
        names = {parameter["name"] for parameter in operations.get("get", {}).get("parameters", [])}
        if "page" not in names:
            continue
        response = client.get(path, {"page": 999})
        assert response.status_code == 404
        assert "404" in operations["get"]["responses"], path
        tried += 1
    assert tried >= 3  # personas, stories, runs
    search = next(p for p in paths["/api/personas/"]["get"]["parameters"] if p["name"] == "search")
    assert search["schema"]["maxLength"] == 100
    assert client.get("/api/personas/", {"search": "a" * 101}).status_code == 400
    assert "400" in paths["/api/personas/"]["get"]["responses"]


@pytest.mark.django_db
def test_a_story_body_the_schema_allows_is_one_the_server_takes(user_factory: Any) -> None:
    # The request shared its component with the response, so the schema allowed a blank title and plot,
    # which the server refuses with a 400 (schemathesis: ST202, "schema-valid request rejected").
    client = APIClient()
    client.force_authenticate(user_factory("writer-one"))
    components = _schema(client)["components"]["schemas"]
    for name in ("StoryRequest", "PatchedStoryRequest"):
        story = components[name]["properties"]
        assert story["title"]["minLength"] == 1
        assert story["plot"]["minLength"] == 1
    assert client.post("/api/stories/", {"title": "T", "plot": ""}, format="json").status_code == 400
    assert client.post("/api/stories/", {"title": "", "plot": "P"}, format="json").status_code == 400


@pytest.mark.django_db
def test_every_request_body_is_closed_as_the_server_refuses_unknown_fields(user_factory: Any) -> None:
    # The story, version and import writes ignored a field they do not read, and the schema let a client
    # send any; both now refuse it, so a field the schema does not list is one the server refuses.
    client = APIClient()
    client.force_authenticate(user_factory("writer-one"))
    schema = _schema(client)
    bodies = {
        media["schema"]["$ref"].rsplit("/", 1)[1]
        for operations in schema["paths"].values()
        for operation in operations.values()
        for media in operation.get("requestBody", {}).get("content", {}).values()
    }
    assert {"StoryRequest", "PatchedStoryRequest", "VersionWriteRequest", "StoryImportRequest"} <= bodies
    for name in bodies:
        assert schema["components"]["schemas"][name]["additionalProperties"] is False, name
    response = client.post("/api/stories/", {"title": "T", "plot": "P", "tilte": "T"}, format="json")
    assert response.status_code == 400


@pytest.mark.django_db
@pytest.mark.parametrize(
    "names", ["hero", "hero,villain", " hero , villain ", "", "hero,", ",hero", " ", "x" * 100, "x" * 101]
)
def test_the_batch_contexts_names_pattern_says_what_the_server_takes(user_factory: Any, names: str) -> None:
    # The schema said any string; an empty or stray-comma list was a 400 (schemathesis: ST202).
    client = APIClient()
    client.force_authenticate(user_factory("reader"))
    parameters = _schema(client)["paths"]["/api/personas/contexts/"]["get"]["parameters"]
    pattern = next(p for p in parameters if p["name"] == "names")["schema"]["pattern"]
    response = client.get("/api/personas/contexts/", {"names": names})
    assert response.status_code == (200 if re.search(pattern, names) else 400)


@pytest.mark.django_db
def test_the_diff_and_event_parameters_carry_the_bounds_the_server_applies(user_factory: Any) -> None:
    # The schema said "integer" and "string": ?from=0, ?after=-1 or Last-Event-ID: x were 400s that a
    # client following it could not foresee (schemathesis: ST202).
    reader = user_factory("reader")
    client = APIClient()
    client.force_authenticate(reader)
    paths = _schema(client)["paths"]
    story = Story.objects.create(owner=reader, title="T", plot="P")
    run = GenerationRun.objects.create(user=reader, status="succeeded", model="offline", max_tokens=1024)
    for query in ("from=0&to=1", f"from=1&to={2**31}"):
        assert client.get(f"/api/stories/{story.pk}/diff/?{query}").status_code == 400
    assert client.get(f"/api/runs/{run.pk}/events/?after=-1").status_code == 400
    assert client.get(f"/api/runs/{run.pk}/events/", HTTP_LAST_EVENT_ID="x").status_code == 400

    def parameter(path: str, name: str) -> dict[str, Any]:
        parameters = paths[path]["get"]["parameters"]
        return next(p for p in parameters if p["name"] == name)["schema"]

    for name in ("from", "to"):
        assert parameter("/api/stories/{story_id}/diff/", name) == {
            "type": "integer",
            "minimum": 1,
            "maximum": 2**31 - 1,
        }
    assert parameter("/api/runs/{run_id}/events/", "after")["minimum"] == 0
    assert re.search(parameter("/api/runs/{run_id}/events/", "Last-Event-ID")["pattern"], "17")
    assert not re.search(parameter("/api/runs/{run_id}/events/", "Last-Event-ID")["pattern"], "x")


@pytest.mark.django_db
def test_every_operation_documents_the_400_for_a_nul_in_its_query(user_factory: Any) -> None:
    # The middleware refuses a NUL in the URL before any view: GET /api/stories/?q=%00 is a 400 that the
    # schema did not list for most operations (schemathesis: ST103).
    client = APIClient()
    client.force_authenticate(user_factory("reader"))
    for path, operations in _schema(client)["paths"].items():
        url = re.sub(r"\{[^}]+\}", "1", path)
        for method, operation in operations.items():
            response = getattr(client, method)(f"{url}?q=a%00b")
            assert response.status_code == 400, (method, path)
            assert "400" in operation["responses"], (method, path)


@pytest.mark.django_db
def test_every_operation_documents_the_401_an_anonymous_request_gets(user_factory: Any) -> None:
    # Every operation needs a token or a session; 21 of 23 did not list the 401 an anonymous client gets
    # (schemathesis without credentials: ST103, "undocumented status code").
    schema = _schema(APIClient())
    for path, operations in schema["paths"].items():
        url = re.sub(r"\{[^}]+\}", "1", path)
        for method, operation in operations.items():
            response = getattr(APIClient(), method)(url)
            assert response.status_code == 401, (method, path)
            assert response["WWW-Authenticate"] == "Token"
            assert "401" in operation["responses"], (method, path)
            body = operation["responses"]["401"]["content"]["application/json"]["schema"]
            assert "detail" in _resolved(schema, body)["properties"], (method, path)


@pytest.mark.django_db
@override_settings(API_MAX_BODY_BYTES=1024)
def test_every_operation_with_a_body_documents_its_413_and_415(user_factory: Any) -> None:
    # A body over API_MAX_BODY_BYTES is a 413 and one of a type the operation does not parse a 415,
    # for every operation that takes a body: the schema listed neither.
    writer = user_factory("writer-one")
    client = APIClient()
    client.force_authenticate(writer)
    story = Story.objects.create(owner=writer, title="T", plot="P")
    content = {"title": "T", "scenes": [{"heading": "INT. LAB - DAY", "elements": []}]}
    ScreenplayVersion.objects.create(story=story, number=1, content=content, origin="edited")
    run = GenerationRun.objects.create(user=writer, status="succeeded", model="offline", max_tokens=1024)
    # Every object the URL names exists: a restore and a cancel read their body once they found theirs.
    ids = {"run_id": run.pk, "number": 1, "index": 0}
    tried = 0
    for path, operations in _schema(client)["paths"].items():
        url = re.sub(r"\{([^}]+)\}", lambda name: str(ids.get(name[1], story.pk)), path)
        for method, operation in operations.items():
            if "requestBody" not in operation and method != "post":
                continue
            large = getattr(client, method)(
                url, '{"x": "' + "x" * 2000 + '"}', content_type="application/json"
            )
            wrong = getattr(client, method)(url, "x", content_type="text/plain")
            assert (large.status_code, wrong.status_code) == (413, 415), (method, path)
            assert {"413", "415"} <= set(operation["responses"]), (method, path)
            tried += 1
    assert tried >= 6


def _resolved(schema: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    if "$ref" not in body:
        return body
    return schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]


@pytest.mark.django_db
def test_every_operation_reads_the_query_parameters_its_schema_lists_and_refuses_others(
    user_factory: Any,
) -> None:
    # Unknown query parameters were ignored (GET /api/runs/?status=zzz listed every run): now each is a
    # 400 naming the ones read, which must be the ones the schema lists (and DRF's format), and the 400
    # says so for every operation.
    client = APIClient()
    client.force_authenticate(user_factory("reader"))
    tried = 0
    for path, operations in _schema(client)["paths"].items():
        url = re.sub(r"\{[^}]+\}", "1", path)
        view_class = resolve(url).func.view_class  # type: ignore[attr-defined]
        for method, operation in operations.items():
            listed = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
            read = query_parameters_read(view_class, method.upper())
            assert {*listed, "format"} == set(read), (method, path)
            assert "unknown_parameter" in operation["responses"]["400"]["description"], (method, path)
            response = getattr(client, method)(f"{url}?not_a_parameter=1")
            assert (response.status_code, response.json()["code"]) == (400, "unknown_parameter"), (
                method,
                path,
            )
            tried += 1
    assert tried >= 20


def test_every_response_with_a_body_documents_its_shape(db: None) -> None:
    # The blocking generation's and the scene rewrite's 201, every 404, a cancel's 200 and the story
    # writes' 400 said only a description: a client generated from the schema had no type for the very
    # answer it asks for, and schemathesis could not check those bodies.
    schema = _schema(Client())
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status in ("204", "304"):
                    continue
                assert response.get("content"), (method, path, status)


def _conforms(schema: Any, method: str, path: str, url: str, response: Any) -> None:
    """The test client's response, checked by schemathesis against the schema's operation."""
    real = httpx.Response(
        response.status_code,
        headers={key: value for key, value in response.headers.items()},
        content=response.content,
        request=httpx.Request(method, f"http://testserver{url}"),
    )
    real.elapsed = timedelta(0)
    operation = schema[path][method]
    assert str(response.status_code) in operation.definition.raw["responses"], (
        method,
        path,
        response.status_code,
    )
    operation.validate_response(real)


@pytest.mark.django_db(transaction=True)
def test_the_generation_answers_and_refusals_match_their_schema(
    user_factory: Any, persona_factory: Any, settings: Any
) -> None:
    settings.STORY_OFFLINE_TOKENS_PER_SECOND = 0
    writer = user_factory("writer-one")
    persona_factory("hero")
    client = APIClient()
    client.force_authenticate(writer)
    schema = schemathesis.openapi.from_dict(_schema(client))
    url = "/api/ai/generate-screenplay/"
    body = {"plot": "A heist in the fog.", "personas": ["hero"], "model": "offline"}
    generated = client.post(url, body, format="json")
    assert generated.status_code == 201, generated.content
    _conforms(schema, "POST", "/api/ai/generate-screenplay/", url, generated)
    story, run = generated.json()["story"]["id"], generated.json()["run_id"]
    rewrite = f"/api/stories/{story}/versions/1/scenes/0/regenerate/"
    rewritten = client.post(rewrite, {"instructions": "Rain."}, format="json")
    assert rewritten.status_code == 201, rewritten.content
    path = "/api/stories/{story_id}/versions/{number}/scenes/{index}/regenerate/"
    _conforms(schema, "POST", path, rewrite, rewritten)
    _conforms(
        schema,
        "POST",
        path,
        "/api/stories/999/versions/1/scenes/0/regenerate/",
        client.post("/api/stories/999/versions/1/scenes/0/regenerate/", {}, format="json"),
    )
    cancel = f"/api/runs/{run}/cancel/"
    ended = client.post(cancel)
    assert ended.json() == {"run_id": run, "status": "succeeded"}
    _conforms(schema, "POST", "/api/runs/{run_id}/cancel/", cancel, ended)
    for path, url in [
        ("/api/stories/{id}/", "/api/stories/999/"),
        ("/api/runs/{run_id}/", "/api/runs/999/"),
        ("/api/stories/{story_id}/versions/{number}/", f"/api/stories/{story}/versions/9/"),
        ("/api/stories/{story_id}/versions/{number}/export/", f"/api/stories/{story}/versions/1/export/"),
    ]:
        _conforms(schema, "GET", path, url, client.get(url))
    refused = client.post("/api/stories/", {"title": "", "plot": "P"}, format="json")
    _conforms(schema, "POST", "/api/stories/", "/api/stories/", refused)


@pytest.mark.django_db
def test_every_write_documents_the_403_of_a_session_without_its_csrf_token(user_factory: Any) -> None:
    # The schema offers the session cookie (cookieAuth) for every operation; a write signed in with it but
    # without X-CSRFToken is DRF's 403 "CSRF Failed", which only the generation listed (for `forbidden`).
    writer = user_factory("writer-one")
    story = Story.objects.create(owner=writer, title="T", plot="P")
    client = Client(enforce_csrf_checks=True)
    client.force_login(writer)
    tried = 0
    for path, operations in _schema(client)["paths"].items():
        url = re.sub(r"\{[^}]+\}", str(story.pk), path)
        for method, operation in operations.items():
            if method not in ("post", "put", "patch", "delete"):
                continue
            response = getattr(client, method)(url, "{}", content_type="application/json")
            assert response.status_code == 403, (method, path, response.content)
            assert response.json()["detail"].startswith("CSRF Failed"), (method, path)
            assert "X-CSRFToken" in operation["responses"]["403"]["description"], (method, path)
            tried += 1
    assert tried >= 8


@pytest.mark.django_db
def test_the_text_bounds_the_schema_gives_are_the_ones_the_server_applies(
    user_factory: Any, settings: Any
) -> None:
    # A story's plot and a Fountain text are bounded by settings read when a value is checked; the
    # schema gave them no maxLength (a 200,000-character plot was schema-valid and a 400), nor the
    # import's JSON `fountain`, nor a generation's `story_id` its maximum.
    settings.STORY_MAX_PLOT_CHARS = 150
    settings.STORY_IMPORT_MAX_BYTES = 10_000
    client = APIClient()
    client.force_authenticate(user_factory("writer-one"))
    components = _schema(client)["components"]["schemas"]
    for name in ("StoryRequest", "PatchedStoryRequest"):
        assert components[name]["properties"]["plot"]["maxLength"] == 150, name
    for name in ("VersionWriteRequest", "StoryImportRequest", "StoryImportJSONRequest"):
        assert components[name]["properties"]["fountain"]["maxLength"] == 10_000, name
    assert components["GenerateScreenplayRequest"]["properties"]["story_id"]["maximum"] == 2**63 - 1
    assert client.post("/api/stories/", {"title": "T", "plot": "x" * 150}, format="json").status_code == 201
    refused = client.post("/api/stories/", {"title": "T", "plot": "x" * 151}, format="json")
    assert refused.status_code == 400
    assert refused.json() == {"plot": ["Ensure this field has no more than 150 characters (it has 151)."]}
    imported = client.post("/api/stories/import/", {"fountain": "x" * 10_001}, format="json")
    assert imported.status_code == 400
    assert imported.json() == {
        "fountain": ["the text is 10001 bytes; the limit is 10000 bytes (STORY_IMPORT_MAX_BYTES)"]
    }
    # Bytes, not characters: 9,000 "é" are 18,000 bytes.
    imported = client.post("/api/stories/import/", {"fountain": "é" * 9_000}, format="json")
    assert imported.status_code == 400
    assert imported.json() == {
        "fountain": ["the text is 18000 bytes; the limit is 10000 bytes (STORY_IMPORT_MAX_BYTES)"]
    }


@pytest.mark.django_db(transaction=True)
def test_the_headers_the_answers_carry_are_in_the_schema(user_factory: Any, persona_factory: Any) -> None:
    # protocol.md says a refusal's retry_after is also a Retry-After header, a background run's 202 has
    # Location and a 401 WWW-Authenticate: the schema said none of them, so a generated client had no
    # field for the wait it is asked to make.
    writer = user_factory("writer-one")
    persona_factory("hero")
    for _ in range(2):  # STORY_MAX_ACTIVE_PER_USER runs going on: the next one is refused, busy
        GenerationRun.objects.create(user=writer, status="streaming", model="offline", max_tokens=1024)
    client = APIClient()
    client.force_authenticate(writer)
    paths = _schema(client)["paths"]
    busy = client.post("/api/ai/generate-screenplay/", {"plot": "P", "personas": ["hero"]}, format="json")
    assert (busy.status_code, busy["Retry-After"], busy.json()["retry_after"]) == (429, "5", 5)
    generate = paths["/api/ai/generate-screenplay/"]["post"]["responses"]
    for status in ("429", "502", "503"):
        assert generate[status]["headers"]["Retry-After"]["schema"]["type"] == "integer", status
    assert (
        "Retry-After"
        in paths["/api/stories/{story_id}/versions/{number}/export/"]["get"]["responses"]["429"]["headers"]
    )
    assert generate["202"]["headers"]["Location"]["required"] is True
    for path, operations in paths.items():
        for method, operation in operations.items():
            assert operation["responses"]["401"]["headers"]["WWW-Authenticate"]["required"], (method, path)


@pytest.mark.django_db
def test_a_versions_content_is_described_by_the_screenplay_contract(user_factory: Any) -> None:
    # A writer's JSON edit is checked against stories/contract/screenplay.schema.json; the schema said
    # "an object" and nothing more, so a client had to find the contract's file to know what to send.
    writer = user_factory("writer-one")
    story = Story.objects.create(owner=writer, title="T", plot="P")
    client = APIClient()
    client.force_authenticate(writer)
    content = _schema(client)["components"]["schemas"]["VersionWriteRequest"]["properties"]["content"]
    assert content["required"] == ["title", "scenes"] and content["additionalProperties"] is False
    assert content["properties"]["scenes"]["minItems"] == 1
    character = content["properties"]["characters"]["items"]["properties"]
    assert character["persona"] == {"type": "string", "nullable": True, "maxLength": 100}
    kinds = content["properties"]["scenes"]["items"]["properties"]["elements"]["items"]["oneOf"]
    assert [kind["properties"]["type"]["enum"] for kind in kinds] == [["action", "transition"], ["dialogue"]]
    # What the contract refuses, the server refuses.
    screenplay = {"title": "T", "scenes": [{"heading": "INT. LAB - DAY", "elements": []}]}
    url = f"/api/stories/{story.pk}/versions/"
    assert client.post(url, {"content": screenplay}, format="json").status_code == 201
    for refused in ({**screenplay, "scenes": []}, {**screenplay, "rating": "PG"}):
        assert client.post(url, {"content": refused}, format="json").status_code == 400


@pytest.mark.django_db
def test_the_posts_that_take_no_body_refuse_a_field_in_one(user_factory: Any) -> None:
    # A restore and a cancel read no body and dropped any: {"base_version": 1} to a restore, which a
    # client may take for a conflict check, was a 201 as if it held. As every other body, a field they
    # do not read is now a 400 naming it; an empty body, and a form's CSRF token, are still nothing.
    writer = user_factory("writer-one")
    story = Story.objects.create(owner=writer, title="T", plot="P")
    version = {"title": "T", "scenes": [{"heading": "INT. LAB - DAY", "elements": []}]}
    ScreenplayVersion.objects.create(story=story, number=1, content=version, origin="edited")
    Story.objects.filter(pk=story.pk).update(latest_version_number=1)
    run = GenerationRun.objects.create(user=writer, status="succeeded", model="offline", max_tokens=1024)
    client = APIClient()
    client.force_authenticate(writer)
    restore = f"/api/stories/{story.pk}/versions/1/restore/"
    cancel = f"/api/runs/{run.pk}/cancel/"
    for url, field in ((restore, "base_version"), (cancel, "run_id")):
        refused = client.post(url, {field: 1}, format="json")
        assert refused.status_code == 400, url
        assert refused.json() == {
            "code": "invalid_request",
            "message": f"unknown fields: '{field}'",
            "retryable": False,
        }
        assert client.post(url, "x", content_type="text/plain").status_code == 415
    assert client.post(restore).status_code == 201
    assert client.post(restore, {"csrfmiddlewaretoken": "x"}).status_code == 201
    assert client.post(cancel, {}, format="json").status_code == 200

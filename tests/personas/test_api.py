from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.test import APIClient

from personas.models import PersonaConfig
from personas.services import EDITORS_GROUP, personas_set_active
from tests.conftest import etag_revalidated

BATCH = "/api/personas/contexts/"


@pytest.fixture
def api(writer: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(writer)
    return client


@pytest.fixture
def committed(django_capture_on_commit_callbacks: Any) -> Any:
    def run(block: Any) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return block()

    return run


@pytest.fixture
def cast(persona_factory: Any, committed: Any) -> None:
    committed(
        lambda: [
            persona_factory(
                "noir-detective",
                "Sam Marlowe",
                summary="A weary private eye.",
                voice="Dry.",
                tags=["noir"],
                private={"notes": "SECRET"},
            ),
            persona_factory("kyoto-poet", "詩人", description="A poet. Runs a bookshop.", voice="静か。"),
            persona_factory("retired", "Retired One"),
        ]
    )
    committed(
        lambda: personas_set_active(queryset=PersonaConfig.objects.filter(name="retired"), active=False)
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "/api/personas/",
        "/api/personas/noir-detective/",
        "/api/personas/noir-detective/context/",
        BATCH + "?names=a",
    ],
)
def test_anonymous_users_are_refused(url: str, cast: None) -> None:
    response = APIClient().get(url)
    assert response.status_code in (401, 403)
    assert "noir" not in response.content.decode().lower()


@pytest.mark.django_db
def test_batch_answers_in_order_without_duplicates_and_lists_missing_and_inactive(
    api: APIClient, cast: None
) -> None:
    response = api.get(BATCH, {"names": "kyoto-poet,ghost,noir-detective,retired,kyoto-poet"})
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "contexts": [
            {
                "name": "kyoto-poet",
                "display_name": "詩人",
                "context": "Description: A poet. Runs a bookshop.\n\nVoice: 静か。",
                "tokens": 16,  # 46 ASCII / 3.8 + 3 CJK * 1.2, rounded up
                "shortened": False,
            },
            {
                "name": "noir-detective",
                "display_name": "Sam Marlowe",
                "context": "Voice: Dry.",
                "tokens": 3,
                "shortened": False,
            },
        ],
        "missing": ["ghost"],
        "inactive": ["retired"],
    }


@pytest.mark.django_db
def test_batch_of_fifty_costs_one_query_cold_and_none_warm(
    api: APIClient, persona_factory: Any, committed: Any, django_assert_num_queries: Any
) -> None:
    names = [f"p-{i}" for i in range(50)]
    committed(lambda: [persona_factory(name) for name in names])
    with django_assert_num_queries(1):
        cold = api.get(BATCH, {"names": ",".join(names)})
    with django_assert_num_queries(0):
        warm = api.get(BATCH, {"names": ",".join(names)})
    assert [c["name"] for c in cold.json()["contexts"]] == names
    assert warm.json() == cold.json()


@pytest.mark.django_db
def test_repeated_names_parameters_count_like_commas(api: APIClient, cast: None) -> None:
    response = api.get(BATCH + "?names=kyoto-poet&names=noir-detective,kyoto-poet")
    assert [c["name"] for c in response.json()["contexts"]] == ["kyoto-poet", "noir-detective"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "Give the persona names: ?names=a,b,c."),
        ("?names=", "Give at least one persona name: ?names=a,b,c."),
        ("?names=%20,%20", "A persona name is empty: check for a stray comma."),
        ("?names=a,,b", "A persona name is empty: check for a stray comma."),
        ("?names=a," + "x" * 101, "The name 'xxxxxxxxxxxxxxxxxxxx'... is 101 characters; the limit is 100."),
        ("?names=" + ",".join(f"n{i}" for i in range(51)), "At most 50 different names per request; got 51."),
    ],
)
def test_bad_batch_queries_get_a_clear_400(api: APIClient, query: str, message: str) -> None:
    response = api.get(BATCH + query)
    assert response.status_code == 400
    assert response.json() == {"names": [message]}


@pytest.mark.django_db
def test_fifty_names_with_duplicates_are_within_the_limit(api: APIClient, cast: None) -> None:
    names = [f"n{i}" for i in range(49)] + ["noir-detective"] * 10
    response = api.get(BATCH, {"names": ",".join(names)})
    assert response.status_code == 200
    assert len(response.json()["missing"]) == 49


@pytest.mark.django_db
def test_unicode_names_round_trip(api: APIClient, committed: Any) -> None:
    committed(
        lambda: PersonaConfig.objects.create(
            name="詩人", display_name="Poet", config_data={"voice": "静か。"}
        )
    )
    response = api.get(BATCH, {"names": "詩人,ñandú,😀 space"})
    body = response.json()
    assert [c["name"] for c in body["contexts"]] == ["詩人"]
    assert body["missing"] == ["ñandú", "😀 space"]
    assert api.get("/api/personas/%E8%A9%A9%E4%BA%BA/context/").json()["context"] == "Voice: 静か。"


@pytest.mark.django_db
def test_etag_revalidation_gives_304_until_an_edit(api: APIClient, cast: None, committed: Any) -> None:
    first = api.get(BATCH, {"names": "noir-detective,ghost"})
    etag = first["ETag"]
    again = api.get(BATCH, {"names": "noir-detective,ghost"}, HTTP_IF_NONE_MATCH=etag)
    assert (again.status_code, again.content, again["ETag"]) == (304, b"", etag)
    single = api.get("/api/personas/noir-detective/context/")
    assert (
        api.get("/api/personas/noir-detective/context/", HTTP_IF_NONE_MATCH=single["ETag"]).status_code == 304
    )

    persona = PersonaConfig.objects.get(name="noir-detective")

    def edit() -> None:
        persona.config_data = {"voice": "Drier."}
        persona.save()

    committed(edit)
    changed = api.get(BATCH, {"names": "noir-detective,ghost"}, HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200
    assert changed["ETag"] != etag
    assert changed.json()["contexts"][0]["context"] == "Voice: Drier."


@pytest.mark.django_db
def test_if_none_match_compares_weakly_and_the_etag_is_in_the_schema(api: APIClient, cast: None) -> None:
    # If-None-Match's comparison is weak (RFC 9110 section 13.1.2): the tag a cache or a proxy weakened
    # (nginx does when it compresses) still matches. It was compared as a string: W/"..." was a 200, the
    # whole body again, at every revalidation through such a proxy.
    etag = api.get(BATCH, {"names": "noir-detective,ghost"})["ETag"]
    for asked in (f"W/{etag}", f'"other", W/{etag}'):
        again = api.get(BATCH, {"names": "noir-detective,ghost"}, HTTP_IF_NONE_MATCH=asked)
        assert (again.status_code, again.content, again["ETag"]) == (304, b"", etag), asked
    # The answers' ETag header is documented, for a client generated from the schema to find it.
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    for path in ("/api/personas/contexts/", "/api/personas/{name}/context/"):
        for code in ("200", "304"):
            assert "ETag" in schema["paths"][path]["get"]["responses"][code]["headers"], (path, code)


@pytest.mark.django_db
def test_single_context_endpoint_and_its_404s(api: APIClient, cast: None) -> None:
    ok = api.get("/api/personas/noir-detective/context/")
    assert ok.json() == {
        "name": "noir-detective",
        "display_name": "Sam Marlowe",
        "context": "Voice: Dry.",
        "tokens": 3,
        "shortened": False,
    }
    unknown = api.get("/api/personas/ghost/context/")
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "No persona is named 'ghost'.", "code": "not_found"}
    inactive = api.get("/api/personas/retired/context/")
    assert inactive.status_code == 404
    assert inactive.json() == {"detail": "The persona 'retired' is deactivated.", "code": "inactive"}


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/personas/{name}/context/", "/api/personas/{name}/"])
def test_a_404_echoes_a_name_only_up_to_the_batch_limit(api: APIClient, cast: None, path: str) -> None:
    # The whole 8,000 characters came back in the detail; the batch refuses names over 100.
    name = "n" * 8000
    response = api.get(path.format(name=name))
    assert response.status_code == 404
    assert response.json() == {"detail": f"No persona is named '{'n' * 100}...'.", "code": "not_found"}
    at_the_limit = api.get(path.format(name="m" * 100)).json()
    assert at_the_limit["detail"] == f"No persona is named '{'m' * 100}'."


@pytest.mark.django_db
def test_list_is_paginated_searchable_and_shows_active_personas_only(
    api: APIClient, cast: None, persona_factory: Any
) -> None:
    for i in range(25):
        persona_factory(f"extra-{i:02d}", f"Extra {i:02d}")
    page = api.get("/api/personas/").json()
    assert page["count"] == 27
    assert len(page["results"]) == 20 and page["next"]
    found = api.get("/api/personas/", {"search": "MARLOWE"}).json()
    assert found["count"] == 1
    assert found["results"][0] == {
        "name": "noir-detective",
        "display_name": "Sam Marlowe",
        "summary": "A weary private eye.",
        "tags": ["noir"],
        "version": 1,
        "updated_at": found["results"][0]["updated_at"],
    }
    poet = api.get("/api/personas/", {"search": "kyoto"}).json()["results"][0]
    assert poet["summary"] == "A poet."
    assert api.get("/api/personas/", {"search": "retired"}).json()["count"] == 0
    too_long = api.get("/api/personas/", {"search": "x" * 101})
    assert too_long.status_code == 400
    assert "no more than 100 characters" in too_long.json()["search"][0]


@pytest.mark.django_db
def test_detail_shows_the_config_without_private_notes(api: APIClient, cast: None) -> None:
    body = api.get("/api/personas/noir-detective/").json()
    assert body["config"]["voice"] == "Dry."
    assert "private" not in body["config"]
    assert "SECRET" not in str(body)
    assert api.get("/api/personas/ghost/").json() == {
        "detail": "No persona is named 'ghost'.",
        "code": "not_found",
    }
    assert api.get("/api/personas/retired/").status_code == 404


@pytest.mark.django_db
def test_the_schema_describes_the_persona_endpoints(api: APIClient) -> None:
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    paths = schema["paths"]
    for path in [
        "/api/personas/",
        "/api/personas/contexts/",
        "/api/personas/{name}/",
        "/api/personas/{name}/context/",
    ]:
        assert path in paths, path
    batch = paths["/api/personas/contexts/"]["get"]
    assert {p["name"] for p in batch["parameters"]} >= {"names", "If-None-Match"}
    assert set(batch["responses"]) >= {"200", "304", "400"}


@pytest.mark.django_db(transaction=True)
def test_an_admin_save_is_served_by_the_next_batch_read(persona_factory: Any, user_factory: Any) -> None:
    persona = persona_factory("hero", voice="Old voice.")
    writer = user_factory("reader")
    api = APIClient()
    api.force_authenticate(writer)
    assert api.get(BATCH, {"names": "hero"}).json()["contexts"][0]["context"] == "Voice: Old voice."
    editor = user_factory("ed", is_staff=True)
    editor.groups.add(Group.objects.get(name=EDITORS_GROUP))
    admin = Client()
    admin.force_login(editor)
    response = admin.post(
        f"/admin/personas/personaconfig/{persona.pk}/change/",
        # As the per-part form posts it (personas/forms.py): the voice field, the raw JSON, the version.
        {
            "name": "hero",
            "display_name": "Hero",
            "is_active": "on",
            "voice": "New voice.",
            "config_data": '{"voice": "New voice."}',
            "loaded_version": "1",
        },
    )
    assert response.status_code == 302
    context = api.get(BATCH, {"names": "hero"}).json()["contexts"][0]
    assert context["context"] == "Voice: New voice."


@pytest.mark.django_db
def test_no_persona_can_be_named_contexts_which_the_api_could_not_serve(editor_client: Any) -> None:
    # GET /api/personas/contexts/ is the batch endpoint: a persona named "contexts" had no detail page
    # (its detail was the batch's 400 "Give the persona names").
    add = "/admin/personas/personaconfig/add/"
    form = {
        "name": "contexts",
        "display_name": "Contexts",
        "is_active": "on",
        "config_data": '{"voice": "Calm."}',
    }
    response = editor_client.post(add, form)
    assert response.status_code == 200
    assert "is the address of the API&#x27;s batch of contexts" in response.content.decode()
    card = {"spec": "chara_card_v2", "data": {"name": "Contexts", "description": "A character."}}
    upload = SimpleUploadedFile("contexts.json", json.dumps(card).encode())
    response = editor_client.post("/admin/personas/personaconfig/import/", {"file": upload})
    assert "payload" not in response.context
    assert "contexts.json has a persona named &#x27;contexts&#x27;" in response.content.decode()
    assert not PersonaConfig.objects.filter(name="contexts").exists()


@pytest.mark.django_db
def test_the_persona_list_and_detail_have_an_etag_that_an_edit_changes(
    api: APIClient, cast: None, persona_factory: Any, committed: Any
) -> None:
    # Was: no ETag, If-None-Match ignored: a client polling the personas got them whole every time.
    for i in range(25):
        persona_factory(f"extra-{i:02d}", f"Extra {i:02d}")
    urls = [
        "/api/personas/",
        "/api/personas/?page=2",
        "/api/personas/?search=noir",
        "/api/personas/noir-detective/",
    ]
    tags = {url: etag_revalidated(api, url) for url in urls}
    assert len(set(tags.values())) == len(urls)
    persona = PersonaConfig.objects.get(name="noir-detective")

    def edit() -> None:
        persona.display_name = "Sam Spade"
        persona.save()

    committed(edit)
    for url in ("/api/personas/?search=noir", "/api/personas/noir-detective/"):
        changed = api.get(url, HTTP_IF_NONE_MATCH=tags[url])
        assert (
            changed.status_code == 200 and changed["ETag"] != tags[url] and "Sam Spade" in str(changed.json())
        )
    # Errors stand for no persona: no ETag.
    for url in ("/api/personas/ghost/", "/api/personas/retired/", "/api/personas/?search=" + "x" * 101):
        refused = api.get(url, HTTP_IF_NONE_MATCH="*")
        assert refused.status_code in (400, 404) and "ETag" not in refused, url

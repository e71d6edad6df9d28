from __future__ import annotations

import dataclasses
import io
import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from django.core.cache import caches
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils.http import content_disposition_header
from pypdf import PdfReader
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from screenplain.parsers.fountain import parse

from stories.exports import EXPORT_FORMATS, downloads
from stories.exports.downloads import export_cache_key
from stories.limits import export_build_admitted
from stories.models import ScreenplayVersion, Story
from tests.conftest import etag_revalidated

SCREENPLAY = {
    "title": "The Heist",
    "characters": [{"name": "MAX"}, {"name": "Juno"}],
    "scenes": [
        {
            "heading": "INT. VAULT - NIGHT",
            "elements": [
                {"type": "action", "text": "A DOOR SLAMS."},
                {"type": "dialogue", "character": "MAX", "text": "Now."},
                {"type": "dialogue", "character": "Juno", "parenthetical": "whispering", "text": "Not yet."},
            ],
        },
        {"heading": "EXT. ROOF - DAWN", "elements": [{"type": "transition", "text": "SMASH CUT TO:"}]},
    ],
}


@pytest.fixture
def story(writer: Any) -> Story:
    writer.first_name, writer.last_name = "Ada", "Quill"
    writer.save()
    story = Story.objects.create(owner=writer, title="My Story!", plot="A crew robs a vault.")
    for number in (1, 2):
        ScreenplayVersion.objects.create(story=story, number=number, content=SCREENPLAY, model="offline")
    return story


def _client(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _url(story: Story, number: int = 2, fmt: str = "fountain") -> str:
    return f"/api/stories/{story.pk}/versions/{number}/export/?format={fmt}"


def test_the_owner_downloads_fountain_named_after_the_story(writer: Any, story: Story) -> None:
    response = _client(writer).get(_url(story))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="my-story-v2.fountain"'
    parsed = parse(io.StringIO(response.content.decode()))
    assert parsed.title_page["Title"] == ["My Story!"]
    assert parsed.title_page["Author"] == ["Ada Quill"]
    assert parsed.title_page["Draft date"] == [story.versions.get(number=2).created_at.date().isoformat()]
    assert [type(p).__name__ for p in parsed.paragraphs] == [
        "Slug",
        "Action",
        "Dialog",
        "Dialog",
        "Slug",
        "Transition",
    ]


def test_every_format_downloads_with_its_own_type_and_extension(writer: Any, story: Story) -> None:
    client = _client(writer)
    pdf = client.get(_url(story, 1, "pdf"))
    assert pdf["Content-Type"] == "application/pdf"
    assert pdf["Content-Disposition"] == 'attachment; filename="my-story-v1.pdf"'
    assert "My Story!" in PdfReader(io.BytesIO(pdf.content)).pages[0].extract_text()
    fdx = client.get(_url(story, 1, "fdx"))
    assert fdx["Content-Disposition"] == 'attachment; filename="my-story-v1.fdx"'
    types = [p.get("Type") for p in ET.fromstring(fdx.content).findall("./Content/Paragraph")]
    assert types.count("Character") == 2 and types.count("Parenthetical") == 1
    as_json = client.get(_url(story, 1, "JSON"))
    assert as_json["Content-Type"] == "application/json"
    assert json.loads(as_json.content) == SCREENPLAY


def test_the_schema_documents_the_content_type_each_format_is_served_with(writer: Any, story: Story) -> None:
    # The schema said application/octet-stream for every format while the server sends text/plain,
    # application/xml, application/pdf or application/json (schemathesis: ST105), so a client generated
    # from it expected bytes of a type it never gets.
    client = _client(writer)
    export = client.get("/api/schema/?format=json").json()["paths"][
        "/api/stories/{story_id}/versions/{number}/export/"
    ]["get"]
    documented = set(export["responses"]["200"]["content"])
    served = {client.get(_url(story, 1, fmt))["Content-Type"].split(";")[0] for fmt in EXPORT_FORMATS}
    assert served == documented == {"text/plain", "application/xml", "application/pdf", "application/json"}


def test_a_non_latin_title_keeps_its_letters_in_the_file_name(writer: Any) -> None:
    story = Story.objects.create(owner=writer, title="Ночной дозор", plot="p")
    ScreenplayVersion.objects.create(story=story, number=1, content=SCREENPLAY)
    response = _client(writer).get(_url(story, 1, "fdx"))
    assert response["Content-Disposition"] == (
        "attachment; filename=\"screenplay-v1.fdx\"; filename*=utf-8''%D0%BD%D0%BE%D1%87%D0%BD%D0%BE%D0%B9-"
        "%D0%B4%D0%BE%D0%B7%D0%BE%D1%80-v1.fdx"
    )


@pytest.mark.parametrize(
    ("title", "header"),
    [
        ("Café Noir", "attachment; filename=\"cafe-noir-v1.pdf\"; filename*=utf-8''caf%C3%A9-noir-v1.pdf"),
        (
            "東京の夜 Tokyo",
            "attachment; filename=\"tokyo-v1.pdf\"; filename*=utf-8''%E6%9D%B1%E4%BA%AC%E3%81%AE%E5%A4%9C-tokyo-v1.pdf",
        ),
        ("Plain", 'attachment; filename="plain-v1.pdf"'),
    ],
)
def test_a_file_name_beyond_ascii_has_an_ascii_name_for_clients_without_rfc_5987(
    writer: Any, title: str, header: str
) -> None:
    # Only filename*=utf-8''...: curl -OJ (which reads filename= alone) saved no file at all, and older
    # clients named it "export". RFC 6266 section 4.3: an ASCII filename first, then filename*.
    story = Story.objects.create(owner=writer, title=title, plot="p")
    ScreenplayVersion.objects.create(story=story, number=1, content=SCREENPLAY)
    assert _client(writer).get(_url(story, 1, "pdf"))["Content-Disposition"] == header


@pytest.mark.parametrize(
    ("title", "filename"),
    [
        # Vowel signs and viramas (Devanagari) and tone and other marks (Thai) are marks, not letters:
        # the file was "हनद-फलम-v1.pdf" and "ภาพยนตรไทย-v1.pdf".
        ("हिन्दी फ़िल्म", "हिन्दी-फ़िल्म-v1.pdf"),
        ("ภาพยนตร์ไทย", "ภาพยนตร์ไทย-v1.pdf"),
        # Cut at 60 characters, never between a letter and its vowel sign.
        ("x" * 59 + "कि सब", "x" * 59 + "-v1.pdf"),
        ('AC/DC: "Back" in Black', "acdc-back-in-black-v1.pdf"),
        ("🎬 ✨", "screenplay-v1.pdf"),
    ],
)
def test_a_title_in_any_script_keeps_its_words_in_the_file_name(
    writer: Any, title: str, filename: str
) -> None:
    story = Story.objects.create(owner=writer, title=title, plot="p")
    ScreenplayVersion.objects.create(story=story, number=1, content=SCREENPLAY)
    response = _client(writer).get(_url(story, 1, "pdf"))
    assert response["Content-Disposition"].endswith(
        content_disposition_header(True, filename).removeprefix("attachment")
    )


@pytest.mark.parametrize("query", ["?format=docx", "?format=", "", "?format=" + "x" * 5000])
def test_an_unknown_format_is_a_400_listing_the_formats(writer: Any, story: Story, query: str) -> None:
    response = _client(writer).get(f"/api/stories/{story.pk}/versions/1/export/{query}")
    assert response.status_code == 400
    # With the code of every other bad query value (docs/protocol.md).
    assert response.json() == {
        "detail": "Choose an export format with ?format=, one of: fountain, fdx, pdf, json.",
        "code": "invalid_parameter",
    }


def test_another_users_story_is_not_found(other_writer: Any, story: Story) -> None:
    response = _client(other_writer).get(_url(story))
    assert response.status_code == 404
    assert "Heist" not in response.content.decode()


def test_a_missing_version_or_huge_id_is_not_found(writer: Any, story: Story) -> None:
    client = _client(writer)
    assert client.get(_url(story, 3)).status_code == 404
    assert client.get(f"/api/stories/{10**30}/versions/1/export/?format=pdf").status_code == 404


def test_a_story_deleted_while_its_pdf_is_exported_is_a_404(
    writer: Any, story: Story, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another tab deletes the story after the export found the version, whose content is read only to
    # build the file: reading it raised ScreenplayVersion.DoesNotExist, a 500 (seen on PostgreSQL with
    # a download and a delete sent at once).
    meta = downloads._meta

    def deleted_first(version: ScreenplayVersion) -> Any:
        found = meta(version)
        Story.objects.get(pk=story.pk).delete()  # another request's copy of it
        return found

    monkeypatch.setattr(downloads, "_meta", deleted_first)
    response = _client(writer).get(_url(story, fmt="pdf"))
    assert (response.status_code, response.json()) == (
        404,
        {"detail": f"Story {story.pk} has no version 2."},
    )


def test_anonymous_requests_are_refused(story: Story) -> None:
    response = APIClient().get(_url(story))
    assert response.status_code == 401
    assert "Heist" not in response.content.decode()


def test_a_token_authenticates_the_download(writer: Any, story: Story) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token " + Token.objects.create(user=writer).key)
    assert client.get(_url(story, 2, "json")).status_code == 200


def _title_page(pdf: bytes) -> str:
    return PdfReader(io.BytesIO(pdf)).pages[0].extract_text()


def test_a_pdf_is_built_once_then_the_same_file_is_served_until_its_title_page_changes(
    writer: Any, story: Story, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Was: every GET built the PDF again (6 s of CPU for a 300-scene version), so two downloads of
    # one version were two different files (reportlab stamps each with its own /ID and time).
    client = _client(writer)
    first = client.get(_url(story, 2, "pdf")).content
    assert client.get(_url(story, 2, "pdf")).content == first
    assert client.get(_url(story, 1, "pdf")).content != first
    # What decides the bytes is in the key: a renamed story, a renamed owner, a new format version.
    story.title = "A New Title"
    story.save()
    renamed = client.get(_url(story, 2, "pdf")).content
    assert "A New Title" in _title_page(renamed)
    writer.first_name = "Grace"
    writer.save()
    assert "Grace Quill" in _title_page(client.get(_url(story, 2, "pdf")).content)
    version = story.versions.get(number=2)
    key = export_cache_key(version=version, fmt="pdf")
    # What a release that changes a writer does (stories/exports/__init__.py).
    monkeypatch.setattr(downloads, "EXPORT_FORMAT_VERSION", downloads.EXPORT_FORMAT_VERSION + 1)
    assert export_cache_key(version=version, fmt="pdf") != key


def test_a_pdf_bigger_than_the_cache_may_keep_is_built_every_time(
    writer: Any, story: Story, settings: Any
) -> None:
    settings.STORY_EXPORT_CACHE_MAX_BYTES = 1_000
    client = _client(writer)
    first = client.get(_url(story, 2, "pdf"))
    again = client.get(_url(story, 2, "pdf"))
    assert (first.status_code, again.status_code) == (200, 200)
    assert first.content != again.content
    assert "My Story!" in _title_page(again.content)


def test_a_pdf_another_request_is_building_is_a_429_to_retry_not_a_second_build(
    writer: Any, story: Story
) -> None:
    version = story.versions.get(number=2)
    claim = export_cache_key(version=version, fmt="pdf") + ":building"
    assert caches["exports"].add(claim, 1)
    response = _client(writer).get(_url(story, 2, "pdf"))
    assert response.status_code == 429
    assert response["Retry-After"] == "5"
    assert (
        response.json()["message"]
        == "this file is being prepared for another request; try again in a few seconds"
    )
    caches["exports"].delete(claim)
    assert _client(writer).get(_url(story, 2, "pdf")).status_code == 200


def test_exports_still_download_while_the_cache_is_down(writer: Any, story: Story, settings: Any) -> None:
    settings.CACHES = {
        **settings.CACHES,
        "exports": {"BACKEND": "storyproject.cache.FailSoftRedisCache", "LOCATION": "redis://127.0.0.1:1/0"},
    }
    client = _client(writer)
    for _ in range(2):
        response = client.get(_url(story, 2, "pdf"))
        assert response.status_code == 200
        assert "My Story!" in _title_page(response.content)


def test_a_cached_pdf_is_served_without_reading_the_versions_content(writer: Any, story: Story) -> None:
    # Was: the version was read whole before the cache was asked, so a hit on a 2.5 MB version still
    # read and decoded its content (about 0.15 s) for a key made of its id, story and date alone.
    client = _client(writer)
    assert client.get(_url(story, 2, "pdf")).status_code == 200
    table = ScreenplayVersion._meta.db_table
    with CaptureQueriesContext(connection) as queries:
        response = client.get(_url(story, 2, "pdf"))
    assert response.status_code == 200
    read = [q["sql"] for q in queries.captured_queries if f'"{table}"."content"' in q["sql"]]
    assert read == []
    # A miss does read it: the file is built from it.
    caches["exports"].clear()
    with CaptureQueriesContext(connection) as queries:
        assert client.get(_url(story, 2, "pdf")).status_code == 200
    assert any(f'"{table}"."content"' in q["sql"] for q in queries.captured_queries)


def test_a_writer_may_have_only_so_many_pdfs_built_per_hour_while_cached_ones_still_download(
    writer: Any, story: Story, settings: Any
) -> None:
    # Was: nothing bounded the builds, so a writer renaming the story (or saving versions) and asking
    # for each PDF made the server lay out one 6-second file after another.
    settings.STORY_EXPORT_BUILDS_PER_HOUR = 2
    client = _client(writer)
    assert client.get(_url(story, 1, "pdf")).status_code == 200
    assert client.get(_url(story, 2, "pdf")).status_code == 200
    story.title = "Another Title"
    story.save()
    refused = client.get(_url(story, 2, "pdf"))
    assert refused.status_code == 429
    body = refused.json()
    assert (body["code"], body["retryable"]) == ("rate_limited", True)
    assert 3500 <= body["retry_after"] <= 3600
    assert refused["Retry-After"] == str(body["retry_after"])
    assert body["message"].startswith("You have had 2 PDFs built in the last hour (at most 2).")
    # The other formats are not counted, nor is a PDF served from the cache.
    assert client.get(_url(story, 2, "fdx")).status_code == 200
    story.title = "My Story!"
    story.save()
    assert client.get(_url(story, 1, "pdf")).status_code == 200  # cached: no build


def test_a_writer_may_have_only_so_many_pdfs_built_at_once(writer: Any, story: Story, settings: Any) -> None:
    settings.STORY_EXPORT_BUILDS_AT_ONCE = 1
    with export_build_admitted(user_id=writer.pk):  # another request of the writer's, building
        refused = _client(writer).get(_url(story, 2, "pdf"))
    assert refused.status_code == 429
    assert refused["Retry-After"] == "5"
    assert refused.json()["code"] == "busy"
    assert refused.json()["message"] == (
        "You already have 1 PDF being built (at most 1 at a time); try again in a few seconds."
    )
    assert _client(writer).get(_url(story, 2, "pdf")).status_code == 200


def test_an_export_has_an_etag_and_a_304_neither_reads_the_version_nor_builds_the_file(
    writer: Any, story: Story, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Was: no ETag, If-None-Match ignored: a client checking for a new file downloaded it whole.
    client = _client(writer)
    tags = {fmt: etag_revalidated(client, _url(story, 2, fmt)) for fmt in EXPORT_FORMATS}
    assert len(set(tags.values())) == len(EXPORT_FORMATS)
    # Rebuilt, a PDF is another file (reportlab stamps its time and an /ID): its tag is weak.
    assert [fmt for fmt, tag in tags.items() if tag.startswith("W/")] == ["pdf"]
    caches["exports"].clear()
    table = ScreenplayVersion._meta.db_table
    unbuilt = dataclasses.replace(EXPORT_FORMATS["pdf"], write=lambda *_: pytest.fail("built for a 304"))
    monkeypatch.setitem(EXPORT_FORMATS, "pdf", unbuilt)
    with CaptureQueriesContext(connection) as queries:
        for fmt, tag in tags.items():
            again = client.get(_url(story, 2, fmt), HTTP_IF_NONE_MATCH=tag)
            assert (again.status_code, again.content, again["ETag"]) == (304, b"", tag), fmt
    assert not [q["sql"] for q in queries.captured_queries if f'"{table}"."content"' in q["sql"]]
    monkeypatch.undo()
    # What the file shows changes its tag: another version, the story's title, the writer's own name,
    # a release that changes the writers.
    assert client.get(_url(story, 1, "fountain"))["ETag"] != tags["fountain"]
    seen = set(tags.values())
    for change in (
        lambda: Story.objects.filter(pk=story.pk).update(title="A New Title"),
        lambda: type(writer).objects.filter(pk=writer.pk).update(first_name="Grace"),
        lambda: monkeypatch.setattr(downloads, "EXPORT_FORMAT_VERSION", downloads.EXPORT_FORMAT_VERSION + 1),
    ):
        change()
        for fmt, tag in tags.items():
            changed = client.get(_url(story, 2, fmt), HTTP_IF_NONE_MATCH=tag)
            assert changed.status_code == 200 and changed["ETag"] not in seen, fmt
            seen.add(changed["ETag"])
    # An error stands for no file: no ETag.
    for url in (_url(story, 2, "doc"), _url(story, 7, "pdf")):
        refused = client.get(url, HTTP_IF_NONE_MATCH="*")
        assert refused.status_code in (400, 404) and "ETag" not in refused, url


def test_the_schema_documents_the_exports_etag_and_304(writer: Any) -> None:
    schema = _client(writer).get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    export = schema["paths"]["/api/stories/{story_id}/versions/{number}/export/"]["get"]
    assert "If-None-Match" in {p["name"] for p in export["parameters"]}
    for code in ("200", "304"):
        assert "ETag" in export["responses"][code]["headers"], code

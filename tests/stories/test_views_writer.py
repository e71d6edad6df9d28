"""The writer's editor, preview, restore, diff, import and stats pages through Django's test client."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.core import signing
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import AsyncClient, Client
from django.test.client import MULTIPART_CONTENT

from personas.models import PersonaConfig
from stories import views
from stories.models import ScreenplayVersion, Story
from stories.validation import text_field_problem
from tests.stories.test_api import client_for
from tests.stories.test_api_writer import SCREENPLAY

pytestmark = pytest.mark.django_db

XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture
def logged_in(client: Client, writer: Any) -> Client:
    client.force_login(writer)
    return client


@pytest.fixture
def story(writer: Any) -> Story:
    story = Story.objects.create(owner=writer, title="The Heist", plot="A vault.", latest_version_number=1)
    ScreenplayVersion.objects.create(story=story, number=1, content=SCREENPLAY, model="offline")
    return story


def _payload(page: str) -> str:
    """The confirmation page's signed screenplay, as its form sends it back."""
    return page.split('name="payload" value="')[1].split('"')[0]


def _imported(client: Client, page: str) -> Any:
    """The screenplay the import made, read from the confirmation page's payload as the confirm reads it."""
    user_id = client.session["_auth_user_id"]
    return signing.loads(_payload(page), salt=f"stories.import-confirmation:{user_id}")


def test_the_editor_opens_a_version_as_fountain(logged_in: Client, story: Story) -> None:
    page = logged_in.get(f"/stories/{story.pk}/versions/1/edit/").content.decode()
    assert "Title: The Heist" in page and "INT. VAULT - NIGHT\n\nThe door swings open." in page
    assert "js/screenplay-editor.js" in page
    assert logged_in.get(f"/stories/{story.pk}/edit/")["Location"] == f"/stories/{story.pk}/versions/1/edit/"


def test_the_preview_renders_like_the_story_page_and_escapes(logged_in: Client, story: Story) -> None:
    text = f"Title: T\n\nINT. ROOM - DAY\n\nMAX\n{XSS}\n"
    response = logged_in.post(
        f"/stories/{story.pk}/preview/",
        json.dumps({"fountain": text, "base_version": 1}),
        content_type="application/json",
    )
    assert response.status_code == 200
    html = response.json()["html"]
    assert '<p class="sp-line" dir="auto">&lt;img src=x onerror=alert(1)&gt;</p>' in html
    assert "<img" not in html
    # The characters of the version edited are kept, as a save keeps them.
    assert "The planner." in html


def test_the_preview_names_the_line_it_cannot_read(logged_in: Client, story: Story) -> None:
    text = "Title: T\n\nINT. ROOM - DAY\n\n" + "x" * 5001 + "\n"
    response = logged_in.post(
        f"/stories/{story.pk}/preview/", json.dumps({"fountain": text}), content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith("line 5: this action is longer than 5000 characters")


@pytest.mark.parametrize(
    ("base_version", "error"),
    [
        (99, "the story has no version 99"),
        (True, "Must be a JSON integer."),
        (10**22, "less than or equal to 2147483647"),
        (0, "greater than or equal to 1"),
    ],
)
def test_the_preview_refuses_a_base_version_as_the_save_does(
    logged_in: Client, writer: Any, story: Story, base_version: Any, error: str
) -> None:
    # The preview used to read any of these as "the latest version" (200) where the save refused them.
    body = {"fountain": "INT. A\n\nhi\n", "base_version": base_version}
    saved = client_for(writer).post(f"/api/stories/{story.pk}/versions/", body, format="json")
    assert saved.status_code == 400
    assert error in json.dumps(saved.json())
    preview = logged_in.post(
        f"/stories/{story.pk}/preview/", json.dumps(body), content_type="application/json"
    )
    assert preview.status_code == 400
    assert error in preview.json()["error"]
    assert story.versions.count() == 1


def test_a_preview_sent_as_a_form_is_a_415_not_a_500(writer: Any, story: Story) -> None:
    # With the CSRF check on, as in a browser: the check reads a multipart body as a form, and the
    # view's read of the raw body then raised (RawPostDataException, a 500).
    client = Client(enforce_csrf_checks=True)
    client.force_login(writer)
    client.get(f"/stories/{story.pk}/versions/1/edit/")
    token = client.cookies["csrftoken"].value
    for data, content_type in (
        ({"fountain": "INT. A - DAY"}, None),  # multipart, the test client's default
        ("fountain=INT.+A", "application/x-www-form-urlencoded"),
        ("INT. A - DAY", "text/plain"),
    ):
        response = client.post(
            f"/stories/{story.pk}/preview/",
            data,
            content_type=content_type or MULTIPART_CONTENT,
            HTTP_X_CSRFTOKEN=token,
        )
        assert response.status_code == 415, content_type
        assert "JSON" in response.json()["error"]
    ok = client.post(
        f"/stories/{story.pk}/preview/",
        json.dumps({"fountain": "INT. A - DAY\n\nHi."}),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
    )
    assert ok.status_code == 200


def test_a_preview_after_signing_out_says_so_in_json(client: Client, story: Story) -> None:
    # The editor's script reads the answer as JSON: the login page it was redirected to (a 200) put
    # "undefined" in the preview, marked "Up to date".
    response = client.post(
        f"/stories/{story.pk}/preview/", json.dumps({"fountain": "INT. A"}), content_type="application/json"
    )
    assert response.status_code == 401
    assert "signed out" in response.json()["error"]


def test_another_writer_cannot_edit_preview_restore_or_diff(
    client: Client, other_writer: Any, story: Story
) -> None:
    client.force_login(other_writer)
    assert client.get(f"/stories/{story.pk}/versions/1/edit/").status_code == 404
    assert (
        client.post(f"/stories/{story.pk}/preview/", "{}", content_type="application/json").status_code == 404
    )
    assert client.post(f"/stories/{story.pk}/versions/1/restore/").status_code == 404
    text = "INT. VAULT - NIGHT\n\nTaken.\n"
    assert client.post(f"/stories/{story.pk}/versions/1/edit/", {"fountain": text}).status_code == 404
    assert client.get(f"/stories/{story.pk}/diff/?from=1&to=1").status_code == 404
    assert story.versions.count() == 1


def test_the_editors_form_saves_without_javascript_as_the_api_does_and_keeps_a_refused_text(
    logged_in: Client, story: Story
) -> None:
    # Without JavaScript the editor's form posts to its own page (it reached the API, which saved with
    # no conflict check and answered JSON).
    url = f"/stories/{story.pk}/versions/1/edit/"
    edited = "INT. VAULT - NIGHT\n\nThe door stays shut.\n"
    response = logged_in.post(url, {"fountain": edited})
    assert response.status_code == 302 and response["Location"] == f"/stories/{story.pk}/?version=2"
    saved = story.versions.get(number=2)
    assert saved.origin == "edited" and saved.based_on == 1
    # The characters of the version edited are kept, as the API's save keeps them.
    assert saved.content["characters"] == SCREENPLAY["characters"]

    # Version 1 again, now stale: refused, the text in the editor; saved anyway once asked.
    stale = f"INT. VAULT - NIGHT\n\n{XSS}\n"
    refused = logged_in.post(url, {"fountain": stale})
    assert refused.status_code == 409 and story.versions.count() == 2
    page = refused.content.decode()
    assert "version 2 was saved after version 1" in page and 'name="save_anyway"' in page
    assert "\n\n&lt;img src=x onerror=alert(1)&gt;\n</textarea>" in page
    assert logged_in.post(url, {"fountain": stale, "save_anyway": "yes"})["Location"].endswith("?version=3")

    # Not a screenplay, or a NUL: said on the page, the text kept, nothing saved.
    for text, why in [
        ("Just words.", "no scene heading"),
        ("INT. A - DAY\n\nHi\x00", ">fountain contains a NUL (\\u0000) character, which cannot be stored.<"),
    ]:
        refused = logged_in.post(url, {"fountain": text})
        assert refused.status_code == 400 and why in refused.content.decode()
    assert ">Just words.</textarea>" in logged_in.post(url, {"fountain": "Just words."}).content.decode()
    assert story.versions.count() == 3


def test_restore_from_the_page_makes_a_new_version(logged_in: Client, story: Story) -> None:
    ScreenplayVersion.objects.create(story=story, number=2, content={**SCREENPLAY, "title": "Other"})
    Story.objects.filter(pk=story.pk).update(latest_version_number=2)
    response = logged_in.post(f"/stories/{story.pk}/versions/1/restore/", follow=True)
    assert response.redirect_chain[-1][0] == f"/stories/{story.pk}/?version=3"
    assert "Version 1 restored: this is version 3." in response.content.decode()
    assert story.versions.get(number=3).content == SCREENPLAY
    assert "Restored by the writer (from v1)" in response.content.decode()


def test_the_diff_page_marks_the_changed_line_and_folds_unchanged_scenes(
    logged_in: Client, story: Story
) -> None:
    changed = json.loads(json.dumps(SCREENPLAY))
    changed["scenes"][0]["elements"][1]["text"] = f"Later. {XSS}"
    ScreenplayVersion.objects.create(story=story, number=2, content=changed)
    page = logged_in.get(f"/stories/{story.pk}/diff/?from=1&to=2").content.decode()
    assert '<del class="diff-del"><span class="visually-hidden">Deleted: </span>MAX: Now.</del>' in page
    assert "MAX: Later. &lt;img src=x onerror=alert(1)&gt;</ins>" in page
    assert '<details class="diff-scene diff-same">' in page and "Unchanged: EXT. ROOF - DAWN" in page
    assert logged_in.get(f"/stories/{story.pk}/diff/?from=x&to=2").status_code == 400


def test_the_diff_page_isolates_a_speaker_and_a_heading_that_hold_an_override(
    logged_in: Client, story: Story
) -> None:
    # A name with an open right-to-left override drew its line's words backwards after it.
    changed = json.loads(json.dumps(SCREENPLAY))
    changed["characters"][0]["name"] = "MAX \u202eX"
    changed["scenes"][0]["elements"][1]["character"] = "MAX \u202eX"
    changed["scenes"][1]["heading"] = "EXT. ROOF \u202eDAWN"
    ScreenplayVersion.objects.create(story=story, number=2, content=changed)
    page = logged_in.get(f"/stories/{story.pk}/diff/?from=1&to=2").content.decode()
    assert "Inserted: </span>\u2068MAX \u202eX\u2069: Now.</ins>" in page
    assert ": \u2068EXT. ROOF \u202eDAWN\u2069</h2>" in page, re.findall("<h2.*?</h2>", page)
    # The API's diff gives the lines as they are.
    lines = logged_in.get(f"/api/stories/{story.pk}/diff/?from=1&to=2").json()["scenes"][0]["lines"]
    assert {"op": "insert", "text": "MAX \u202eX: Now."} in lines


def test_the_story_page_shows_the_shape_and_the_edit_link(logged_in: Client, story: Story) -> None:
    page = logged_in.get(f"/stories/{story.pk}/").content.decode()
    assert f'href="/stories/{story.pk}/versions/1/edit/">Edit</a>' in page
    assert "2</strong> scenes" in page
    assert '<rect width="100" height="10"></rect>' in page


def test_import_upload_then_confirm_the_cast(logged_in: Client, persona_factory: Any) -> None:
    persona_factory("max-payne", display_name="Max")
    persona_factory("june-b", display_name="June")
    text = "Title: Vault\nLogline: A crew robs a vault.\n\nINT. VAULT - NIGHT\n\nMAX\nNow.\n\nJUNE\nWait.\n"
    upload = SimpleUploadedFile("vault.fountain", text.encode())
    page = logged_in.post("/stories/import/", {"file": upload}).content.decode()
    assert '<option value="max-payne" selected>' in page and '<option value="june-b" selected>' in page
    posted = {"payload": _payload(page), "persona-0": "max-payne", "persona-1": ""}
    response = logged_in.post("/stories/import/confirm/", posted)
    story = Story.objects.get(title="Vault")
    assert response["Location"] == f"/stories/{story.pk}/"
    assert story.plot == "A crew robs a vault."
    version = story.versions.get()
    assert (version.origin, version.content["characters"]) == (
        "imported",
        [{"name": "MAX", "persona": "max-payne"}, {"name": "JUNE"}],
    )
    assert list(story.cast.values_list("persona__name", flat=True)) == ["max-payne"]


def test_pasted_fountain_with_a_byte_order_mark_keeps_its_title_page(logged_in: Client, story: Story) -> None:
    text = "\ufeffTitle: Vault\n\nINT. VAULT - NIGHT\n\nMAX\nNow.\n"
    page = logged_in.post("/stories/import/", {"fountain": text}).content.decode()
    content = _imported(logged_in, page)
    assert content["title"] == "Vault"
    preview = logged_in.post(
        f"/stories/{story.pk}/preview/", json.dumps({"fountain": text}), content_type="application/json"
    )
    assert preview.status_code == 200
    assert "Title:" not in preview.json()["html"]
    assert preview.json()["scenes"] == 1


def test_a_utf_16_upload_on_the_import_page_is_read_and_latin_1_is_told_to_save_as_utf_8(
    logged_in: Client,
) -> None:
    text = "Title: Vault\n\nINT. VAULT - NIGHT\n\nZOË\nNow.\n"
    upload = SimpleUploadedFile("vault.fountain", text.encode("utf-16"))
    page = logged_in.post("/stories/import/", {"file": upload}).content.decode()
    content = _imported(logged_in, page)
    assert (content["title"], content["characters"]) == ("Vault", [{"name": "ZOË"}])
    upload = SimpleUploadedFile("vault.fountain", text.encode("latin-1"))
    response = logged_in.post("/stories/import/", {"file": upload})
    assert response.status_code == 400
    assert "not UTF-8 text (byte 37 cannot be read); save it as UTF-8" in response.content.decode()


@pytest.mark.parametrize("name", ["empty.fdx", "empty.fountain"])
@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"\xff\xfe", b" \r\n\t\n"])
def test_an_empty_file_on_the_import_page_is_said_to_be_empty(
    logged_in: Client, name: str, data: bytes
) -> None:
    # Was: "line 1: this is not well-formed XML (column 0)" for an empty .fdx, and "it has no scene
    # heading" for an empty .fountain (the API's upload field says "The submitted file is empty."); and
    # still so for a file of nothing but a byte-order mark (an editor's "new file" saved) or blank lines.
    response = logged_in.post("/stories/import/", {"file": SimpleUploadedFile(name, data)})
    assert response.status_code == 400
    assert "the file is empty" in response.content.decode()
    assert not Story.objects.exists()


def test_the_import_page_gives_its_size_limit_in_the_bytes_its_refusal_counts(
    logged_in: Client, settings: Any
) -> None:
    # Was "up to 976.6 KB" on the page, and "the file is larger than 1000000 bytes" on refusal.
    settings.STORY_IMPORT_MAX_BYTES = 10_000
    page = logged_in.get("/stories/import/").content.decode()
    assert "(10000 bytes, as a refusal counts them)" in page
    upload = SimpleUploadedFile("big.fountain", b"INT. ROOM - DAY\n\n" + b"x" * 10_000)
    refused = logged_in.post("/stories/import/", {"file": upload}).content.decode()
    assert "the file is 10017 bytes; the limit is 10000 bytes (STORY_IMPORT_MAX_BYTES)" in refused


def test_the_import_page_and_the_editor_refuse_more_speakers_than_the_limit(
    logged_in: Client, story: Story, settings: Any
) -> None:
    settings.STORY_IMPORT_MAX_CHARACTERS = 1
    text = "INT. VAULT - NIGHT\n\nMAX\nNow.\n\nJUNE\nWait.\n"
    response = logged_in.post("/stories/import/", {"fountain": text})
    assert response.status_code == 400
    assert "line 6: more than 1 characters speak (STORY_IMPORT_MAX_CHARACTERS)" in response.content.decode()
    preview = logged_in.post(
        f"/stories/{story.pk}/preview/", json.dumps({"fountain": text}), content_type="application/json"
    )
    assert preview.status_code == 400
    assert preview.json()["error"] == "line 6: more than 1 characters speak (STORY_IMPORT_MAX_CHARACTERS)"
    assert not Story.objects.exclude(pk=story.pk).exists()


def test_import_of_something_else_is_a_form_error(logged_in: Client) -> None:
    response = logged_in.post("/stories/import/", {"fountain": "Hello there.\n"})
    assert response.status_code == 400
    assert "no scene heading" in response.content.decode()
    assert not Story.objects.exists()


def test_a_confirmation_changed_on_the_way_is_refused_and_nothing_is_saved(
    logged_in: Client, user_factory: Any
) -> None:
    # The confirmation sent the screenplay back as JSON, which the confirm took as it came: any
    # screenplay by the contract, not the one imported, up to the form's limit rather than the import's.
    text = "Title: Vault\n\nINT. VAULT - NIGHT\n\nMAX\nNow.\n"
    page = logged_in.post("/stories/import/", {"fountain": text}).content.decode()
    payload = _payload(page)
    other = Client()
    other.force_login(user_factory("other-writer"))
    others = _payload(other.post("/stories/import/", {"fountain": text}).content.decode())
    forged = json.dumps(
        {"title": "Forged", "characters": [], "scenes": [{"heading": "INT. X", "elements": []}]}
    )
    tampered = {
        "changed": payload[:10] + ("A" if payload[10] != "A" else "B") + payload[11:],
        "cut short": payload[:-5],
        "another writer's": others,
        "signed elsewhere": signing.dumps(_imported(logged_in, page), salt="personas.import-preview"),
        "missing": "",
    }
    for what, sent in tampered.items():
        response = logged_in.post("/stories/import/confirm/", {"payload": sent, "persona-0": "x"})
        assert response.status_code == 400, what
        assert "not sent back intact" in response.content.decode(), what
    # The old form's screenplay in JSON is not taken either.
    assert logged_in.post("/stories/import/confirm/", {"content": forged}).status_code == 400
    assert not Story.objects.exists()
    # The intact one is saved.
    assert logged_in.post("/stories/import/confirm/", {"payload": payload}).status_code == 302
    assert Story.objects.get().title == "Vault"


def test_a_confirmation_older_than_an_hour_sends_the_writer_back_to_the_import(
    logged_in: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = logged_in.post("/stories/import/", {"fountain": "INT. VAULT - NIGHT\n\nMAX\nNow.\n"})
    payload = _payload(page.content.decode())
    # As an hour later: the payload's age is past the limit.
    monkeypatch.setattr(views, "IMPORT_CONFIRMATION_MAX_AGE", -1)
    response = logged_in.post("/stories/import/confirm/", {"payload": payload})
    assert response.status_code == 400
    assert "The confirmation is more than an hour old: import the file again." in response.content.decode()
    assert not Story.objects.exists()


def test_a_file_whose_screenplay_is_larger_than_itself_confirms_within_the_form_limit(
    logged_in: Client, settings: Any
) -> None:
    # A file of many short lines: its screenplay as JSON (keys, quotes) was about three times the file,
    # and came back past DJANGO_DATA_UPLOAD_MAX_BYTES (a 413) though the file was within the import's
    # limit. Sent back compressed it is smaller than the file.
    settings.STORY_IMPORT_MAX_BYTES = 60_000
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 80_000
    lines = "".join(f"MAX\nGo {n}.\n\n" for n in range(4000))
    text = f"INT. VAULT - NIGHT\n\n{lines}"
    assert len(text.encode()) < 60_000
    page = logged_in.post("/stories/import/", {"fountain": text}).content.decode()
    assert len(json.dumps(_imported(logged_in, page))) > 80_000
    response = logged_in.post("/stories/import/confirm/", {"payload": _payload(page)})
    assert response.status_code == 302
    assert len(Story.objects.get().versions.get().content["scenes"][0]["elements"]) == 4000


def test_an_imported_logline_longer_than_a_plot_may_be_is_cut_to_the_limit_and_the_writer_is_told(
    logged_in: Client, settings: Any
) -> None:
    # With STORY_MAX_PLOT_CHARS below the logline's 1,000, the story's plot was the whole logline:
    # Regenerate on the story page then refused it ("The plot is longer than 300 characters").
    settings.STORY_MAX_PLOT_CHARS = 300
    logline = " ".join(["A crew robs a vault under the harbour while the tide comes in."] * 16)[:990]
    text = f"Title: Vault\nLogline: {logline}\n\nINT. VAULT - NIGHT\n\nMAX\nNow.\n"
    page = logged_in.post("/stories/import/", {"fountain": text}).content.decode()
    assert "The logline has 990 characters; a plot may have at most 300" in page
    # Counted as the plot will be: without the control characters the plot drops (8 here).
    noisy = logline[:150] + "\x1b" * 8 + logline[150:]
    noisy_text = text.replace(logline, noisy)
    upload = SimpleUploadedFile("noisy.fountain", noisy_text.encode())
    noisy_page = logged_in.post("/stories/import/", {"file": upload}).content.decode()
    assert "The logline has 990 characters" in noisy_page
    response = logged_in.post("/stories/import/confirm/", {"payload": _payload(page)}, follow=True)
    story = Story.objects.get(title="Vault")
    assert len(story.plot) <= 300 and story.plot.endswith("…")
    assert logline.startswith(story.plot[:-1].rstrip())
    # The screenplay keeps the whole logline; only the story's plot is cut, and the writer is told.
    assert story.versions.get().content["logline"] == logline
    shown = response.content.decode()
    assert "The story&#x27;s plot is the logline cut to 300 characters" in shown
    # Regenerate starts from a plot the generation accepts.
    plot = shown.split('aria-describedby="plot-count">')[1].split("</textarea>")[0]
    assert plot == story.plot


def test_an_imported_logline_with_control_characters_becomes_a_plot_regenerate_accepts(
    logged_in: Client,
) -> None:
    # The story's plot kept the logline's escape and C1 control: the story page's Regenerate, which
    # sends the plot, was refused ("plot contains a control character (U+001B)").
    text = "Title: Vault\nLogline: A crew\x1b[31m robs\x9b a vault.\x7f\n\nINT. VAULT - NIGHT\n\nMAX\nNow.\n"
    page = logged_in.post("/stories/import/", {"file": SimpleUploadedFile("v.fountain", text.encode())})
    payload = _payload(page.content.decode())
    shown = logged_in.post("/stories/import/confirm/", {"payload": payload}, follow=True).content.decode()
    story = Story.objects.get(title="Vault")
    assert story.plot == "A crew[31m robs a vault."
    assert story.versions.get().content["logline"] == "A crew\x1b[31m robs\x9b a vault.\x7f"
    assert shown.split('aria-describedby="plot-count">')[1].split("</textarea>")[0] == story.plot
    assert text_field_problem(story.plot) is None


def test_a_cast_the_import_cannot_save_is_shown_again_as_the_writer_chose_it(
    logged_in: Client, persona_factory: Any
) -> None:
    persona_factory("max-payne", display_name="Max")
    persona_factory("june-b", display_name="June")
    persona_factory("ghost", display_name="Ghost")
    text = "Title: Vault\n\nINT. VAULT - NIGHT\n\nMAX\nNow.\n\nJUNE\nWait.\n"
    page = logged_in.post("/stories/import/", {"fountain": text}).content.decode()
    # The writer casts Max as June and June as nobody; the persona is deactivated before they confirm.
    PersonaConfig.objects.filter(name="ghost").update(is_active=False)
    chosen = {"payload": _payload(page), "persona-0": "june-b", "persona-1": "ghost"}
    response = logged_in.post("/stories/import/confirm/", chosen)
    assert response.status_code == 400
    page = response.content.decode()
    assert "&#x27;ghost&#x27;, which is not one of the active personas" in page
    # MAX is still played by June, as chosen: the page put back the name's match, Max, and a second
    # press of "Create the story" saved a cast the writer had changed.
    max_row, june_row = page.split('<select id="persona-')[1:3]
    assert '<option value="june-b" selected>' in max_row and "selected" not in max_row.replace(
        '<option value="june-b" selected>', ""
    )
    assert "selected" not in june_row.split("</select>")[0]  # the inactive persona is no choice now
    assert not Story.objects.exists()


def test_a_writer_renames_a_story_and_changes_its_plot_from_its_page(logged_in: Client, story: Story) -> None:
    # Was: only PATCH /api/stories/{id}/ (with a token) or the admin could; the pages had no way.
    page = logged_in.get(f"/stories/{story.pk}/").content.decode()
    assert f'href="/stories/{story.pk}/settings/"' in page
    form = logged_in.get(f"/stories/{story.pk}/settings/").content.decode()
    assert 'value="The Heist"' in form and ">A vault.</textarea>" in form

    saved = logged_in.post(
        f"/stories/{story.pk}/settings/", {"title": f"  The Job {XSS} ", "plot": "A bank.\r\nAt night."}
    )
    assert saved.status_code == 302 and saved["Location"] == f"/stories/{story.pk}/"
    story.refresh_from_db()
    assert (story.title, story.plot) == (f"The Job {XSS}", "A bank.\r\nAt night.")
    shown = logged_in.get(f"/stories/{story.pk}/").content.decode()
    assert "The title and plot are saved." in shown
    assert '<h1 dir="auto">The Job &lt;img src=x onerror=alert(1)&gt;</h1>' in shown
    # The versions keep what they were written with.
    assert ScreenplayVersion.objects.get(story=story).content == SCREENPLAY


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"title": "", "plot": "P"}, "This field is required."),
        ({}, "This field is required."),
        ({"title": "\u200b\u200f", "plot": "P"}, "The title has no visible character"),
        (
            {"title": "A\u0007B", "plot": "P"},
            "The title contains a line break or another control character (U+0007)",
        ),
        # At its edge too, where str.strip() cut it off and saved the title (the API refuses it).
        (
            {"title": "\x1fThe Job", "plot": "P"},
            "The title contains a line break or another control character (U+001F)",
        ),
        ({"title": "T", "plot": "   "}, "Write the plot: Regenerate starts from it."),
        ({"title": "T", "plot": "a\x1bb"}, "The plot contains a control character (U+001B)"),
        ({"title": "T" * 201, "plot": "P"}, "Ensure this value has at most 200 characters (it has 201)."),
    ],
)
def test_a_rename_that_cannot_be_saved_says_why_and_keeps_what_was_typed(
    logged_in: Client, story: Story, fields: dict[str, str], said: str
) -> None:
    response = logged_in.post(f"/stories/{story.pk}/settings/", fields)
    assert response.status_code == 400
    page = response.content.decode()
    assert said in page
    assert 'aria-invalid="true"' in page
    story.refresh_from_db()
    assert (story.title, story.plot) == ("The Heist", "A vault.")


def test_a_story_is_deleted_from_its_page_only_once_the_writer_confirms(
    logged_in: Client, story: Story
) -> None:
    unconfirmed = logged_in.post(f"/stories/{story.pk}/delete/")
    assert unconfirmed.status_code == 400
    assert "Tick the box to confirm the deletion." in unconfirmed.content.decode()
    assert Story.objects.filter(pk=story.pk).exists()

    deleted = logged_in.post(f"/stories/{story.pk}/delete/", {"confirm": "yes"})
    assert deleted.status_code == 302 and deleted["Location"] == "/"
    assert not Story.objects.filter(pk=story.pk).exists()
    assert not ScreenplayVersion.objects.filter(story_id=story.pk).exists()
    assert "“The Heist” and its versions are deleted." in logged_in.get("/").content.decode()
    assert logged_in.get(f"/stories/{story.pk}/settings/").status_code == 404
    assert logged_in.get(f"/stories/{story.pk}/delete/").status_code == 405


def test_another_writers_story_cannot_be_renamed_or_deleted(story: Story, django_user_model: Any) -> None:
    intruder = django_user_model.objects.create_user("intruder", password="intruder-pw-2026")
    client = Client()
    client.force_login(intruder)
    assert client.get(f"/stories/{story.pk}/settings/").status_code == 404
    assert client.post(f"/stories/{story.pk}/settings/", {"title": "Mine", "plot": "P"}).status_code == 404
    assert client.post(f"/stories/{story.pk}/delete/", {"confirm": "yes"}).status_code == 404
    anonymous = Client().post(f"/stories/{story.pk}/delete/", {"confirm": "yes"})
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
    story.refresh_from_db()
    assert story.title == "The Heist"


def test_the_story_page_lists_its_versions_fifty_at_a_time_newest_first(
    logged_in: Client, story: Story
) -> None:
    # Was: every version in one table: 3,000 of them (a script's edits) took 4 s and 2.4 MB a page.
    ScreenplayVersion.objects.bulk_create(
        ScreenplayVersion(story=story, number=n, content=SCREENPLAY, model="offline") for n in range(2, 121)
    )
    Story.objects.filter(pk=story.pk).update(latest_version_number=120)

    def rows(page: str) -> list[str]:
        return re.findall(r'<td><a href="/stories/\d+/\?version=(\d+)(?:&amp;page=\d+)?">', page)

    first = logged_in.get(f"/stories/{story.pk}/").content.decode()
    assert rows(first) == [str(n) for n in range(120, 70, -1)]
    assert "Version 120 " in first  # the latest version is the one shown
    assert "Page 1 of 3 (120 versions)" in first
    older = re.search(r'<a href="([^"]+)" rel="next">Older', first)
    assert older is not None and older.group(1) == "?page=2"

    # The version shown and the page of the list are kept apart, each link keeping the other.
    second = logged_in.get(f"/stories/{story.pk}/?version=7&page=2").content.decode()
    assert rows(second) == [str(n) for n in range(70, 20, -1)]
    assert "Version 7 " in second
    assert '<a href="?version=7&amp;page=1" rel="prev">' in second
    assert '<a href="?version=7&amp;page=3" rel="next">' in second
    # A version picked from the list's second page keeps the list there: its link went back to page 1.
    assert f'<td><a href="/stories/{story.pk}/?version=40&amp;page=2">v40</a></td>' in second
    assert f'<a href="/stories/{story.pk}/?compare=40,7&amp;page=2">Compare with v7</a>' in second
    assert f'<td><a href="/stories/{story.pk}/?version=100">v100</a></td>' in first
    last = logged_in.get(f"/stories/{story.pk}/?page=3").content.decode()
    assert rows(last) == [str(n) for n in range(20, 0, -1)]
    assert logged_in.get(f"/stories/{story.pk}/?page=4").status_code == 404
    assert logged_in.get(f"/stories/{story.pk}/?page=x").status_code == 404


@pytest.mark.parametrize("body", [b"title=caf%E9&plot=P", b"title=caf\xe9&plot=P", b"title=T&pl%FFot=P"])
def test_a_page_form_that_is_not_utf8_is_a_400_not_saved_with_replacement_characters(
    logged_in: Client, story: Story, body: bytes
) -> None:
    # Was: the story renamed "caf\ufffd" (Django decodes a form with errors="replace"), where the same
    # form to the API is a 400.
    response = logged_in.post(
        f"/stories/{story.pk}/settings/", body, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 400
    assert "The form is not utf-8 text: send each field&#x27;s utf-8 bytes, percent-encoded." in (
        response.content.decode()
    )
    story.refresh_from_db()
    assert story.title == "The Heist"
    good = logged_in.post(
        f"/stories/{story.pk}/settings/",
        "title=caf%C3%A9&plot=P",
        content_type="application/x-www-form-urlencoded",
    )
    assert good.status_code == 302
    story.refresh_from_db()
    assert story.title == "café"


def _multipart(**fields: bytes) -> bytes:
    parts = [
        b'--B\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (k.encode(), v)
        for k, v in fields.items()
    ]
    return b"".join(parts) + b"--B--\r\n"


def test_a_multipart_page_form_that_is_not_utf8_is_a_400_as_the_apis(logged_in: Client) -> None:
    # The import page and its confirmation post multipart: a field in Latin-1 was read with replacement
    # characters (a cue "JOSÉ" imported as "JOS\ufffd", the confirmation's screenplay saved so), where the
    # API's import refuses the same form (StrictMultiPartParser).
    pasted = b"INT. CAF\xc9 - DAY\n\nJOS\xc9\nHola.\n"
    content = b'{"title": "Caf\xe9", "characters": [{"name": "JOS\xc9"}], "scenes": [{"heading": "INT. CAF\xc9 - DAY", "elements": [{"type": "dialogue", "character": "JOS\xc9", "text": "Hola."}]}]}'
    for url, body in (
        ("/stories/import/", _multipart(fountain=pasted)),
        ("/stories/import/confirm/", _multipart(content=content)),
    ):
        response = logged_in.post(url, body, content_type="multipart/form-data; boundary=B")
        assert response.status_code == 400, url
        assert (
            "The form is not utf-8 text: send each field&#x27;s utf-8 bytes." in response.content.decode()
        ), url
    assert not Story.objects.exists()
    # Its UTF-8 bytes are read as they were.
    utf8 = pasted.decode("latin-1").encode()
    response = logged_in.post(
        "/stories/import/", _multipart(fountain=utf8), content_type="multipart/form-data; boundary=B"
    )
    assert response.status_code == 200
    assert _imported(logged_in, response.content.decode())["characters"] == [{"name": "JOSÉ"}]


@pytest.mark.parametrize("name", ["vault.fdx.txt", "vault.txt", "vault.fountain"])
def test_a_final_draft_file_under_a_fountain_name_is_read_as_final_draft(
    logged_in: Client, name: str
) -> None:
    # A mail client's "vault.fdx.txt": read as Fountain, it was refused for having "no scene heading".
    fdx = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<FinalDraft DocumentType="Script"><Content>'
        '<Paragraph Type="Scene Heading"><Text>INT. VAULT - NIGHT</Text></Paragraph>'
        '<Paragraph Type="Character"><Text>MAX</Text></Paragraph>'
        '<Paragraph Type="Dialogue"><Text>Now.</Text></Paragraph></Content></FinalDraft>'
    )
    page = logged_in.post(
        "/stories/import/", {"file": SimpleUploadedFile(name, fdx.encode())}
    ).content.decode()
    content = _imported(logged_in, page)
    assert content["scenes"][0]["heading"] == "INT. VAULT - NIGHT"
    assert content["characters"] == [{"name": "MAX"}]


def test_a_file_and_pasted_text_together_are_refused_keeping_the_text(logged_in: Client) -> None:
    # Was: the file imported and the pasted text dropped without a word.
    upload = SimpleUploadedFile("vault.fountain", b"INT. VAULT - NIGHT\n\nMAX\nNow.\n")
    pasted = "INT. BANK - DAY\n\nJUNE\nWait.\n"
    response = logged_in.post("/stories/import/", {"file": upload, "fountain": pasted})
    assert response.status_code == 400
    page = response.content.decode()
    assert "choose a file or paste Fountain text, not both" in page
    assert "INT. BANK - DAY" in page  # the pasted text is still in the form
    assert not Story.objects.exists()


def test_a_text_refused_without_javascript_is_marked_described_by_its_reason_and_focused(
    logged_in: Client, story: Story
) -> None:
    # The reason was a paragraph under the editor: the text area said nothing of it, focus at the top.
    page = logged_in.post(
        f"/stories/{story.pk}/versions/1/edit/", {"fountain": "Just words."}
    ).content.decode()
    assert (
        '<textarea id="fountain" name="fountain" spellcheck="true" rows="30" aria-invalid="true"'
        ' aria-describedby="editor-error" autofocus>Just words.</textarea>'
    ) in page
    assert '<p id="editor-error" class="editor-error message message-error" role="alert">' in page
    edit = logged_in.get(f"/stories/{story.pk}/versions/1/edit/").content.decode()
    assert 'aria-invalid="true"' not in edit


@pytest.mark.django_db(transaction=True)
async def test_a_form_whose_charset_is_no_text_encoding_is_a_400_not_a_500(writer: Any) -> None:
    # charset=zlib names a codec Python knows that decodes no text: reading the form raised LookupError,
    # a 500 for anyone (the login page's form included) on a page, and on the API's forms. Django's ASGI
    # request (daphne's) is what meets it; the test client's WSGI request fails before any of this.
    anonymous, signed_in = AsyncClient(), AsyncClient()
    await signed_in.aforce_login(writer)
    zlib_form = "application/x-www-form-urlencoded; charset=zlib"
    zlib_multipart = "multipart/form-data; boundary=B; charset=zlib"
    said = "The form&#x27;s charset, &quot;zlib&quot;, is not a text encoding: send it as UTF-8."
    for client, url, body, content_type in (
        (anonymous, "/accounts/login/", b"username=a&password=b", zlib_form),
        (signed_in, "/stories/import/", b"fountain=x", zlib_form),
        (signed_in, "/stories/import/", _multipart(fountain=b"x"), zlib_multipart),
    ):
        response = await client.generic("POST", url, body, content_type=content_type)
        assert response.status_code == 400, (url, content_type)
        assert said in response.content.decode(), (url, content_type)
    response = await signed_in.generic("POST", "/api/stories/", b"title=a&plot=b", content_type=zlib_form)
    assert (response.status_code, response.json()) == (
        400,
        {"detail": 'Unsupported charset "zlib" in request Content-Type header.'},
    )
    assert not await Story.objects.aexists()


def test_a_confirmation_sent_twice_saves_one_story(logged_in: Client, persona_factory: Any) -> None:
    # A double click on "Create the story", or Back and the button again, saved the screenplay as a
    # second story (the payload was good for its hour). The second press now leads to the first story.
    persona_factory("max-payne", display_name="Max")
    page = logged_in.post(
        "/stories/import/", {"fountain": "Title: Vault\n\nINT. VAULT - NIGHT\n\nMAX\nNow.\n"}
    )
    payload = _payload(page.content.decode())
    refused = logged_in.post("/stories/import/confirm/", {"payload": payload, "persona-0": "nobody-such"})
    assert refused.status_code == 400  # a cast that cannot be saved leaves the confirmation usable
    first = logged_in.post("/stories/import/confirm/", {"payload": payload, "persona-0": "max-payne"})
    story = Story.objects.get()
    again = logged_in.post("/stories/import/confirm/", {"payload": payload, "persona-0": ""}, follow=True)
    assert first["Location"] == again.redirect_chain[-1][0] == f"/stories/{story.pk}/"
    assert "This import was already saved as this story." in again.content.decode()
    assert Story.objects.count() == 1
    # Imported again, the file makes a new confirmation, which may make a second story on purpose.
    page = logged_in.post(
        "/stories/import/", {"fountain": "Title: Vault\n\nINT. VAULT - NIGHT\n\nMAX\nNow!\n"}
    )
    assert (
        logged_in.post("/stories/import/confirm/", {"payload": _payload(page.content.decode())}).status_code
        == 302
    )
    assert Story.objects.count() == 2

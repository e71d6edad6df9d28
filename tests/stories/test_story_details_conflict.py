"""A story's title and plot changed from two places: the second change is told, not a silent overwrite.

Two tabs of the settings page, or a settings page and a Regenerate (whose plot becomes the story's):
the later save replaced the other's title and plot without a word. The API's PATCH takes the same
check as a standard ETag / If-Match.
"""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from django.test import Client

from stories import services
from stories.models import GenerationRun, ScreenplayVersion, Story
from tests.stories.test_api import client_for
from tests.stories.test_views_writer import SCREENPLAY


@pytest.fixture
def story(writer: Any) -> Story:
    story = Story.objects.create(owner=writer, title="The Heist", plot="A vault.", latest_version_number=1)
    ScreenplayVersion.objects.create(story=story, number=1, content=SCREENPLAY, model="offline")
    return story


def _stamp(page: str) -> str:
    match = re.search(r'name="details_stamp" value="([^"]*)"', page)
    assert match, "no details_stamp on the page"
    return html.unescape(match.group(1))


@pytest.mark.django_db
def test_a_settings_page_opened_before_another_change_says_so_and_keeps_the_writers_text(
    client: Client, writer: Any, story: Story
) -> None:
    client.force_login(writer)
    url = f"/stories/{story.pk}/settings/"
    stamp = _stamp(client.get(url).content.decode())
    # Another tab renames it meanwhile.
    services.story_update(story=Story.objects.get(pk=story.pk), title="The Big Heist", plot="A bigger vault.")

    mine = {"title": "My Heist", "plot": "My vault.", "details_stamp": stamp}
    response = client.post(url, mine)
    assert response.status_code == 409
    page = response.content.decode()
    assert "The title or plot was changed since this page opened" in page
    assert "Title now: “<bdi>The Big Heist</bdi>”" in page and "A bigger vault." in page
    # The writer's text is in the form, nothing was written.
    assert 'value="My Heist"' in page and ">My vault.</textarea>" in page
    story.refresh_from_db()
    assert (story.title, story.plot) == ("The Big Heist", "A bigger vault.")

    # Saved again from that page (its stamp is now of the other change), the writer's text replaces it.
    response = client.post(url, {**mine, "details_stamp": _stamp(page)})
    assert response.status_code == 302
    story.refresh_from_db()
    assert (story.title, story.plot) == ("My Heist", "My vault.")


@pytest.mark.django_db
def test_a_version_saved_meanwhile_is_no_conflict_for_the_title_and_plot(
    client: Client, writer: Any, story: Story
) -> None:
    client.force_login(writer)
    url = f"/stories/{story.pk}/settings/"
    stamp = _stamp(client.get(url).content.decode())
    ScreenplayVersion.objects.create(story=story, number=2, content=SCREENPLAY, model="offline")
    Story.objects.filter(pk=story.pk).update(latest_version_number=2)
    response = client.post(url, {"title": "Renamed", "plot": "A vault.", "details_stamp": stamp})
    assert response.status_code == 302
    story.refresh_from_db()
    assert story.title == "Renamed"


@pytest.mark.django_db
def test_patch_with_if_match_is_refused_412_once_the_title_or_plot_changed(writer: Any, story: Story) -> None:
    api = client_for(writer)
    url = f"/api/stories/{story.pk}/"
    etag = api.get(url)["ETag"]
    assert etag.startswith('"') and etag.endswith('"')

    response = api.patch(url, {"title": "Ours"}, format="json", HTTP_IF_MATCH=etag)
    assert response.status_code == 200 and response.json()["title"] == "Ours"
    ours = response["ETag"]
    assert ours != etag and api.get(url)["ETag"] == ours

    # A client that read the story before that change: refused, nothing written, told the ETag now.
    response = api.patch(url, {"plot": "Theirs."}, format="json", HTTP_IF_MATCH=etag)
    assert response.status_code == 412
    assert "changed since the ETag in If-Match" in response.json()["detail"]
    assert response["ETag"] == ours
    story.refresh_from_db()
    assert (story.title, story.plot) == ("Ours", "A vault.")

    # With the ETag now, or "*", or no If-Match at all (the last write wins), it is written.
    assert api.patch(url, {"plot": "Theirs."}, format="json", HTTP_IF_MATCH=ours).status_code == 200
    assert api.patch(url, {"plot": "Any."}, format="json", HTTP_IF_MATCH="*").status_code == 200
    assert api.patch(url, {"plot": "Last."}, format="json").status_code == 200
    story.refresh_from_db()
    assert story.plot == "Last."


@pytest.mark.django_db
def test_a_delete_warns_of_a_version_that_started_being_written_after_the_page_opened(
    client: Client, writer: Any, story: Story
) -> None:
    client.force_login(writer)
    page = client.get(f"/stories/{story.pk}/settings/").content.decode()
    assert 'name="writing_seen" value=""' in page
    # A Regenerate from another tab starts after the page loaded: the page warned of nothing.
    run = GenerationRun.objects.create(user=writer, story=story, model="offline", max_tokens=1024)
    response = client.post(f"/stories/{story.pk}/delete/", {"confirm": "yes", "writing_seen": ""})
    assert response.status_code == 409
    page = response.content.decode()
    assert "A new version started being written since this page opened" in page
    assert f"A new version is being written for it (run #{run.pk})" in page
    assert Story.objects.filter(pk=story.pk).exists()
    # Warned now, the writer deletes it anyway.
    response = client.post(f"/stories/{story.pk}/delete/", {"confirm": "yes", "writing_seen": str(run.pk)})
    assert response.status_code == 302
    assert not Story.objects.filter(pk=story.pk).exists()


@pytest.mark.django_db
def test_if_match_is_read_as_rfc_9110_says_a_list_strong_tags_only_and_malformed_refused(
    writer: Any, story: Story
) -> None:
    api = client_for(writer)
    url = f"/api/stories/{story.pk}/"
    etag = api.get(url)["ETag"]

    # A list of tags holds when any of them is the story's (a client that kept the tags it saw): it was
    # compared whole, so the story's own tag in a list was a 412 saying the story had changed.
    response = api.patch(url, {"title": "Listed"}, format="json", HTTP_IF_MATCH=f'"0123456789", {etag}')
    assert response.status_code == 200, response.content
    etag = response["ETag"]
    # Two If-Match fields are one list (RFC 9110 section 5.3), as Django joins them: the same.
    response = api.patch(url, {"title": "Listed twice"}, format="json", HTTP_IF_MATCH=f'"a",,{etag} , "b"')
    assert response.status_code == 200, response.content
    etag = response["ETag"]

    # A weak tag never matches under If-Match's strong comparison (RFC 9110 section 13.1.1).
    response = api.patch(url, {"title": "Weak"}, format="json", HTTP_IF_MATCH=f"W/{etag}")
    assert response.status_code == 412

    # A value that is not "*" or a list of entity tags (the tag without its quotes, an empty field sent
    # for a tag the client did not have, "*" in a list) is refused as such: it was a 412 saying the story
    # had changed, or, empty, no check at all, the last write winning without a word.
    for malformed in (etag.strip('"'), "", "  ", f"*, {etag}", f'{etag}, "open'):
        response = api.patch(url, {"title": "Malformed"}, format="json", HTTP_IF_MATCH=malformed)
        assert response.status_code == 400, (malformed, response.content)
        assert response.json() == {
            "detail": 'If-Match is not "*" or a list of entity tags (quoted, as the ETag of a GET is).'
        }
    story.refresh_from_db()
    assert story.title == "Listed twice"


@pytest.mark.django_db
def test_the_etag_stands_for_the_whole_story_as_get_shows_it_and_if_none_match_gets_a_304(
    writer: Any, story: Story
) -> None:
    # The ETag stood for the title and plot only, though a GET shows more (latest_version, cast,
    # updated_at): a strong validator that did not change with what it validated (RFC 9110 section
    # 8.8.1), so no If-None-Match could be answered 304 by it, and none was (a client polling the story
    # got it whole every time).
    api = client_for(writer)
    url = f"/api/stories/{story.pk}/"
    first = api.get(url)
    etag = first["ETag"]
    assert first["Cache-Control"] == "private, no-cache"
    for asked in (etag, f"W/{etag}", f'"other", {etag}', "*"):  # If-None-Match compares weakly
        again = api.get(url, HTTP_IF_NONE_MATCH=asked)
        assert (again.status_code, again.content, again["ETag"]) == (304, b"", etag), asked
    assert api.get(url, HTTP_IF_NONE_MATCH='"other"').status_code == 200

    # A version saved changes what a GET shows (its latest_version), hence the ETag: the story is read
    # whole again.
    ScreenplayVersion.objects.create(story=story, number=2, content=SCREENPLAY, model="offline")
    Story.objects.filter(pk=story.pk).update(latest_version_number=2)
    changed = api.get(url, HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200 and changed.json()["latest_version"] == 2
    assert changed["ETag"] != etag

    # A PATCH or DELETE with If-Match is judged on the same ETag: the one read before is stale; the
    # one read now holds (a DELETE ignored If-Match, and deleted a story changed since).
    stale = api.patch(url, {"title": "Late"}, format="json", HTTP_IF_MATCH=etag)
    assert (stale.status_code, stale["ETag"]) == (412, changed["ETag"])
    assert api.delete(url, HTTP_IF_MATCH=etag).status_code == 412
    assert Story.objects.filter(pk=story.pk, title="The Heist").exists()
    renamed = api.patch(url, {"title": "On time"}, format="json", HTTP_IF_MATCH=changed["ETag"])
    assert renamed.status_code == 200 and renamed["ETag"] == api.get(url)["ETag"]
    assert api.delete(url, HTTP_IF_MATCH=renamed["ETag"]).status_code == 204
    assert not Story.objects.filter(pk=story.pk).exists()


@pytest.mark.django_db
def test_a_delete_is_refused_once_when_a_version_was_saved_after_the_page_opened(
    client: Client, writer: Any, story: Story
) -> None:
    # The page's count ("Its 1 version") and warning are as it loaded; a Regenerate from another tab that
    # had already finished, or an edit saved, was no running run to warn of: deleted without a word.
    client.force_login(writer)
    page = client.get(f"/stories/{story.pk}/settings/").content.decode()
    assert 'name="versions_seen" value="1"' in page
    ScreenplayVersion.objects.create(story=story, number=2, content=SCREENPLAY, model="offline")
    Story.objects.filter(pk=story.pk).update(latest_version_number=2)
    form = {"confirm": "yes", "writing_seen": "", "versions_seen": "1"}
    response = client.post(f"/stories/{story.pk}/delete/", form)
    assert response.status_code == 409
    page = response.content.decode()
    assert "Version 2 was saved since this page opened" in page
    assert "Its 2 versions and its cast are deleted for good." in page
    assert 'name="versions_seen" value="2"' in page
    assert Story.objects.filter(pk=story.pk).exists()
    # A value the page never sends (tampered: 5,000 digits, past int()'s limit) is no count seen, as a
    # form without it: no check, and no 500.
    response = client.post(f"/stories/{story.pk}/delete/", {**form, "versions_seen": "9" * 5000})
    assert response.status_code == 302
    assert not Story.objects.filter(pk=story.pk).exists()


@pytest.mark.django_db
def test_a_write_with_if_none_match_naming_the_story_now_is_refused(writer: Any, story: Story) -> None:
    # If-None-Match on a PATCH or DELETE holds only while none of its tags is the story's (weakly) and it
    # is not "*" (RFC 9110 section 13.1.2): it was ignored, and the write done.
    api = client_for(writer)
    url = f"/api/stories/{story.pk}/"
    etag = api.get(url)["ETag"]
    for asked in ("*", etag, f'W/{etag}, "other"'):
        response = api.patch(url, {"title": "Not now"}, format="json", HTTP_IF_NONE_MATCH=asked)
        assert (response.status_code, response["ETag"]) == (412, etag), asked
        said = "The story is as If-None-Match names it (this response's ETag); nothing was done."
        assert response.json() == {"detail": said}
        assert api.delete(url, HTTP_IF_NONE_MATCH=asked).status_code == 412, asked
    story.refresh_from_db()
    assert story.title == "The Heist"
    assert api.patch(url, {"title": "Now"}, format="json", HTTP_IF_NONE_MATCH='"other"').status_code == 200
    assert api.delete(url, HTTP_IF_NONE_MATCH='"other"').status_code == 204


@pytest.mark.django_db
@pytest.mark.parametrize(
    "tampered", ['"0123"', "<script>alert(1)</script>", '"' + "a" * 24 + '" x', "x" * 5000]
)
def test_a_stamp_the_page_never_sends_is_a_400_asking_to_reload_not_a_false_conflict(
    client: Client, writer: Any, story: Story, tampered: str
) -> None:
    # Was: a 409 saying the title or plot had changed meanwhile (they had not), and on a 400 the
    # stamp echoed into the page as it came.
    client.force_login(writer)
    url = f"/stories/{story.pk}/settings/"
    response = client.post(url, {"title": "My Heist", "plot": "My vault.", "details_stamp": tampered})
    assert response.status_code == 400
    page = response.content.decode()
    assert "This form is incomplete or was changed on the way" in page and "reload" in page
    assert "was changed since this page opened" not in page
    assert _stamp(page) == _stamp(client.get(url).content.decode()) and "x" * 30 not in page
    story.refresh_from_db()
    assert (story.title, story.plot) == ("The Heist", "A vault.")


@pytest.mark.django_db
def test_a_refused_form_with_a_tampered_stamp_does_not_echo_it(
    client: Client, writer: Any, story: Story
) -> None:
    client.force_login(writer)
    url = f"/stories/{story.pk}/settings/"
    response = client.post(url, {"title": "", "plot": "My vault.", "details_stamp": "y" * 300})
    assert response.status_code == 400
    assert "y" * 300 not in response.content.decode()

"""A failed or cancelled run's model text, read by its owner after its events are gone (docs/protocol.md,
"Nothing of a failed run is saved but the run itself"): the run's page and GET /api/runs/{id}/."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import Client
from rest_framework.test import APIClient

from stories import views
from stories.models import GenerationRun, ScreenplayVersion, Story
from tests.fake_anthropic import FakeAnthropic, Reply
from tests.stories.runs.conftest import log_expires

pytestmark = pytest.mark.django_db(transaction=True)

PLOT = {"plot": "A statue, a lie, a fog.", "personas": ["noir-detective", "femme-fatale"]}
# What the model sent before the run failed: JSON cut short (invalid_output), with markup in a line.
BROKEN = '{"title": "<script>alert(1)</script>", "scenes": [{"heading": "INT. A & B - DAY", "elements": [}'


def _api(user: Any | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def _page(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _failed_run(writer: Any, fake_anthropic: FakeAnthropic) -> int:
    """A run that failed on the model's broken JSON, its events then gone as after a restart without Redis."""
    fake_anthropic.script(Reply(text=BROKEN))
    response = _api(writer).post("/api/ai/generate-screenplay/", PLOT, format="json")
    assert response.status_code == 502 and response.json()["code"] == "invalid_output", response.content
    run = GenerationRun.objects.get()
    async_to_sync(log_expires)(run.pk)
    return run.pk


def test_a_failed_runs_text_is_on_its_page_escaped_after_its_events_are_gone(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    run_id = _failed_run(writer, fake_anthropic)
    runs = _page(writer).get("/runs/").content.decode()
    assert f'href="/runs/{run_id}/">Text received ({len(BROKEN)} characters)</a>' in runs
    page = _page(writer).get(f"/runs/{run_id}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "invalid_output" in html and "Nothing was saved" in html
    assert (
        '<pre class="run-text" role="region" tabindex="0" aria-label="Text received">{&quot;title&quot;: &quot;&lt;script&gt;alert(1)&lt;/script&gt;&quot;, '
        "&quot;scenes&quot;: [{&quot;heading&quot;: &quot;INT. A &amp; B - DAY&quot;, "
        "&quot;elements&quot;: [}</pre>"
    ) in html
    assert "<script>alert(1)" not in html


def test_a_failed_runs_text_is_in_the_api_after_its_events_are_gone(
    writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    run_id = _failed_run(writer, fake_anthropic)
    response = _api(writer).get(f"/api/runs/{run_id}/")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    body = response.json()
    assert (body["id"], body["status"], body["error_code"]) == (run_id, "failed", "invalid_output")
    assert body["raw_text"] == BROKEN
    # The list stays light: the text is the run's own page's.
    assert "raw_text" not in _api(writer).get("/api/runs/").json()["results"][0]


def test_another_writers_run_is_a_404_on_the_page_and_the_api(
    writer: Any, other_writer: Any, cast: Any, fake_anthropic: FakeAnthropic
) -> None:
    run_id = _failed_run(writer, fake_anthropic)
    page = _page(other_writer).get(f"/runs/{run_id}/")
    assert page.status_code == 404 and "alert(1)" not in page.content.decode()
    api = _api(other_writer).get(f"/api/runs/{run_id}/")
    assert api.status_code == 404 and api.json() == {"detail": f"No run {run_id} among yours."}
    # A run that does not exist is answered the same way (its own number said).
    assert _api(writer).get(f"/api/runs/{run_id + 1}/").json() == {
        "detail": f"No run {run_id + 1} among yours."
    }
    assert _api(writer).get(f"/api/runs/{10**30}/").status_code == 404
    assert _page(writer).get(f"/runs/{10**30}/").status_code == 404
    assert _api(None).get(f"/api/runs/{run_id}/").status_code == 401
    anonymous = Client().get(f"/runs/{run_id}/")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")


def test_a_cancelled_runs_text_is_shown_and_a_run_without_text_says_so(writer: Any) -> None:
    cancelled = GenerationRun.objects.create(
        user=writer, status="cancelled", model="offline", max_tokens=1024, raw_text='{"title": "Half'
    )
    empty = GenerationRun.objects.create(
        user=writer, status="failed", model="offline", max_tokens=1024, error_code="llm_unavailable"
    )
    runs = _page(writer).get("/runs/").content.decode()
    assert f'href="/runs/{cancelled.pk}/">Text received (15 characters)' in runs
    assert f'href="/runs/{empty.pk}/">Text received' not in runs
    assert (
        '<pre class="run-text" role="region" tabindex="0" aria-label="Text received">{&quot;title&quot;: &quot;Half</pre>'
        in _page(writer).get(f"/runs/{cancelled.pk}/").content.decode()
    )
    html = _page(writer).get(f"/runs/{empty.pk}/").content.decode()
    assert "the run ended before the model sent any text" in html and "run-text" not in html
    assert _api(writer).get(f"/api/runs/{empty.pk}/").json()["raw_text"] == ""


def test_the_page_shows_a_bounded_part_of_a_long_text_and_says_where_the_rest_is(
    writer: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(views, "RUN_TEXT_SHOWN_CHARS", 10)
    run = GenerationRun.objects.create(
        user=writer, status="failed", model="offline", max_tokens=1024, raw_text="0123456789abcdef"
    )
    html = _page(writer).get(f"/runs/{run.pk}/").content.decode()
    assert (
        '<pre class="run-text" role="region" tabindex="0" aria-label="Text received">0123456789</pre>' in html
    )
    assert f"The first 10 of 16 characters are shown; <code>GET /api/runs/{run.pk}/</code>" in html
    assert _api(writer).get(f"/api/runs/{run.pk}/").json()["raw_text"] == "0123456789abcdef"


def test_the_runs_story_title_is_isolated_from_the_pages_words(writer: Any) -> None:
    # A title leaving U+202E open drew the "(version 1)" after it backwards (tests/browser/test_pages.py
    # measures it in Chromium); a stray U+2069 before it would close an isolate early, so it goes.
    story = Story.objects.create(
        owner=writer, title="\u2069\u202eevil", plot="A fog.", latest_version_number=1
    )
    run = GenerationRun.objects.create(
        user=writer, story=story, status="succeeded", model="offline", max_tokens=1024, raw_text="\u202eok"
    )
    ScreenplayVersion.objects.create(story=story, number=1, content={}, model="offline", run=run)
    html = _page(writer).get(f"/runs/{run.pk}/").content.decode()
    assert "><bdi>\u2068\u202eevil\u2069</bdi></a> (version 1)" in html
    # The model's text is shown as it came, in its own block.
    assert (
        '<pre class="run-text" role="region" tabindex="0" aria-label="Text received">\u202eok</pre>' in html
    )


def test_a_succeeded_runs_page_points_to_its_version_not_to_text_never_sent(
    writer: Any, cast: Any, offline: None
) -> None:
    # A saved run keeps no raw_text (its version holds the screenplay): its page said "None: the run
    # ended before the model sent any text", under a run that wrote 900 tokens.
    response = _api(writer).post("/api/ai/generate-screenplay/", PLOT, format="json")
    assert response.status_code == 201, response.content
    run = GenerationRun.objects.get()
    story_id = response.json()["story"]["id"]
    html = _page(writer).get(f"/runs/{run.pk}/").content.decode()
    assert "before the model sent any text" not in html
    assert (
        f'Saved as <a href="/stories/{story_id}/?version=1">version 1</a> of the story: '
        "the screenplay is kept there."
    ) in html
    Story.objects.filter(pk=story_id).delete()
    html = _page(writer).get(f"/runs/{run.pk}/").content.decode()
    assert "Saved with its story, which has since been deleted." in html
    assert "before the model sent any text" not in html

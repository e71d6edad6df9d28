"""A persona an editor deletes while a run that names it is writing (docs/generation.md, the save).

The test's own server, so that deleting a persona changes no other test's data.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import OwnServer, Watched, log_in
from tests.browser.test_generate import generate, pick_persona

pytestmark = pytest.mark.browser

PLOT = "A survey ship's captain and a detective question the same witness, who lies to both."
DELETE = (
    "from personas.models import PersonaConfig; "
    "print(PersonaConfig.objects.filter(name='starship-captain').delete()[1]['personas.PersonaConfig'])"
)


def test_the_create_page_says_which_persona_left_the_cast_when_it_was_deleted_mid_run(
    own_server: OwnServer, watched: Watched
) -> None:
    # Was: the story was saved without the captain in its cast, and nothing said so.
    # A slow model (about 15 s for this run), so that the persona goes while the run is writing.
    own_server.env["STORY_OFFLINE_TOKENS_PER_SECOND"] = "80"
    own_server.restart()
    page = watched.page
    log_in(page, own_server)
    page.goto(own_server.url + "/stories/new/")
    pick_persona(page, "marlowe", "Sam Marlowe")
    pick_persona(page, "captain", "Captain Imani Okafor")
    page.get_by_label("Plot").fill(PLOT)
    generate(page)
    expect(page).to_have_url(re.compile(r"\?run=\d+$"))  # accepted: the run is writing
    assert own_server.manage("shell", "-v", "0", "-c", DELETE).split()[-1] == "1"
    assert page.locator("#stream-saved").is_hidden(), "the run ended before the persona was deleted"

    expect(page.locator("#stream-saved")).to_be_visible(timeout=60_000)
    note = page.locator("#stream-cast-dropped")
    expect(note).to_be_visible()
    expect(note).to_contain_text("(persona \u2068starship-captain\u2069) left the story's cast")
    expect(note).to_contain_text("deleted while the screenplay was being written")
    page.locator("#saved-link").click()
    cast = page.locator(".cast")
    expect(cast).to_contain_text("Sam Marlowe")
    expect(cast).not_to_contain_text("Captain Imani Okafor")
    assert watched.dialogs == [] and watched.errors == []

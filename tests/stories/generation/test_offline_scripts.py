"""The offline model (the product without a key) with plots and personas in scripts other than English."""

from __future__ import annotations

import re
from typing import Any

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/api/ai/generate-screenplay/"


@pytest.fixture
def api(writer: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(writer)
    return client


def _generate(api: APIClient, plot: str, personas: list[str]) -> dict[str, Any]:
    response = api.post(URL, {"plot": plot, "personas": personas}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_a_japanese_plot_gives_a_title_and_a_scene_per_sentence(
    api: APIClient, offline: None, persona_factory: Any
) -> None:
    # Words were [A-Za-z']: the story was "Untitled", and the plot, whose sentences end in 。 with no
    # space after it, was one scene followed by two English filler scenes.
    persona_factory("poet", "松尾 葵")
    data = _generate(
        api, "東京の夜、二人の詩人が出会う。彼らは古い約束を思い出す。最後に雨が止む。", ["poet"]
    )
    assert data["story"]["title"] == "東京の夜 二人の詩人が出会う 彼らは古い約束を思い出す 最後に雨が止む"
    content = data["version"]["content"]
    assert [scene["summary"] for scene in content["scenes"]] == [
        "東京の夜、二人の詩人が出会う。",
        "彼らは古い約束を思い出す。",
        "最後に雨が止む。",
    ]
    assert content["logline"] == "東京の夜、二人の詩人が出会う。"


@pytest.mark.parametrize(
    ("plot", "title"),
    [
        # Not ending on "In" (nor "And A": "A Lighthouse Keeper And A").
        ("Zoë and José meet in Zürich. Things go wrong.", "Zoë And José Meet"),
        ("A lighthouse keeper and a whale. Storm.", "A Lighthouse Keeper"),
        ("हिन्दी फ़िल्म की कहानी। एक रात।", "हिन्दी फ़िल्म की कहानी एक"),
        ("ليلى تبحث عن أخيها في القاهرة. الليل طويل.", "ليلى تبحث عن أخيها في"),
        ("Ein Mann namens ẞ. Gut.", "Ein Mann Namens ẞ Gut"),
        ("don't look back. Never.", "Don't Look Back Never"),
    ],
)
def test_a_plot_in_any_script_gives_its_own_words_as_the_title(
    api: APIClient, offline: None, persona_factory: Any, plot: str, title: str
) -> None:
    # "Zoë" was cut to "Zo", "José" to "Jos", and Hindi's vowel signs split its words apart.
    persona_factory("someone", "Someone")
    assert _generate(api, plot, ["someone"])["story"]["title"] == title


@pytest.mark.parametrize(
    ("display_name", "character_name"),
    [
        # The 81st character is the vowel sign of a conjunct (क्ष, then त्रि): the conjunct goes whole.
        ("अब" + "क्षत्रिय " * 10, "अब" + "क्षत्रिय " * 8 + "क्ष"),
        # An astronaut with a skin tone, joined by ZWJ: the 80th is the woman, the 81st her skin tone.
        ("A" * 79 + "👩🏽‍🚀", "A" * 79),
        ("A" * 78 + "👩🏽‍🚀", "A" * 78),
    ],
)
def test_a_long_name_is_cut_to_a_character_name_between_what_is_drawn_apart(
    api: APIClient, offline: None, persona_factory: Any, display_name: str, character_name: str
) -> None:
    # A display name may have 200 characters, a character name 80: it was cut at the 80th code point,
    # leaving a consonant without its vowel sign, or an emoji without its skin tone.
    persona_factory("long", display_name.strip())
    content = _generate(api, "A night. A day. An end.", ["long"])["version"]["content"]
    (character,) = content["characters"]
    assert character["name"] == character_name.strip()


def test_a_characters_description_is_the_persona_described_not_its_instructions(
    api: APIClient, offline: None, persona_factory: Any
) -> None:
    # The description was the context's first sentence, its label and all: the cast list of every
    # screenplay the demo wrote read "CAPTAIN OKAFOR - Instructions: You are Captain Okafor.".
    persona_factory(
        "captain",
        "Captain Okafor",
        system_prompt="You are Captain Okafor. Stay calm.",
        description="Captain of the survey vessel Meridian. Three years from home.",
    )
    persona_factory("outlaw", "Dusty", system_prompt="You are Dusty.", personality="Generous. Superstitious.")
    persona_factory("ai", "Halcyon", system_prompt="You are a building's AI.")
    data = _generate(api, "A storm. A wreck. A letter.", ["captain", "outlaw", "ai"])
    characters = data["version"]["content"]["characters"]
    assert [(c["name"], c.get("description")) for c in characters] == [
        ("CAPTAIN OKAFOR", "Captain of the survey vessel Meridian."),
        ("DUSTY", "Generous."),
        ("HALCYON", None),
    ]


def test_the_offline_lines_about_the_plot_pick_words_that_carry_it(
    api: APIClient, offline: None, persona_factory: Any
) -> None:
    # A line picked any word of over three letters: "This is about the until.", "... about the they."
    persona_factory("someone", "Someone")
    content = _generate(api, "They waited there until they were gone. Then silence.", ["someone"])["version"]
    texts = " ".join(e["text"] for scene in content["content"]["scenes"] for e in scene["elements"])
    about = re.findall(r"This is about the (\w+)\.", texts)
    # The plot's own words that carry nothing are never picked (the filler scenes have words of their own).
    assert about and not set(about) & {"they", "there", "until", "were", "then"}, about
    assert {"waited", "gone", "silence"} & set(about), about

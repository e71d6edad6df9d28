from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from personas.context import (
    SHORTENED_MARKER,
    context_shorten,
    persona_context_text,
    persona_summary,
    token_estimate,
)

FULL = {
    "summary": "One line for pickers.",
    "backstory": "Born in a lighthouse.",
    "description": "A keeper of lights.",
    "voice": "Low and slow.",
    "personality": "Patient.",
    "system_prompt": "You are the keeper.",
    "scenario": "A storm is coming.",
    "example_lines": ["Mind the rocks.", "  ", "The light never sleeps."],
    "tags": ["sea", "TAG-TEXT"],
    "private": {"notes": "PRIVATE-NOTE"},
    "extensions": {"chub": {"secret": "EXTENSION-TEXT"}},
}


def test_full_config_gives_labelled_fields_in_documented_order() -> None:
    assert persona_context_text(FULL) == (
        "Instructions: You are the keeper.\n\n"
        "Description: A keeper of lights.\n\n"
        "Personality: Patient.\n\n"
        "Voice: Low and slow.\n\n"
        "Example lines:\n- Mind the rocks.\n- The light never sleeps.\n\n"
        "Scenario: A storm is coming.\n\n"
        "Backstory: Born in a lighthouse."
    )


def test_private_extensions_tags_and_summary_never_reach_the_context() -> None:
    text = persona_context_text(FULL)
    for secret in ["PRIVATE-NOTE", "EXTENSION-TEXT", "TAG-TEXT", "One line for pickers"]:
        assert secret not in text


def test_a_flat_system_prompt_only_config_works() -> None:
    assert persona_context_text({"system_prompt": "  You are Mika.\r\nTalk fast. "}) == (
        "Instructions: You are Mika.\nTalk fast."
    )


def test_the_older_nested_context_object_fills_missing_fields() -> None:
    config = {
        "description": "Top-level description wins.",
        "context": {
            "description": "Nested description loses.",
            "personality": "Courteous.",
            "voice": "No contractions.",
            "private": "NESTED-PRIVATE",
            "tags": ["NESTED-TAG"],
        },
    }
    assert persona_context_text(config) == (
        "Description: Top-level description wins.\n\nPersonality: Courteous.\n\nVoice: No contractions."
    )


def test_a_nested_context_string_counts_as_the_description() -> None:
    assert persona_context_text({"context": "An old-style blurb."}) == "Description: An old-style blurb."


def test_wrong_types_and_empty_values_are_skipped() -> None:
    config = {"voice": 7, "personality": "   ", "example_lines": [1, None, " "], "backstory": None}
    assert persona_context_text(config) == ""
    assert persona_context_text({}) == ""


def test_summary_falls_back_to_the_first_sentence() -> None:
    assert persona_summary({"summary": " Short. ", "description": "Long."}) == "Short."
    assert persona_summary({"description": "First one. Second one."}) == "First one."
    assert persona_summary({"context": {"personality": "Shy! Very shy."}}) == "Shy!"
    assert persona_summary({"description": "京都の詩人。静か。"}) == "京都の詩人。"
    assert persona_summary({"tags": ["x"]}) == ""
    # The older flat shape: its instructions are all a picker can say of it.
    assert (
        persona_summary({"system_prompt": "You are Mika, seventeen. Talk fast."})
        == "You are Mika, seventeen."
    )
    assert (
        persona_summary({"system_prompt": "You are Mika.", "personality": "Sarcastic. Kind."}) == "Sarcastic."
    )


def test_a_summary_made_from_a_description_without_a_sentence_end_is_short() -> None:
    # A card's description is often a list of traits with no full stop: the picker showed all of it.
    description = "tall, tired, smart, " * 1000
    summary = persona_summary({"description": description})
    assert len(summary) <= 200
    assert summary.startswith("tall, tired, smart,")
    assert summary.endswith("smart…") or summary.endswith("tired…") or summary.endswith("tall…")
    assert persona_summary({"description": "x" * 5000}) == "x" * 199 + "…"
    # A summary the editor wrote is theirs, as long as it is (the schema bounds it).
    assert persona_summary({"summary": "y" * 500, "description": description}) == "y" * 500


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("abcd", 2),  # 4 / 3.8, rounded up
        ("a" * 38, 10),
        ("é" * 10, 6),  # 0.6 per accented or Cyrillic character
        ("京" * 10, 12),  # 1.2 per CJK character
    ],
)
def test_token_estimate_follows_the_documented_rule(text: str, expected: int) -> None:
    assert token_estimate(text) == expected


def test_text_within_budget_is_not_shortened() -> None:
    assert context_shorten("One. Two.", 100) == ("One. Two.", False)


def test_shortening_cuts_at_the_last_sentence_boundary_that_fits() -> None:
    text = "First sentence here. Second sentence here! Third one is a much longer sentence, it goes on."
    budget = token_estimate("First sentence here. Second sentence here! " + SHORTENED_MARKER)
    shortened, cut = context_shorten(text, budget)
    assert cut
    assert shortened == "First sentence here. Second sentence here! [shortened]"
    assert token_estimate(shortened) <= budget


def test_shortening_handles_cjk_sentence_ends_and_line_breaks() -> None:
    text = "雨の音が、答えです。静かな店。" + "長い文" * 50
    shortened, cut = context_shorten(text, 23)
    assert (shortened, cut) == ("雨の音が、答えです。静かな店。 [shortened]", True)
    lines = "Instructions: Be brief\n\nBackstory: " + "word " * 200
    assert context_shorten(lines, 10) == ("Instructions: Be brief [shortened]", True)


def test_a_first_sentence_longer_than_the_budget_is_cut_at_a_word() -> None:
    shortened, cut = context_shorten("alpha beta gamma delta epsilon zeta eta theta iota kappa.", 8)
    assert cut
    assert shortened.endswith(" [shortened]")
    assert shortened.split(" [")[0] in "alpha beta gamma delta epsilon zeta eta theta iota kappa."
    assert token_estimate(shortened) <= 8


def test_shortening_needs_a_positive_budget() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        context_shorten("text", 0)


@given(st.text(max_size=300))
def test_token_estimate_equals_the_documented_rule_for_any_text(text: str) -> None:
    weights = [
        Fraction(12, 10) if ord(ch) >= 0x3000 else Fraction(6, 10) if ord(ch) > 127 else 1 / Fraction(38, 10)
        for ch in text
    ]
    assert token_estimate(text) == math.ceil(sum(weights))


@given(st.text(alphabet=st.sampled_from(list("ab .!?\n京。")), max_size=400), st.integers(1, 80))
def test_shortened_text_always_fits_the_budget(text: str, budget: int) -> None:
    shortened, cut = context_shorten(text, budget)
    assert token_estimate(shortened) <= budget or shortened == SHORTENED_MARKER
    assert cut == (shortened != text)

"""The field-by-field diff behind the persona history and the import preview (personas.history)."""

from __future__ import annotations

from personas.history import Segment, persona_state, state_changes


def _state(config: object, *, is_active: bool = True) -> dict[str, str]:
    return persona_state(name="hero", display_name="Hero", is_active=is_active, config_data=config)


def test_a_state_names_the_parts_in_the_editors_order_with_lists_as_text_and_other_keys_last() -> None:
    state = _state(
        {"z": {"ü": 1}, "tags": ["noir", "rain"], "voice": "Gravel.", "example_lines": ["A.", "B."]}
    )
    assert list(state) == ["Key", "Display name", "Active", "Voice", "Example lines", "Tags", "Other key: z"]
    assert state["Tags"] == "noir, rain" and state["Example lines"] == "A.\nB."
    assert state["Other key: z"] == '{\n  "ü": 1\n}'


def test_only_changed_parts_are_listed_with_removed_and_added_parts() -> None:
    before = _state({"voice": "Quiet and slow.", "backstory": "Sea."})
    after = _state({"voice": "Loud and slow.", "scenario": "Docks."}, is_active=False)
    changes = {change.label: change.segments for change in state_changes(before=before, after=after)}
    assert list(changes) == ["Active", "Voice", "Scenario", "Backstory"]
    assert changes["Voice"] == [
        Segment("del", "Quiet "),
        Segment("ins", "Loud "),
        Segment("same", "and slow."),
    ]
    assert changes["Scenario"] == [Segment("ins", "Docks.")]
    assert changes["Backstory"] == [Segment("del", "Sea.")]


def test_a_first_state_is_all_additions_and_a_part_with_nothing_in_common_is_replaced() -> None:
    assert [c.label for c in state_changes(before=None, after=_state({"voice": "V."}))] == [
        "Key",
        "Display name",
        "Active",
        "Voice",
    ]
    old, new = "a " * 5001, "b " * 3
    (change,) = state_changes(before=_state({"voice": old}), after=_state({"voice": new}))
    assert change.segments == [Segment("del", old), Segment("ins", new)]


def test_a_part_of_many_repeated_words_is_shown_whole_rather_than_matched_word_by_word() -> None:
    # 1,500 copies of a word against 750 of "a b": matching them word by word took 44 s on one preview.
    old, new = "a " * 1500, "a b " * 750
    (change,) = state_changes(before=_state({"voice": old}), after=_state({"voice": new}))
    assert change.segments == [Segment("del", old), Segment("ins", new)]
    # An ordinary edit of a long part is still matched word by word.
    text = " ".join(f"word{n}" for n in range(1500))
    (change,) = state_changes(before=_state({"voice": text}), after=_state({"voice": text + " more"}))
    assert [segment.op for segment in change.segments] == ["same", "del", "ins"]  # the last word: "word1499"
    assert change.segments[0].text.startswith("word0 word1 ") and change.segments[2].text == "word1499 more"


def test_a_config_that_is_not_an_object_is_shown_as_raw_json() -> None:
    assert _state(["odd"])["Raw JSON"] == '[\n  "odd"\n]'


def test_a_change_in_a_script_without_spaces_is_shown_letter_by_letter() -> None:
    # A Japanese or Thai text is one "word" to a split at spaces: a change of one word showed all of
    # it removed and written again.
    before = _state({"voice": "静かで、ゆっくり話す。", "backstory": "เขาเป็นครู"})
    after = _state({"voice": "静かで、速やかに話す。", "backstory": "เขาเป็นหมอ"})
    changes = {change.label: change.segments for change in state_changes(before=before, after=after)}
    assert changes["Voice"] == [
        Segment("same", "静かで、"),
        Segment("del", "ゆっくり"),
        Segment("ins", "速やかに"),
        Segment("same", "話す。"),
    ]
    # A Thai letter keeps its vowel and tone marks: "ครู" is never split from its "ู".
    assert changes["Backstory"] == [Segment("same", "เขาเป็น"), Segment("del", "ครู"), Segment("ins", "หมอ")]

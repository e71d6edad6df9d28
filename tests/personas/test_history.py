"""The field-by-field diff behind the persona history and the import preview (personas.history)."""

from __future__ import annotations

from personas.history import WORD_DIFF_MAX_WORDS, Segment, persona_state, state_changes


def _state(config: object, **fields: object) -> dict[str, str]:
    base = {"name": "hero", "display_name": "Hero", "is_active": True, "config_data": config}
    return persona_state(**{**base, **fields})  # type: ignore[arg-type]


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


def test_a_first_state_is_all_additions_and_a_huge_part_is_shown_whole() -> None:
    assert [c.label for c in state_changes(before=None, after=_state({"voice": "V."}))] == [
        "Key",
        "Display name",
        "Active",
        "Voice",
    ]
    old, new = "a " * (WORD_DIFF_MAX_WORDS + 1), "b " * 3
    (change,) = state_changes(before=_state({"voice": old}), after=_state({"voice": new}))
    assert change.segments == [Segment("del", old), Segment("ins", new)]


def test_a_config_that_is_not_an_object_is_shown_as_raw_json() -> None:
    assert _state(["odd"])["Raw JSON"] == '[\n  "odd"\n]'

"""The screenplay's shape: the page estimate follows the industry layout; characters are counted per speech."""

from __future__ import annotations

from stories.screenplay_stats import screenplay_stats


def _scene(*elements: dict[str, str]) -> dict[str, object]:
    return {"heading": "INT. ROOM - DAY", "elements": list(elements)}


def test_fifty_five_printed_lines_make_one_page() -> None:
    # A heading and its blank line (2), 52 lines of action and the blank line after it (53).
    action = {"type": "action", "text": "\n".join(["He waits."] * 52)}
    assert screenplay_stats({"scenes": [_scene(action)]}).pages == 1.0


def test_dialogue_wraps_at_35_characters_and_action_at_60() -> None:
    long_line = " ".join(["word"] * 14)  # 69 characters: two lines of dialogue, two of action
    speech = {"type": "dialogue", "character": "ANA", "parenthetical": "softly", "text": long_line}
    action = {"type": "action", "text": long_line}
    # 2 (heading) + cue 1 + parenthetical 1 + 2 lines + 1 blank, then 2 lines + 1 blank = 10 lines.
    assert screenplay_stats({"scenes": [_scene(speech, action)]}).pages == round(10 / 55, 1)


def test_each_character_counts_speeches_words_and_scenes_most_words_first() -> None:
    scenes = [
        _scene(
            {"type": "dialogue", "character": "BO", "text": "One two."},
            {"type": "dialogue", "character": "ANA", "text": "One two three."},
            {"type": "dialogue", "character": "BO", "text": "Three."},
        ),
        _scene({"type": "dialogue", "character": "ANA", "text": "Four five."}),
    ]
    stats = screenplay_stats({"scenes": scenes}).as_json()
    assert stats["scenes"] == 2
    assert stats["characters"] == [
        {"name": "ANA", "lines": 2, "words": 5, "scenes": 2},
        {"name": "BO", "lines": 2, "words": 3, "scenes": 1},
    ]


def test_a_stored_version_that_is_not_a_screenplay_has_no_shape() -> None:
    assert screenplay_stats(None).as_json() == {"pages": 0.0, "scenes": 0, "characters": []}


def test_chinese_and_japanese_words_are_counted_without_spaces() -> None:
    # Each speech was one word (no space in it): the Chinese speaker came last whatever they said.
    scenes = [
        _scene(
            {"type": "dialogue", "character": "李", "text": "我不知道你在说什么。"},
            {"type": "dialogue", "character": "葵", "text": "東京へ行きます、Paris も。"},
            {"type": "dialogue", "character": "민준", "text": "나는 학교에 갑니다."},
            {"type": "dialogue", "character": "ANA", "text": "Well — maybe, I don't know."},
        )
    ]
    stats = screenplay_stats({"scenes": scenes})
    assert {c.name: c.words for c in stats.characters} == {"李": 9, "葵": 9, "민준": 3, "ANA": 5}


def test_chinese_and_japanese_take_two_columns_a_character() -> None:
    # textwrap counted one column a character: a Chinese screenplay was half as many pages as it prints.
    speech = {"type": "dialogue", "character": "李", "text": "我" * 1700}  # 17 a line in 35 columns
    # 2 (heading) + cue 1 + 100 lines + 1 blank: 104 lines (it was 2 + 1 + 49 + 1).
    assert screenplay_stats({"scenes": [_scene(speech)]}).pages == round(104 / 55, 1)
    # 120 columns of wide characters fill two lines of action; " Rain falls" is a third.
    action = {"type": "action", "text": "雨。" * 30 + " Rain falls"}
    assert screenplay_stats({"scenes": [_scene(*[action] * 11)]}).pages == round((2 + 11 * 4) / 55, 1)
    # 32 columns, then " Tokyo" does not fit in 35: cue, two lines and a blank for each speech.
    mixed = {"type": "dialogue", "character": "葵", "text": "東京" * 8 + " Tokyo Tokyo"}
    assert screenplay_stats({"scenes": [_scene(*[mixed] * 11)]}).pages == round((2 + 11 * 4) / 55, 1)

"""The parser every JSON boundary uses: each hostile value is an error naming it and where it is."""

from __future__ import annotations

import re

import pytest

from storyproject.untrusted import UntrustedJSONError, json_loads_untrusted, json_value_problem


def test_ordinary_json_is_parsed_unchanged() -> None:
    text = '{"voice": "Gravel \\ud83c\\udfac", "n": -12345678901234567890, "f": 1.5e300, "l": [[true, null]]}'
    assert json_loads_untrusted(text) == {
        "voice": "Gravel \U0001f3ac",
        "n": -12345678901234567890,
        "f": 1.5e300,
        "l": [[True, None]],
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": {"b\\u0000": 1}}', "a/(a key): contains a NUL"),
        ('{"a": ["x", "\\udc00"]}', "a/1: contains an unpaired UTF-16 surrogate"),
        ('{"\\ud800": 1}', "(a key): contains an unpaired UTF-16 surrogate"),
        ("[-Infinity]", "0: holds a number that is not finite"),
        ("-" + "1" * 65, "The JSON holds an integer longer than 64 digits."),
        (b'{"a": "\xed\xa0\x80"}', "a: contains an unpaired UTF-16 surrogate"),
        (b'"\xff"', "not UTF-8 text"),
        # json.loads kept the last of a repeated key without a word.
        (
            '{"voice": "Gravel.", "a": {"description": "One.", "description": "Two."}}',
            'The JSON has the key "description" twice in one object (only the last would be kept): remove one.',
        ),
        ('[{"\\u0000x": 1, "\\u0000x": 2}]', 'The JSON has the key "\\u0000x" twice'),
    ],
)
def test_hostile_json_is_refused_naming_the_problem_and_where(text: str | bytes, message: str) -> None:
    with pytest.raises(UntrustedJSONError, match=re.escape(message)):
        json_loads_untrusted(text)


def test_values_built_in_python_are_checked_the_same_way() -> None:
    assert json_value_problem({"n": 10**64}) == "n: holds an integer longer than 64 digits"
    assert json_value_problem({"n": 10**64 - 1, "ok": True}) is None

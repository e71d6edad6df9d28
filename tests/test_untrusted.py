"""The parser every JSON boundary uses: each hostile value is an error naming it and where it is."""

from __future__ import annotations

import re

import pytest

from storyproject.untrusted import (
    MAX_DEPTH,
    UntrustedJSONError,
    json_loads_untrusted,
    json_parse_untrusted,
    json_value_problem,
)


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


def test_a_nesting_too_deep_to_parse_is_not_said_to_be_past_a_limit_that_is_not_applied() -> None:
    # The API's bodies and the socket's messages are parsed with json_parse_untrusted, which holds no
    # value to MAX_DEPTH: 40 levels are read (and refused field by field), yet 100,000 were answered
    # "nested deeper than 32 levels", a limit a client could not find anywhere else.
    deep: object = []
    for _ in range(39):
        deep = [deep]
    assert json_parse_untrusted('{"x": ' + "[" * 40 + "]" * 40 + "}") == {"x": deep}
    with pytest.raises(UntrustedJSONError, match=r"^The JSON is nested too deeply to be read\.$"):
        json_parse_untrusted("[" * 100_000 + "]" * 100_000)
    # Where MAX_DEPTH is applied (persona configs, a form's JSON), it is named, however deep the JSON.
    for depth in (MAX_DEPTH + 1, 100_000):
        with pytest.raises(
            UntrustedJSONError, match=rf"^The JSON is nested deeper than {MAX_DEPTH} levels\.$"
        ):
            json_loads_untrusted("[" * depth + "1" + "]" * depth)

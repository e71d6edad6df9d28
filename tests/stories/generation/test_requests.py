from __future__ import annotations

from typing import Any

import pytest

from stories.errors import GenerationError
from stories.generation.requests import GenerationRequest, generation_request_parse


def _parse(**fields: Any) -> GenerationRequest:
    return generation_request_parse({"plot": "A plot.", "personas": ["hero"], **fields})


def test_a_valid_request_is_parsed_trimmed_and_deduplicated(settings: Any) -> None:
    settings.STORY_MODELS = ["claude-sonnet-5-5"]
    request = _parse(
        plot="  A plot.  ",
        personas=["hero", "villain", "hero"],
        title=" T ",
        max_tokens=1000,
        model="claude-sonnet-5-5",
        story_id=3,
    )
    assert request == GenerationRequest(
        plot="A plot.",
        personas=["hero", "villain"],
        title="T",
        story_id=3,
        model="claude-sonnet-5-5",
        max_tokens=1000,
    )


def test_the_offline_model_is_always_allowed(settings: Any) -> None:
    settings.STORY_MODELS = ["claude-sonnet-5-5"]
    assert _parse(model="offline").model == "offline"


@pytest.mark.parametrize(
    "fields,fragment",
    [
        ({"plot": None}, "plot is required"),
        ({"plot": "   "}, "plot must not be empty"),
        ({"plot": 42}, "plot must be a string"),
        ({"plot": "x" * 20_001}, "plot is longer than 20000"),
        ({"title": "t" * 201}, "title is longer than 200"),
        ({"personas": [f"p{n}" for n in range(13)]}, "at most 12 personas"),
        ({"personas": ["has space"]}, "persona name"),
        ({"personas": ["hero\n"]}, "persona name"),
        ({"personas": [7]}, "persona name"),
        ({"personas": ["p" * 101]}, "1 to 100 letters"),  # was refused without naming the limit
        ({"max_tokens": 255}, "between 256 and 16000"),
        ({"max_tokens": 16_001}, "between 256 and 16000"),
        ({"max_tokens": 10**30}, "between 256 and 16000"),
        ({"max_tokens": 1000.0}, "max_tokens must be an integer"),
        ({"max_tokens": "1000"}, "max_tokens must be an integer"),
        ({"story_id": False}, "story_id must be an integer"),
        ({"story_id": 0}, "story_id must be between"),
        ({"model": ["x"]}, "model must be one of"),
        ({"mode": "batch"}, "mode must be"),
        ({"extra": 1}, "unknown fields: 'extra'"),
        ({"plot": "a\udcffb"}, "not valid Unicode"),
    ],
)
def test_invalid_fields_are_named(settings: Any, fields: dict[str, Any], fragment: str) -> None:
    settings.STORY_MODELS = []
    with pytest.raises(GenerationError) as raised:
        _parse(**fields)
    assert raised.value.code == "invalid_request"
    assert fragment in raised.value.message


def test_unknown_fields_are_named_a_few_and_short_with_their_count() -> None:
    # Every unknown key was echoed, each up to 40 characters: 1,000 of them made a 40 KB answer.
    fields = {f"field-{number:04}-{'x' * 200}": 0 for number in range(1000)}
    with pytest.raises(GenerationError) as raised:
        _parse(**fields, zz="\u202e\ud800")
    message = raised.value.message
    cut = "'field-0000-" + "x" * 29 + "…' (211 characters)"
    assert message.startswith(f"unknown fields: {cut}, 'field-0001-")
    assert message.endswith(" and 996 more (1001 in all)")
    assert message.count("'field-") == 5 and "zz" not in message
    assert len(message) < 500


def test_unknown_fields_are_quoted_escaped() -> None:
    # A key's lone surrogate, bidi override and newline are escaped: the answer can be sent and shown.
    with pytest.raises(GenerationError) as raised:
        _parse(**{"a,\nb": 1, "\u202e": 2, "\ud800": 3})
    assert raised.value.message == "unknown fields: 'a,\\nb', '\\u202e', '\\ud800'"


@pytest.mark.parametrize("data", [None, [], "plot", 3])
def test_a_request_must_be_an_object(data: Any) -> None:
    with pytest.raises(GenerationError):
        generation_request_parse(data)


@pytest.mark.parametrize(
    "title",
    ["Night\nFall", "Night\r\nFall", "Night\tFall", "Night\x1b[2JFall", "Night\u2028Fall", "Night\x85Fall"],
)
def test_a_title_is_one_line_on_the_socket_and_the_rest_api(title: str) -> None:
    # The page's title field cannot hold a line break; a generate message (WebSocket or REST) could.
    with pytest.raises(GenerationError) as error:
        generation_request_parse({"plot": "Fog.", "personas": ["noir-detective"], "title": title})
    assert error.value.code == "invalid_request"
    assert error.value.message.startswith("title contains a line break or another control character (U+")
    assert "Night" not in error.value.message


def test_a_title_with_nothing_visible_is_refused_on_the_socket_and_the_rest_api() -> None:
    with pytest.raises(GenerationError) as error:
        generation_request_parse({"plot": "Fog.", "personas": ["noir-detective"], "title": "\u200f\u200b"})
    assert error.value.code == "invalid_request"
    assert error.value.message == "title has no visible character; a title is something to read"


@pytest.mark.parametrize(
    ("plot", "code_point"),
    [("Fog\x1b[2J.", "U+001B"), ("Bell\x07", "U+0007"), ("Del\x7f", "U+007F"), ("C1\x9b", "U+009B")],
)
def test_a_plot_with_a_control_character_is_refused_naming_the_field_and_code_point(
    plot: str, code_point: str
) -> None:
    # Only titles were checked: a plot with an escape sequence went into the prompt and onto the pages.
    with pytest.raises(GenerationError) as error:
        generation_request_parse({"plot": plot, "personas": ["noir-detective"]})
    assert error.value.code == "invalid_request"
    assert error.value.message == (
        f"plot contains a control character ({code_point}); only tabs and line breaks may be in it"
    )


# Python's str.strip() takes these control characters for white space: around a plot or a title they
# were cut off without a word and the request taken, where anywhere else in the text they are refused
# (and the REST API's story plot refused them at its edges too).
EDGE_CONTROLS = [
    ("\x1f", "U+001F"),
    ("\x1c", "U+001C"),
    ("\x85", "U+0085"),
    ("\x0b", "U+000B"),
    ("\x0c", "U+000C"),
]


@pytest.mark.parametrize(("control", "code_point"), EDGE_CONTROLS)
@pytest.mark.parametrize("where", ["before", "after"])
def test_a_control_character_around_a_plot_title_or_instructions_is_refused_not_trimmed(
    control: str, code_point: str, where: str
) -> None:
    from stories.generation.regenerate import scene_regenerate_request_parse

    def edged(text: str) -> str:
        return control + text if where == "before" else text + control

    with pytest.raises(GenerationError) as plot:
        generation_request_parse({"plot": edged("Fog."), "personas": ["noir-detective"]})
    assert plot.value.message == (
        f"plot contains a control character ({code_point}); only tabs and line breaks may be in it"
    )
    with pytest.raises(GenerationError) as title:
        generation_request_parse({"plot": "Fog.", "personas": ["noir-detective"], "title": edged("Night")})
    assert title.value.message.startswith(
        f"title contains a line break or another control character ({code_point})"
    )
    with pytest.raises(GenerationError) as instructions:
        scene_regenerate_request_parse(
            {"story_id": 1, "version": 1, "index": 0, "instructions": edged("Rain.")}
        )
    assert instructions.value.message.startswith(f"instructions contain a control character ({code_point})")


def test_white_space_around_a_plot_is_still_trimmed() -> None:
    parsed = generation_request_parse(
        {"plot": " \t\r\n\u00a0\u2003Fog.\u3000\u2028 ", "personas": ["a"], "title": "\u2029 Night\u00a0"}
    )
    assert (parsed.plot, parsed.title) == ("Fog.", "Night")


def test_a_plot_keeps_its_tabs_and_line_breaks() -> None:
    parsed = generation_request_parse({"plot": "Act one:\tfog.\r\nAct two: rain.", "personas": ["a"]})
    assert parsed.plot == "Act one:\tfog.\r\nAct two: rain."


def test_a_title_s_surrounding_whitespace_is_trimmed_as_before() -> None:
    parsed = generation_request_parse({"plot": "Fog.", "personas": ["noir-detective"], "title": "  Fall \n"})
    assert parsed.title == "Fall"


def test_null_in_an_optional_field_means_it_was_not_given(settings: Any) -> None:
    # `"title": null` was refused ("title must be a string") while story_id, model, max_tokens and mode
    # took null as "not given", on the socket and the API alike.
    nulls = {"title": None, "story_id": None, "model": None, "max_tokens": None, "mode": None}
    assert _parse(**nulls) == _parse()
    assert _parse(**nulls).title == ""


def test_a_persona_named_more_than_the_limit_times_is_one_persona(settings: Any) -> None:
    # 13 copies of one persona were refused "at most 12 personas may take part", though duplicates are
    # dropped (two copies were one persona).
    settings.STORY_MAX_PERSONAS = 12
    assert _parse(personas=["hero"] * 13).personas == ["hero"]
    assert _parse(personas=[f"p{n % 12}" for n in range(100)]).personas == [f"p{n}" for n in range(12)]
    with pytest.raises(GenerationError, match="at most 12 personas"):
        _parse(personas=[*(["hero"] * 5), *(f"p{n}" for n in range(12))])


def test_whitespace_around_a_title_or_plot_does_not_count_against_its_limit(settings: Any) -> None:
    # It is dropped, but counted first: a 200-character title with a trailing newline was refused
    # "title is longer than 200 characters" (the API's story update trims before counting).
    request = _parse(title="t" * 200 + "\n", plot="  " + "p" * 20_000 + "  ")
    assert request.title == "t" * 200 and request.plot == "p" * 20_000

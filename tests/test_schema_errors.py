"""jsonschema's messages as people read them: sizes and limits, no long value quoted back."""

from __future__ import annotations

import jsonschema
import pytest

from stories.errors import GenerationError
from stories.generation.prompt import screenplay_schema
from stories.generation.validation import schema_check
from storyproject.schema_errors import schema_error_message

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 10},
        "tags": {"type": "array", "maxItems": 2},
        "kind": {"enum": ["action", "dialogue"]},
        "count": {"type": "integer"},
    },
}


def _message(document: object) -> str:
    error = next(jsonschema.Draft202012Validator(SCHEMA).iter_errors(document))
    return schema_error_message(error)


@pytest.mark.parametrize(
    ("document", "said"),
    [
        ({"title": "x" * 5_000}, "is 5000 characters long; the limit is 10"),
        ({"tags": [1, 2, 3]}, "holds 3 items; the limit is 2"),
        ({"kind": "y" * 500}, 'a text of 500 characters is not one of ["action", "dialogue"]'),
        ({"count": "z" * 500}, "a string is not of type 'integer'"),
        # Said in JSON, as the document was written: Python's repr said 'short', None, True.
        ({"kind": "short"}, '"short" is not one of ["action", "dialogue"]'),
        ({"count": None}, "null is not of type 'integer'"),
        ({"count": True}, "true is not of type 'integer'"),
        ({"count": {"a": 2}}, "{\"a\": 2} is not of type 'integer'"),
    ],
)
def test_a_long_value_is_described_and_a_bound_named(document: object, said: str) -> None:
    assert _message(document) == said


def test_a_model_reply_over_a_limit_says_the_limit_within_the_message_bound() -> None:
    # Was: "the model wrote an invalid screenplay at title: 'TTTT...", cut at 300 characters before
    # the reason.
    document = {"title": "T" * 200_000, "characters": [], "scenes": []}
    with pytest.raises(GenerationError) as raised:
        schema_check(document=document, schema=screenplay_schema, what="screenplay")
    assert raised.value.code == "invalid_output"
    assert "title: is 200000 characters long; the limit is 200" in raised.value.message
    assert len(raised.value.message) < 400

"""The contract check's fast path decides as jsonschema does.

``stories.generation.validation.schema_check`` takes jsonschema-rs's "valid" and asks jsonschema for
everything else. So a document jsonschema refuses must never pass: hypothesis writes screenplays near
every limit of the contract (empty and over-long strings, astral characters, which count one each,
numbers where text goes, 1.0 where an integer would go, unknown keys, missing keys, dialogue without a
character, an action with one, lone surrogates, integers past 64 bits) and checks the check's verdict,
and its message, against jsonschema's own.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from stories.errors import GenerationError
from stories.generation.prompt import screenplay_schema
from stories.generation.validation import _valid_fast, schema_check


def _text(limit: int) -> st.SearchStrategy[str]:
    """Strings at and around ``limit`` characters, some astral (one character, two UTF-16 units)."""
    sizes = st.sampled_from([0, 1, limit - 1, limit, limit + 1])
    return st.one_of(
        sizes.map(lambda n: "a" * n),
        sizes.map(lambda n: "🎬" * n),
        st.text(max_size=5),
        st.just("\ud800"),
    )


# What may stand where a value goes: the right kind, or one of the wrong ones.
_wrong = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.just(1.0),
    st.floats(allow_nan=False, allow_infinity=False),
    st.just([]),
    st.just({}),
)


def _field(limit: int) -> st.SearchStrategy[Any]:
    return st.one_of(_text(limit), _text(limit), _wrong)


def _object(required: dict[str, Any], optional: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    extra = st.dictionaries(st.sampled_from(["extra", "Title", "type"]), _wrong, max_size=1)
    return st.builds(
        lambda base, more, drop: {k: v for k, v in {**base, **more}.items() if k not in drop},
        st.fixed_dictionaries(required, optional=optional),
        extra,
        st.sets(st.sampled_from(list(required)), max_size=1),
    )


_element = st.one_of(
    _object(
        {"type": st.sampled_from(["action", "transition", "dialogue", "scene"]), "text": _field(5000)}, {}
    ),
    _object(
        {"type": st.sampled_from(["dialogue", "action"]), "character": _field(80), "text": _field(5000)},
        {"parenthetical": _field(200)},
    ),
    _wrong,
)
_scene = st.one_of(
    _object({"heading": _field(200), "elements": st.lists(_element, max_size=3)}, {"summary": _field(1000)}),
    _wrong,
)
_character = _object(
    {"name": _field(80)}, {"persona": st.one_of(st.none(), _field(100)), "description": _field(1000)}
)
_screenplay = st.one_of(
    _object(
        {"title": _field(200), "scenes": st.one_of(st.lists(_scene, max_size=3), _wrong)},
        {"logline": _field(1000), "characters": st.one_of(st.lists(_character, max_size=2), _wrong)},
    ),
    _wrong,
)


def _problem(document: Any) -> str | None:
    try:
        schema_check(document=document, schema=screenplay_schema, what="screenplay")
    except GenerationError as error:
        return str(error)
    return None


@given(document=_screenplay)
@hypothesis_settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_fast_check_passes_only_what_jsonschema_passes(document: Any) -> None:
    reference = Draft202012Validator(screenplay_schema())
    if _valid_fast(document, screenplay_schema):
        assert reference.is_valid(document), document
    error = next(iter(reference.iter_errors(document)), None)
    problem = _problem(document)
    if error is not None:
        # Refused, with jsonschema's first error named, exactly as before the fast path.
        assert problem is not None and "an invalid screenplay at" in problem
    elif problem is not None:
        # Valid against the schema: refused only as something the database cannot store.
        assert "an invalid screenplay:" in problem


@pytest.mark.parametrize(
    ("document", "where"),
    [
        (
            {"title": "T", "scenes": [{"heading": "H", "elements": [{"type": "dialogue", "text": "x"}]}]},
            "scenes/0/elements/0",
        ),
        ({"title": "🎬" * 201, "scenes": [{"heading": "H", "elements": []}]}, "title"),
        ({"title": "T", "scenes": [{"heading": "H", "elements": []}], "logline": 10**30}, "logline"),
    ],
)
def test_a_refused_screenplay_names_where_as_jsonschema_does(document: dict[str, Any], where: str) -> None:
    assert not _valid_fast(document, screenplay_schema)
    problem = _problem(document)
    assert problem is not None and f"an invalid screenplay at {where}:" in problem


def test_a_valid_screenplay_takes_the_fast_path() -> None:
    document = {
        "title": "🎬" * 200,
        "characters": [{"name": "ADA", "persona": None}],
        "scenes": [
            {
                "heading": "INT. ROOM - DAY",
                "elements": [
                    {"type": "action", "text": "Rain."},
                    {"type": "dialogue", "character": "ADA", "parenthetical": "quietly", "text": "Go."},
                ],
            }
        ],
    }
    assert _valid_fast(document, screenplay_schema)
    assert _problem(document) is None

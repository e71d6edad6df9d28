"""hypothesis drives the validation every WebSocket (and API) generation request goes through."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from stories.errors import GenerationError
from stories.generation.requests import GenerationRequest, allowed_models, generation_request_parse
from stories.validation import text_problem

# Text that includes what a hostile client sends: NUL, lone surrogates, control and format characters.
hostile_text = st.text(st.characters(exclude_categories=()), max_size=40) | st.sampled_from(
    ["", " ", "noir-detective", "noir-detective\n", "a\x00b", "\ud800", "x" * 30_000, "‮rtl", "ok_name-2"]
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | hostile_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=4),
    max_leaves=12,
)
FIELDS = ["plot", "personas", "title", "story_id", "model", "max_tokens", "mode"]
requests = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from([*FIELDS, "type", "extra"]), json_values, max_size=8),
    st.fixed_dictionaries(
        {"plot": hostile_text, "personas": st.lists(hostile_text, max_size=15)},
        optional={
            "title": hostile_text,
            "story_id": json_scalars,
            "model": st.sampled_from(["offline", "gpt-4", "", None]) | hostile_text,
            "max_tokens": json_scalars,
            "mode": st.sampled_from(["single", "parallel", "batch"]) | json_scalars,
        },
    ),
)


def _assert_bounded(request: GenerationRequest) -> None:
    assert request.plot and len(request.plot) <= settings.STORY_MAX_PLOT_CHARS
    assert len(request.title) <= settings.STORY_MAX_TITLE_CHARS
    assert text_problem(request.plot) is None and text_problem(request.title) is None
    assert 1 <= len(request.personas) <= settings.STORY_MAX_PERSONAS
    assert len(set(request.personas)) == len(request.personas)
    assert all(re.fullmatch(r"[-a-zA-Z0-9_]{1,100}", name) for name in request.personas)
    assert request.story_id is None or 1 <= request.story_id < 2**63
    assert request.max_tokens is None or (
        settings.STORY_MIN_MAX_TOKENS <= request.max_tokens <= settings.STORY_MAX_MAX_TOKENS
    )
    assert request.model is None or request.model in allowed_models()
    assert request.mode == "single"


@hypothesis_settings(
    max_examples=400, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck)
)
@given(data=requests)
def test_any_request_is_either_bounded_or_an_invalid_request_error(data: Any) -> None:
    try:
        request = generation_request_parse(data)
    except GenerationError as error:
        assert error.code == "invalid_request"
        assert error.retryable is False
        # The message goes out in a WebSocket text frame: it must always be encodable and short.
        error.message.encode("utf-8")
        assert len(error.message) <= 300
        return
    _assert_bounded(request)

"""Parsing and bounding a generation request, whichever interface it came from."""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from stories.errors import GenerationError
from stories.generation.models_registry import max_tokens_limit, model_refusal
from stories.models import GenerationRun
from stories.validation import text_field_problem, text_trimmed, title_problem
from storyproject.untrusted import text_quoted

_FIELDS = frozenset({"plot", "personas", "title", "story_id", "model", "max_tokens", "mode"})
_PERSONA_NAME = re.compile(r"[-a-zA-Z0-9_]{1,100}")
_MAX_ID = 2**63 - 1
# How many unknown fields a refusal names, and how much of each (fields_known_check).
_UNKNOWN_NAMED = 5
_UNKNOWN_NAME_CHARS = 40


@dataclass(frozen=True)
class SceneRewrite:
    """Where a scene rewrite's result goes: ``index`` of ``version`` replaced, on a story whose latest
    version was ``latest`` when the rewrite started (stories.services.screenplay_version_create)."""

    version: int
    index: int
    latest: int


@dataclass(frozen=True)
class GenerationRequest:
    plot: str
    personas: list[str] = field(default_factory=list)
    title: str = ""
    story_id: int | None = None
    model: str | None = None
    max_tokens: int | None = None
    mode: str = GenerationRun.Mode.SINGLE
    # False: write and record the run, save no story (generate_screenplay --no-save). Never read from
    # untrusted input: generation_request_parse leaves it True.
    save: bool = True
    # A scene rewrite (stories.generation.regenerate): set by the server, never read from input.
    rewrite: SceneRewrite | None = None


def generation_request_parse(data: object) -> GenerationRequest:
    """Validate an untrusted JSON object; raise GenerationError("invalid_request") naming the bad field."""
    if not isinstance(data, dict):
        raise _invalid("the request must be a JSON object")
    fields_known_check(data, _FIELDS)
    request = GenerationRequest(
        plot=_plot(data.get("plot")),
        personas=_personas(data.get("personas")),
        title=_title(data.get("title")),
        story_id=_optional_int(data.get("story_id"), "story_id", 1, _MAX_ID),
        model=model_parse(data.get("model")),
        max_tokens=_optional_int(
            data.get("max_tokens"), "max_tokens", settings.STORY_MIN_MAX_TOKENS, settings.STORY_MAX_MAX_TOKENS
        ),
        mode=_mode(data.get("mode")),
    )
    if request.model is not None and request.max_tokens is not None:
        # The default model is known at admission only (the editors' settings): checked there too.
        max_tokens_within_model_check(request.max_tokens, request.model)
    return request


def max_tokens_within_model_check(max_tokens: int, model: str) -> None:
    """Refuse a writer's own ``max_tokens`` above what ``model`` can write: its max output less the
    tokens set aside for thinking. It was cut to that on every call without a word, and the writer's
    long screenplay ended early or cost a continuation they did not expect."""
    limit = max_tokens_limit(model, budget_tokens=settings.STORY_THINKING_BUDGET_TOKENS)
    if limit is not None and max_tokens > limit:
        raise _invalid(
            f"max_tokens must be at most {limit} for {model_label(model)}: its max output, less the tokens "
            "set aside for thinking"
        )


def fields_known_check(data: dict[Any, Any], allowed: Collection[str]) -> None:
    """Refuse a request with fields outside ``allowed``, naming the first few (every message of the
    protocol, and the API bodies parsed here).

    Only ``_UNKNOWN_NAMED`` of them, each quoted at most ``_UNKNOWN_NAME_CHARS`` long, and how many more:
    a message of 1,000 long unknown keys was answered with every one of them (about 40 KB an answer,
    for a client to flood a connection with). ``text_quoted`` escapes lone surrogates and control
    characters, so the answer stays sendable.
    """
    unknown = [str(key) for key in data if key not in allowed]
    if not unknown:
        return
    named = ", ".join(
        text_quoted(key, limit=_UNKNOWN_NAME_CHARS) for key in heapq.nsmallest(_UNKNOWN_NAMED, unknown)
    )
    more = len(unknown) - _UNKNOWN_NAMED
    raise _invalid(
        f"unknown fields: {named}" + (f" and {more} more ({len(unknown)} in all)" if more > 0 else "")
    )


def model_label(model: str) -> str:
    """A model as people see it: the built-in offline model is never passed off as an AI."""
    return "offline model" if model == settings.OFFLINE_MODEL else model


def allowed_models() -> list[str]:
    """The models a writer may pick: the configured ones the registry still allows, and always the
    offline model. Start-up refuses a configured model the registry does not allow; one that reaches
    its retirement while the process runs drops out here."""
    usable = [model for model in settings.STORY_MODELS if model_refusal(model) is None]
    return [*dict.fromkeys([*usable, settings.OFFLINE_MODEL])]


def _invalid(message: str) -> GenerationError:
    return GenerationError("invalid_request", message)


def _text(
    value: Any, name: str, limit: int, problem_of: Callable[[str], str | None] = text_field_problem
) -> str:
    if not isinstance(value, str):
        raise _invalid(f"{name} must be a string")
    # Counted as kept: whitespace around it is dropped (as the API's serializers trim before counting).
    # The text itself is bounded by the message or body size.
    text = text_trimmed(value)
    if len(text) > limit:
        raise _invalid(f"{name} is longer than {limit} characters")
    problem = problem_of(text)
    if problem is not None:
        # NUL cannot be stored, a lone surrogate (e.g. "\ud800" in the JSON) cannot be sent on, and no
        # writer types another control character (stories.validation).
        raise _invalid(f"{name} {problem}")
    return text


def optional_text(
    value: Any, name: str, limit: int, problem_of: Callable[[str], str | None] = text_field_problem
) -> str:
    """An optional text field: absent or null is "" (as every optional field takes null as not given)."""
    return "" if value is None else _text(value, name, limit, problem_of)


def _title(value: Any) -> str:
    # One line, as every title (stories.validation): no control character at all.
    return optional_text(value, "title", settings.STORY_MAX_TITLE_CHARS, title_problem)


def _plot(value: Any) -> str:
    if value is None:
        raise _invalid("plot is required")
    plot = _text(value, "plot", settings.STORY_MAX_PLOT_CHARS)
    if not plot:
        raise _invalid("plot must not be empty")
    return plot


def _personas(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise _invalid("personas must be a list of persona names")
    for item in value:
        if not isinstance(item, str) or not _PERSONA_NAME.fullmatch(item):
            raise _invalid("each persona must be a persona name (1 to 100 letters, digits, '-' and '_')")
    # Duplicates are dropped before counting: a persona named twice takes part once, so thirteen copies
    # of one are one persona, not "more than 12". The list itself is bounded by the message or body size.
    names = list(dict.fromkeys(value))
    if not names:
        raise _invalid("choose at least one persona")
    limit = settings.STORY_MAX_PERSONAS
    if len(names) > limit:
        raise _invalid(f"at most {limit} personas may take part")
    return names


def int_parse(value: Any, name: str, minimum: int, maximum: int) -> int:
    """An integer field of an untrusted request, within [minimum, maximum]."""
    # bool is an int in Python; JSON true is not a number.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"{name} must be an integer")
    if not minimum <= value <= maximum:
        raise _invalid(f"{name} must be between {minimum} and {maximum}")
    return value


def _optional_int(value: Any, name: str, minimum: int, maximum: int) -> int | None:
    return None if value is None else int_parse(value, name, minimum, maximum)


def model_parse(value: Any) -> str | None:
    """The ``model`` field of an untrusted request: one of allowed_models(), or None for the default."""
    if value is None or value == "":
        return None
    allowed = allowed_models()
    if not isinstance(value, str) or value not in allowed:
        raise _invalid(f"model must be one of: {', '.join(allowed)}")
    return value


def _mode(value: Any) -> str:
    if value is None or value == "":
        return str(settings.STORY_DEFAULT_MODE)
    if value not in GenerationRun.Mode.values:
        raise _invalid(f"mode must be one of {', '.join(map(repr, GenerationRun.Mode.values))}")
    return str(value)

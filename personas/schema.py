"""The persona config JSON schema: what editors may put in ``PersonaConfig.config_data``.

Documented in docs/personas.md ("Persona configs"). The shape is nested and open: known fields are typed
and bounded, and ``extensions`` carries anything else (for example Character Card extensions) so that
an import followed by an export loses nothing. Older flat shapes (``system_prompt`` at the top, a
nested ``context`` object) are accepted so imported configs keep working.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from django.conf import settings
from django.core.exceptions import ValidationError

from storyproject.untrusted import json_value_problem

_TEXT = {"type": "string", "maxLength": 20_000}
_SHORT = {"type": "string", "maxLength": 500}

PERSONA_CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Persona config",
    "type": "object",
    "properties": {
        "description": _TEXT,
        "summary": _SHORT,
        "personality": _TEXT,
        "voice": _TEXT,
        "backstory": _TEXT,
        "system_prompt": _TEXT,
        "scenario": _TEXT,
        "example_lines": {"type": "array", "items": _TEXT, "maxItems": 50},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 60}, "maxItems": 50},
        "context": {
            "type": "object",
            "description": "Older shape: the context fields nested under one key.",
            "additionalProperties": True,
        },
        "private": {
            "type": "object",
            "description": "Kept with the persona but never put in a prompt (creator, notes, version).",
            "additionalProperties": True,
        },
        "extensions": {"type": "object", "additionalProperties": True},
    },
    "additionalProperties": True,
}

_VALIDATOR = jsonschema.Draft202012Validator(PERSONA_CONFIG_SCHEMA)


def persona_config_errors(config: object) -> list[str]:
    """Every problem with ``config``, as sentences an editor can act on; empty when valid."""
    if not isinstance(config, dict):
        return [f"The config must be a JSON object ({{...}}), not {_kind(config)}."]
    # Before the size: json.dumps itself fails on some of what this refuses (huge integers).
    problem = json_value_problem(config)
    if problem is not None:
        return [problem]
    size = len(json.dumps(config, ensure_ascii=False).encode())
    limit = settings.PERSONA_CONFIG_MAX_BYTES
    if size > limit:
        return [f"The config is {size} bytes; the limit is {limit} bytes."]
    errors = []
    for error in sorted(_VALIDATOR.iter_errors(config), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        errors.append(f"{where}: {_error_message(error)}")
    return errors


# jsonschema's own messages quote the whole value and not the limit ("'<20,000 characters>' is too
# long"): a text or list over its bound is said by its size and the bound, a long value is not quoted.
_QUOTED_MAX_CHARS = 60
# bool before int: True is an int too.
_KINDS = (
    (str, "a string"),
    (bool, "a boolean"),
    (int, "a number"),
    (float, "a number"),
    (list, "a list"),
    (dict, "an object"),
)


def _error_message(error: jsonschema.ValidationError) -> str:
    instance, bound = error.instance, error.validator_value
    if error.validator == "maxLength":
        return f"is {len(instance)} characters long; the limit is {bound}"
    if error.validator == "maxItems":
        return f"holds {len(instance)} items; the limit is {bound}"
    if error.validator == "type" and len(repr(instance)) > _QUOTED_MAX_CHARS:
        return f"{_kind(instance)} is not of type {bound!r}"
    return str(error.message)


def _kind(value: object) -> str:
    """A JSON value's kind in words; by isinstance, as the admin's JSON field gives a str subclass
    (``JSONString``), whose class name the message showed ("not JSONString")."""
    return next((kind for cls, kind in _KINDS if isinstance(value, cls)), "null")


def validate_persona_config(config: object) -> None:
    """Raise a ``ValidationError`` naming every problem; used by the model field and the importers."""
    errors = persona_config_errors(config)
    if errors:
        raise ValidationError(errors)

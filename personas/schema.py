"""The persona config JSON schema: what editors may put in ``PersonaConfig.config_data``.

Documented in docs/personas.md ("Persona configs"). The shape is nested and open: known fields are typed
and bounded, and ``extensions`` carries anything else (for example Character Card extensions) so that
an import followed by an export loses nothing. Older flat shapes (``system_prompt`` at the top, a
nested ``context`` object) are accepted so imported configs keep working.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

import jsonschema
from django.conf import settings
from django.core.exceptions import ValidationError

from storyproject.bidi import bidi_isolated
from storyproject.schema_errors import json_kind, schema_error_message
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
        return [f"The config must be a JSON object ({{...}}), not {json_kind(config)}."]
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
        errors.append(f"{where}: {schema_error_message(error)}")
    return errors


def validate_persona_config(config: object) -> None:
    """Raise a ``ValidationError`` naming every problem; used by the model field and the importers."""
    errors = persona_config_errors(config)
    if errors:
        raise ValidationError(errors)


# A key quoted in a warning: an editor's typo is short; a long one is cut rather than echoed whole.
_KEY_QUOTED_MAX_CHARS = 60
# Keys named one by one, each a message of its own; the rest are counted in one more (a config of
# thousands of unknown keys made as many messages, stored in the editor's session).
_KEYS_NAMED_MAX = 5


def persona_config_unused_keys(config: object) -> list[str]:
    """A sentence for each top-level key of ``config`` that the schema does not name, which is kept
    but never reaches the model, naming the known key it looks like a typo of.

    The schema is open (an import keeps what it does not know), so a typo in the admin's raw JSON
    ("descripton") was saved without a word, and the persona's description was gone for the model.
    """
    if not isinstance(config, dict):
        return []
    known = list(PERSONA_CONFIG_SCHEMA["properties"])
    unknown = [key for key in config if key not in known]
    sentences = []
    for key in unknown[:_KEYS_NAMED_MAX]:
        shown = bidi_isolated(key[:_KEY_QUOTED_MAX_CHARS])
        close = difflib.get_close_matches(key.lower(), known, n=1)
        hint = f'did you mean "{close[0]}"?' if close else 'keep such data under "private" or "extensions"'
        sentences.append(
            f'The config\'s key "{shown}" is not one the persona uses: the model never gets it ({hint}).'
        )
    if len(unknown) > _KEYS_NAMED_MAX:
        sentences.append(f"{len(unknown) - _KEYS_NAMED_MAX} more of its keys are not ones the persona uses.")
    return sentences

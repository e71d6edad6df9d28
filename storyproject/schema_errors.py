"""jsonschema's error messages, said for people: sizes and limits, never a long value quoted back.

jsonschema's own messages quote the whole value and not the bound ("'<20,000 characters>' is too
long"): an editor importing a card, or a writer whose model wrote a 200 kB action, got the value back
and no reason once the message was cut to fit. A text or list over its bound is said by its size and
the bound; any other message that starts with a long value has that value described instead.
"""

from __future__ import annotations

import json

import jsonschema

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


def schema_error_cause(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """For a value that matches none of a oneOf's (or anyOf's) branches, the first error inside the one
    branch it meant: the only branch whose ``const``, ``enum`` or ``type`` it meets.

    jsonschema reports the oneOf itself ("... is not valid under any of the given schemas"): an action
    100,000 characters long and a dialogue without its character were both said that way, never which
    field broke which bound. Where no branch or several are meant, the oneOf's own error stays.
    """
    while error.validator in ("oneOf", "anyOf") and error.context:
        branches: dict[object, list[jsonschema.ValidationError]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        meant = [errors for errors in branches.values() if not any(map(_tells_branches_apart, errors))]
        if len(meant) != 1:
            break
        error = meant[0][0]
    return error


def _tells_branches_apart(error: jsonschema.ValidationError) -> bool:
    """A branch's error that says the value is not of that branch's kind: not its type, or not the
    ``const`` or ``enum`` of one of its own keys (an element's "type")."""
    if error.validator == "type":
        return not error.relative_path
    return error.validator in ("const", "enum") and len(error.relative_path) <= 1


def schema_error_message(error: jsonschema.ValidationError) -> str:
    """What ``error`` says, without quoting a long value, naming the bound where there is one."""
    instance, bound = error.instance, error.validator_value
    if error.validator == "maxLength":
        return f"is {len(instance)} characters long; the limit is {bound}"
    if error.validator == "maxItems":
        return f"holds {len(instance)} items; the limit is {bound}"
    # jsonschema starts its messages with the value as Python writes it ("None", "True", "{'a': 2}"):
    # an editor who typed null in the admin's JSON was told of a None. Said in JSON, as it was written.
    quoted = repr(instance)
    if not error.message.startswith(quoted):
        return str(error.message)
    said = error.message[len(quoted) :]
    if error.validator == "enum":
        said = f" is not one of {_json_written(bound)}"
    written = _json_written(instance)
    if len(written) <= _QUOTED_MAX_CHARS:
        return f"{written}{said}"
    if error.validator == "type":
        return f"{json_kind(instance)} is not of type {bound!r}"
    return f"{_described(instance)}{said}"


def _json_written(value: object) -> str:
    """``value`` as JSON text; its Python form for what JSON cannot write (nothing parsed from JSON)."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def json_kind(value: object) -> str:
    """A JSON value's kind in words; by isinstance, as the admin's JSON field gives a str subclass
    (``JSONString``), whose class name a message showed ("not JSONString")."""
    return next((kind for cls, kind in _KINDS if isinstance(value, cls)), "null")


def _described(value: object) -> str:
    if isinstance(value, str):
        return f"a text of {len(value)} characters"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    return json_kind(value)

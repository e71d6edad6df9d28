"""A JSON parser that refuses oversized bodies before reading them whole, and bodies that are not objects.

DRF's JSONParser reads the request stream to the end whatever its size; and DRF hands any JSONParser
``request.body`` rather than the stream, which Django refuses past DATA_UPLOAD_MAX_MEMORY_SIZE with a
400 ("The request could not be understood."), its limit for forms, not this one's. This parser is
not a JSONParser, so DRF gives it the stream: it reads at most ``API_MAX_BODY_BYTES`` plus one byte and
answers 413 past it, whether or not the client sent a Content-Length, whatever the form limit is.

Every JSON body this API takes is an object. A view reading fields from ``request.data`` with
``.get`` treated a list body as an empty object (the scene rewrite answered 201 to ``[1, 2]``), so
the parser refuses any other top-level value with a 400, once for every endpoint.

``form_fields_once`` takes the same care of a form's field given twice, which DRF settles by keeping the
last. Only a serializer knows the fields an endpoint reads, so serializers call it
(``stories.serializers.WriteSerializer``, which also refuses a field the endpoint does not read).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.utils.datastructures import MultiValueDict
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError, ValidationError
from rest_framework.parsers import BaseParser, JSONParser

from storyproject.untrusted import UntrustedJSONError, json_parse_untrusted, text_quoted


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"


class BoundedJSONParser(BaseParser):
    # JSONParser's, for content negotiation and the schema; not a subclass (see the module docstring).
    media_type = JSONParser.media_type
    renderer_class = JSONParser.renderer_class

    def parse(
        self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        limit = settings.API_MAX_BODY_BYTES
        body = stream.read(limit + 1) if stream is not None else b""
        if len(body) > limit:
            raise RequestTooLarge(f"The request body is larger than {limit} bytes.")
        if not body:
            raise ParseError("The request body is empty; send a JSON object.")
        data = _body_parse(body, (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET))
        if not isinstance(data, dict):
            raise ParseError(f"The request body must be a JSON object ({{...}}), not {_json_type(data)}.")
        return data


def _body_parse(body: bytes, encoding: str) -> Any:
    # JSON's shape within limits (json_parse_untrusted): a key given twice was settled by keeping the
    # last, silently, so a write lost the first; a 5,000-digit integer was a 400 quoting Python's own
    # advice. The values are the serializers' to check, field by field.
    try:
        return json_parse_untrusted(body.decode(encoding), constants_allowed=False)
    except UnicodeDecodeError:
        raise ParseError(f"JSON parse error - the body is not {encoding} text.") from None
    except UntrustedJSONError as error:
        raise ParseError(f"JSON parse error - {error}") from None


_JSON_TYPES = {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), "null")


def form_fields_once(form: MultiValueDict[str, Any], *, names: Iterable[str]) -> None:
    """Refuse a form that gives one of the fields ``names`` more than once, naming it: no field of this
    API takes several values, and DRF keeps the last without a word (``plot=...&plot=...`` saved the
    second plot, two files imported the second alone), as json.loads does with a JSON key given twice.
    A field the endpoint does not read is not this check's (``WriteSerializer`` refuses it)."""
    for name in names:
        count = len(form.getlist(name))
        if count > 1:
            times = "twice" if count == 2 else f"{count} times"
            raise ValidationError(
                {
                    name: [
                        f"The form has the field {text_quoted(name, limit=40)} {times} (only the last would be kept): send it once."
                    ]
                }
            )


def query_param_once(query: MultiValueDict[str, Any], name: str) -> str | None:
    """The query's ``name`` (None when absent), refused when given more than once: no parameter of
    this API but ``names`` takes several, and Django's ``get`` reads the last without a word
    (``?from=1&to=2&from=2`` compared version 2 with itself), as json.loads does with a key twice."""
    values = query.getlist(name)
    if len(values) > 1:
        times = "twice" if len(values) == 2 else f"{len(values)} times"
        detail = (
            f"The query has the parameter {text_quoted(name, limit=40)} {times} (only the last would be "
            "read): send it once."
        )
        # With a code, as the middleware's 400 for a query it cannot read (the schema's 400 of every
        # operation without one of its own, storyproject.openapi).
        raise ParseError({"detail": detail, "code": "parameter_twice"})
    return values[0] if values else None

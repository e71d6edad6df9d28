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
``KnownQueryParameters`` does it for the query: a parameter the endpoint does not read is a 400, as
an unknown body field is.
"""

from __future__ import annotations

import codecs
import heapq
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import BadRequest
from django.http import Http404, HttpRequest, QueryDict
from django.utils.datastructures import MultiValueDict
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError, ValidationError
from rest_framework.mixins import ListModelMixin
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import BaseParser, FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import BasePermission
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings

from storyproject.untrusted import UntrustedJSONError, form_body_is_text, json_parse_untrusted, text_quoted


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
    if codec_strict(encoding) is None:
        # charset=zlib (a codec, not a text encoding): decoding raised LookupError, a 500.
        raise ParseError(f'Unsupported charset "{encoding}" in request Content-Type header.')
    try:
        # One byte order mark at the start, as some clients write a JSON file (PowerShell 5's UTF8,
        # Notepad), is ignored, as RFC 8259 section 8.1 allows a parser to: it was a 400.
        return json_parse_untrusted(body.decode(encoding).removeprefix("\ufeff"), constants_allowed=False)
    except UnicodeDecodeError:
        raise ParseError(f"JSON parse error - the body is not {encoding} text.") from None
    except UntrustedJSONError as error:
        raise ParseError(f"JSON parse error - {error}") from None


class StrictFormParser(FormParser):
    """DRF's urlencoded form parser, refusing a form that is not text in its encoding.

    Django decodes each field with ``errors="replace"``: ``title=caf%E9`` (Latin-1) was saved as
    "caf\ufffd", the writer's letter lost without a word, where the same title in a JSON body is a 400.
    """

    def parse(
        self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        if codec_strict(encoding) is None:
            # charset=zlib (a codec, not a text encoding): decoding raised LookupError, a 500. DRF's own
            # words, as StrictMultiPartParser's.
            raise ParseError(f'Unsupported charset "{encoding}" in request Content-Type header.')
        body = stream.read() if stream is not None else b""
        if not form_body_is_text(body, encoding):
            raise ParseError(
                f"Form parse error - the body is not {encoding} text (percent-encode each field's {encoding} bytes)."
            )
        return QueryDict(body, encoding=encoding)


# A text encoding whose decoding ignores the errors asked for and is strict: Django's multipart parser
# decodes each field's value (and a field's or file's name) with errors="replace" (django/http/multipartparser.py,
# MultiPartParser.parse), and takes the encoding to use from its caller.
_STRICT_PREFIX = "storyproject-strict-"


def _strict_codec(name: str) -> codecs.CodecInfo | None:
    if not name.startswith(_STRICT_PREFIX.replace("-", "_")):  # codecs.lookup normalises "-" to "_"
        return None
    base = codecs.lookup(name[len(_STRICT_PREFIX) :])
    if not getattr(base, "_is_text_encoding", True):  # bz2_codec and the like: no text to be strict about
        return None
    return codecs.CodecInfo(
        name=name,
        encode=base.encode,
        decode=lambda data, errors="strict": base.decode(data, "strict"),
    )


codecs.register(_strict_codec)


def codec_strict(encoding: str) -> str | None:
    """The name of ``encoding`` decoding strictly whatever errors are asked for, for Django's multipart
    parser; ``None`` when ``encoding`` is no text encoding."""
    try:
        codecs.lookup(_STRICT_PREFIX + encoding)
    except LookupError:
        return None
    return _STRICT_PREFIX + encoding


class StrictMultiPartParser(MultiPartParser):
    """DRF's multipart parser, refusing a form whose fields' values are not text in its encoding, as
    ``StrictFormParser`` refuses such a urlencoded form. Django read them with replacement characters: a
    Latin-1 title "café" was saved as "caf\ufffd". A file's content is not decoded here (each import
    reads its own); a part whose headers are not UTF-8 Django skips (django/http/multipartparser.py,
    parse_boundary_stream), so its field is missing; a body with no part it could read at all is refused."""

    def parse(
        self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        context = dict(parser_context or {})
        encoding = context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            codecs.lookup(_STRICT_PREFIX + encoding)
        except LookupError:
            # DRF's own answer (its MultiPartParser refuses a charset that is not a text encoding).
            raise ParseError(f'Unsupported charset "{encoding}" in request Content-Type header.') from None
        context["encoding"] = _STRICT_PREFIX + encoding
        try:
            parsed = super().parse(stream, media_type, context)
        except UnicodeDecodeError:
            raise ParseError(
                f"Multipart form parse error - a field is not {encoding} text (send each field's {encoding} bytes)."
            ) from None
        parsed.data.encoding = encoding
        if not parsed.data and not parsed.files and not _closing_only(context, media_type):
            # Django skips what it cannot read: a body without the boundary (JSON sent as a form), a
            # part whose headers are not UTF-8 or that has no name. A PATCH of it changed nothing, 200.
            raise ParseError(
                "Multipart form parse error - no part of the body could be read (each part needs a "
                '"Content-Disposition: form-data; name=..." header, in UTF-8, between the boundaries).'
            )
        return parsed


def _closing_only(context: Mapping[str, Any], media_type: str | None) -> bool:
    """Whether a multipart body is no more than its closing delimiter (``--B--``): an empty form, as a
    browser sends one, whose fields are all absent."""
    request = context.get("request")
    length = request.META.get("CONTENT_LENGTH") if request is not None else None
    boundary = (media_type or "").partition("boundary=")[2].split(";")[0].strip().strip('"')
    try:
        return int(length or 0) <= len(boundary) + len("--") * 2 + len("\r\n") * 2
    except ValueError:
        return False


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
        detail = f"The query has the parameter {_given_times(name, len(values))}: send it once."
        # With a code, as the middleware's 400 for a query it cannot read (the schema's 400 of every
        # operation without one of its own, storyproject.openapi).
        raise ParseError({"detail": detail, "code": "parameter_twice"})
    return values[0] if values else None


def page_query_once(request: HttpRequest, name: str) -> str | None:
    """``query_param_once`` for the site's pages: a parameter given twice is the 400 page saying so
    (``?from=1&to=2&from=2`` showed version 2 compared with itself)."""
    values = request.GET.getlist(name)
    if len(values) > 1:
        raise BadRequest(f"The address has the parameter {_given_times(name, len(values))}: use it once.")
    return values[0] if values else None


def _given_times(name: str, count: int) -> str:
    times = "twice" if count == 2 else f"{count} times"
    return f"{text_quoted(name, limit=40)} {times} (only the last would be read)"


# How many unknown parameters a refusal names, and how much of each, as for unknown body fields.
_UNKNOWN_NAMED = 5
_UNKNOWN_NAME_CHARS = 40
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def query_parameters_read(view_class: type, method: str) -> list[str]:
    """The query parameters an API view reads for ``method``: its own (``query_parameters``), a list's
    page number for a read, and DRF's renderer override (``?format=json``; the export view's
    ``format`` is its own)."""
    names = list(getattr(view_class, "query_parameters", ()))
    paginator = getattr(view_class, "pagination_class", None)
    if method in _SAFE_METHODS and issubclass(view_class, ListModelMixin) and paginator is not None:
        names += [name for name in (paginator.page_query_param, paginator.page_size_query_param) if name]
    override = api_settings.URL_FORMAT_OVERRIDE
    if override and override not in names:
        names.append(override)
    return names


def query_parameters_known_check(query: MultiValueDict[str, Any], *, read: list[str]) -> None:
    """Refuse a query with parameters outside ``read``, naming the first few and the ones read.

    DRF and Django ignore a parameter nobody reads: ``/api/runs/?status=failed`` answered every run,
    ``?pagee=2`` the first page, and the client took the answer for what it asked."""
    unknown = [key for key in query if key not in read]
    if not unknown:
        return
    named = ", ".join(
        text_quoted(key, limit=_UNKNOWN_NAME_CHARS) for key in heapq.nsmallest(_UNKNOWN_NAMED, unknown)
    )
    more = len(unknown) - _UNKNOWN_NAMED
    label = "parameter" if len(unknown) == 1 else "parameters"
    detail = (
        f"Unknown query {label} {named}"
        + (f" and {more} more ({len(unknown)} in all)" if more > 0 else "")
        + f": this endpoint reads {', '.join(read)}."
    )
    # With a code, as the other 400s of a query (parameter_twice, invalid_parameter).
    raise ParseError({"detail": detail, "code": "unknown_parameter"})


class KnownQueryParameters(BasePermission):
    """Every API view's check of its query (a default permission class, after IsAuthenticated, so an
    anonymous request is a 401 first): a parameter the view does not read is a 400, never ignored."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if not _method_taken(view, request.method or ""):
            # DRF's 405 with its Allow comes after the permissions: a GET of the generation with its
            # fields in the query was told "Unknown query parameter 'plot'", not that it must POST.
            return True
        query_parameters_known_check(
            request.query_params, read=query_parameters_read(type(view), request.method or "")
        )
        return True


def _method_taken(view: Any, method: str) -> bool:
    """Whether ``view`` has a handler for ``method``, as DRF's dispatch looks for one (else its 405)."""
    name = method.lower()
    return name in view.http_method_names and hasattr(view, name)


class JsonErrors:
    """An API view whose errors are JSON, labelled so, whatever its renderer for success: an event
    stream's client accepts text/event-stream alone, and the schema's first renderer is YAML, which
    wrote DRF's error details as tagged objects (``string: ..., code: parse_error``)."""

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(response, Response) and response.status_code >= 400:
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]


class StrictContentNegotiation(DefaultContentNegotiation):
    """DRF's negotiation, with a ``?format=`` no renderer has said as a 400 naming the formats.

    DRF answers it with a bare 404 ("Not found."), as if the object did not exist."""

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderers = list(renderers)
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except Http404:
            # Once each: the schema view has two renderers of each format (two media types).
            formats = ", ".join(dict.fromkeys(str(renderer.format) for renderer in renderers))
            asked = request.query_params.get(self.settings.URL_FORMAT_OVERRIDE or "", "")
            detail = f"format={text_quoted(asked, limit=20)} is not offered here; formats: {formats}."
            raise ParseError({"detail": detail, "code": "invalid_parameter"}) from None

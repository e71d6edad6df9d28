"""What drf-spectacular cannot see in the views: statuses DRF and our middleware answer, and the models a
request may name, added to the schema."""

from __future__ import annotations

from typing import Any

# storyproject.pagination answers a page past the end (or not a page number) with this.
_PAGE_NOT_FOUND = {
    "description": "No such page: past the last one, or not a page number (the detail says which).",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "detail": {"type": "string"},
                    "code": {"type": "string", "enum": ["not_found"]},
                },
                "required": ["detail", "code"],
            }
        }
    },
}


# What every operation may answer 400 for, before its own checks (storyproject.parsers): a query
# parameter it does not read, one given twice, a ?format= no renderer has.
_QUERY_REFUSED = (
    "A query parameter the operation does not read is refused (code `unknown_parameter`, naming it and "
    "the ones read: those listed here, and DRF's `format`), as is one given twice (`parameter_twice`) "
    "and a `format` no renderer has (`invalid_parameter`; `json` always works)."
)

# storyproject.middleware answers this before any view: a NUL or a lone surrogate in the URL, a cookie
# or a header (code "invalid_characters"), more query parameters than Django reads ("bad_request"); and
# so does a view for its query (_QUERY_REFUSED).
_REQUEST_UNREADABLE = {
    "description": "The URL, a cookie or a header holds text that cannot be stored (NUL, a lone surrogate), "
    "or there are more query parameters than DATA_UPLOAD_MAX_NUMBER_FIELDS. " + _QUERY_REFUSED,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"detail": {"type": "string"}, "code": {"type": "string"}},
                "required": ["detail", "code"],
            }
        }
    },
}


def _detail(description: str) -> dict[str, Any]:
    # DRF's own error body, {"detail": ...}.
    schema = {"type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


# DRF answers these before a view's own code: no credentials (every operation needs them), and a
# request body over API_MAX_BODY_BYTES (storyproject.parsers) or of a type the operation does not parse.
_UNAUTHENTICATED = _detail("No credentials, or wrong ones: send `Authorization: Token <key>` (or sign in).")
_BODY_REFUSED = {
    "413": _detail(
        "The body is larger than API_MAX_BODY_BYTES (a form's fields: DATA_UPLOAD_MAX_MEMORY_SIZE)."
    ),
    "415": _detail("The body's Content-Type is not one this operation takes."),
}


# DRF's SessionAuthentication checks CSRF on every write signed in with the session cookie: without the
# token (the ``csrftoken`` cookie's value in an ``X-CSRFToken`` header), a 403 before the view runs.
_CSRF = (
    "Signed in with the session cookie (`cookieAuth`) but without the CSRF token: a write must send the "
    '`csrftoken` cookie\'s value in an `X-CSRFToken` header (`{"detail": "CSRF Failed: ..."}`). A token '
    "(`tokenAuth`) needs none."
)
_WRITES = ("post", "put", "patch", "delete")


def _csrf_refused(responses: dict[str, Any]) -> None:
    """The 403 of a cookie-signed write without its CSRF token, added to the operation's own 403, if any."""
    own = responses.get("403")
    if own is None:
        responses["403"] = _detail(_CSRF)
        return
    responses["403"] = {**own, "description": f"{own.get('description', '')} {_CSRF}".strip()}


# stories.exception_handlers sends an error's retry_after as a Retry-After header too: the refusals and
# failures that may carry one (busy, rate_limited; the provider's overload, rate limit or 5xx).
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Whole seconds to wait before trying again, as the body's `retry_after`, when that is known.",
        "schema": {"type": "integer", "minimum": 0},
    }
}
_RETRY_AFTER_STATUSES = ("429", "502", "503")
# DRF's 401 names the scheme to use (the first authenticator's, TokenAuthentication).
_WWW_AUTHENTICATE = {
    "WWW-Authenticate": {"required": True, "schema": {"type": "string", "enum": ["Token"]}},
}


def _headers_add(responses: dict[str, Any]) -> None:
    """The headers an answer carries that its body does not say: ``Retry-After`` and ``WWW-Authenticate``."""
    for status in _RETRY_AFTER_STATUSES:
        if status in responses and "GenerationErrorBody" in str(responses[status].get("content", "")):
            responses[status] = {**responses[status], "headers": _RETRY_AFTER}
    if "401" in responses:
        responses["401"] = {**responses["401"], "headers": _WWW_AUTHENTICATE}


def responses_outside_views(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Postprocessing hook: every operation with a ``page`` parameter documents its bounds and the 404
    for a bad page, every operation the 400s of its query (with the middleware's, when it documents no
    400 of its own), and every operation DRF's 401, and its 413 and 415 when it takes a body, and every
    write the 403 of a session-cookie request without its CSRF token; and the headers of its answers."""
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            if not isinstance(operation, dict):
                continue
            responses = operation.setdefault("responses", {})
            if method in _WRITES:
                _csrf_refused(responses)
            if "400" in responses:
                # The operation's own 400, which the query's refusals share.
                own = responses["400"].get("description", "")
                responses["400"] = {**responses["400"], "description": f"{own} {_QUERY_REFUSED}".strip()}
            else:
                responses["400"] = _REQUEST_UNREADABLE
            responses.setdefault("401", _UNAUTHENTICATED)
            # A POST reads its body even when it takes none (a field in it is refused, not dropped).
            if "requestBody" in operation or method == "post":
                for code, response in _BODY_REFUSED.items():
                    responses.setdefault(code, response)
            _headers_add(responses)
            pages = [p for p in operation.get("parameters", []) if p.get("name") == "page"]
            for page in pages:
                # What storyproject.pagination reads: a whole number from 1 (DRF says integer only).
                page["schema"] = {"type": "integer", "minimum": 1}
                responses.setdefault("404", _PAGE_NOT_FOUND)
    return result


# The request bodies whose ``model`` the server checks against the deployment's list
# (stories.generation.requests.allowed_models).
_MODEL_REQUESTS = ("GenerateScreenplayRequest", "SceneRegenerateRequest")


def models_offered(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Postprocessing hook: a request's ``model`` is one of the models this deployment allows now, or
    null (the default), as the server checks it; the schema is built per request, so it follows the
    settings and a model's retirement."""
    from stories.generation.requests import allowed_models

    schemas = result.get("components", {}).get("schemas", {})
    for name in _MODEL_REQUESTS:
        model = schemas.get(name, {}).get("properties", {}).get("model")
        if model is not None:
            model["enum"] = [*allowed_models(), None]
    return result


def request_bodies_closed(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Postprocessing hook: every request body says ``additionalProperties: false``, as the API reads
    them (``stories.serializers.WriteSerializer``, ``fields_known_check``): a field it does not list is a
    400, so a client following the schema must not send one. The bodies are the components drf-spectacular
    names ``...Request`` (``COMPONENT_SPLIT_REQUEST``)."""
    for name, schema in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request") and schema.get("type") == "object":
            schema["additionalProperties"] = False
    return result


def json_schema_as_openapi30(schema: Any) -> Any:
    """A JSON Schema (2020-12) in OpenAPI 3.0's dialect, for a contract the schema shows: ``const`` as a
    one-value ``enum``, a type list with ``null`` as ``nullable``, no ``$schema``/``$id``."""
    if isinstance(schema, list):
        return [json_schema_as_openapi30(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("$schema", "$id"):
            continue
        if key == "const":
            converted["enum"] = [value]
        elif key == "type" and isinstance(value, list):
            types = [kind for kind in value if kind != "null"]
            converted["type"] = types[0] if len(types) == 1 else types
            if "null" in value:
                converted["nullable"] = True
        else:
            converted[key] = json_schema_as_openapi30(value)
    return converted

"""The one place a GenerationError becomes an HTTP response (REST_FRAMEWORK["EXCEPTION_HANDLER"]).

Views and services raise; this handler picks the status for the code, sends the error's fields as the
body and ``retry_after`` also as a ``Retry-After`` header. A blocking run cancelled meanwhile is a 409.
A form past Django's own limits is said as DRF's errors are. Everything else is DRF's own handling.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from stories.errors import GenerationCancelled, GenerationError
from storyproject.parsers import RequestTooLarge

# The REST status of every code of stories.errors.ERROR_CODES (the table in docs/protocol.md).
GENERATION_ERROR_STATUS = {
    "invalid_request": status.HTTP_400_BAD_REQUEST,
    "unknown_personas": status.HTTP_400_BAD_REQUEST,
    "unauthenticated": status.HTTP_401_UNAUTHORIZED,
    "forbidden": status.HTTP_403_FORBIDDEN,
    "rate_limited": status.HTTP_429_TOO_MANY_REQUESTS,
    "busy": status.HTTP_429_TOO_MANY_REQUESTS,
    "llm_overloaded": status.HTTP_503_SERVICE_UNAVAILABLE,
    "llm_rate_limited": status.HTTP_503_SERVICE_UNAVAILABLE,
    "llm_unavailable": status.HTTP_502_BAD_GATEWAY,
    # Neither is the writer's doing nor cured by retrying: the service is down until an operator acts.
    "llm_quota": status.HTTP_503_SERVICE_UNAVAILABLE,
    "llm_config": status.HTTP_502_BAD_GATEWAY,
    "llm_timeout": status.HTTP_504_GATEWAY_TIMEOUT,
    "llm_refused": status.HTTP_422_UNPROCESSABLE_ENTITY,
    "invalid_output": status.HTTP_502_BAD_GATEWAY,
    "save_failed": status.HTTP_500_INTERNAL_SERVER_ERROR,
    "version_conflict": status.HTTP_409_CONFLICT,
    "interrupted": status.HTTP_503_SERVICE_UNAVAILABLE,
    "not_found": status.HTTP_404_NOT_FOUND,
    "server_stopping": status.HTTP_503_SERVICE_UNAVAILABLE,
}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, GenerationError):
        return generation_error_response(exc)
    if isinstance(exc, GenerationCancelled):
        # A blocking run cancelled from elsewhere (a socket, POST /api/runs/{id}/cancel/): no error of
        # the run's, and nothing saved.
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    return drf_exception_handler(_form_limit_error(exc) or exc, context)


def _form_limit_error(exc: Exception) -> APIException | None:
    """A form body past one of Django's limits, as the API's error that says which.

    Django's form parsers raise these as a SuspiciousOperation, which DRF leaves to Django: the client
    got "The request could not be understood." (under DEBUG, Django's HTML page), and a 400 for a size
    the API's own limit answers with 413.
    """
    if isinstance(exc, TooManyFieldsSent):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
        return ParseError(f"The form has more than {limit} fields (DATA_UPLOAD_MAX_NUMBER_FIELDS).")
    if isinstance(exc, TooManyFilesSent):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FILES
        return ParseError(f"The form has more than {limit} files (DATA_UPLOAD_MAX_NUMBER_FILES).")
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return RequestTooLarge(
            f"The form is larger than {limit} bytes, not counting its files (DATA_UPLOAD_MAX_MEMORY_SIZE)."
        )
    return None


def generation_error_response(error: GenerationError) -> Response:
    body = {key: value for key, value in error.as_event().items() if key != "type"}
    if error.run_id is not None:
        body["run_id"] = error.run_id
    response = Response(body, status=GENERATION_ERROR_STATUS[error.code])
    if "retry_after" in body:
        response["Retry-After"] = str(body["retry_after"])
    return response

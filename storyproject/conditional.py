"""Conditional reads for the API: an ``ETag`` on a ``GET``'s 200, and its ``If-None-Match`` (and
``If-Match``) evaluated by Django's ``get_conditional_response`` (RFC 9110 section 13.2.2: If-None-Match
compared weakly, a 304 keeping the ETag, Cache-Control and Vary; a 412 for an If-Match that fails)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils.cache import get_conditional_response
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

# The writer's own: kept by their browser only, and asked again (If-None-Match) before each use.
PRIVATE_REVALIDATED = "private, no-cache"

# The OpenAPI schema's words for a conditional read, one set for every app's endpoints.
NOT_MODIFIED = OpenApiResponse(description="Not modified: the ETag in If-None-Match still holds.")


def etag_header(stands_for: str) -> OpenApiParameter:
    """The response's ``ETag`` (on a 200 and a 304), ``stands_for`` saying what it changes with."""
    return OpenApiParameter(
        "ETag", str, OpenApiParameter.HEADER, response=[200, 304], required=True, description=stands_for
    )


def if_none_match_header(of: str = "an earlier answer") -> OpenApiParameter:
    """The request's ``If-None-Match``: the ETags ``of`` what the client holds."""
    return OpenApiParameter(
        "If-None-Match",
        str,
        OpenApiParameter.HEADER,
        description=f"An ETag (or a list of them, or `*`) of {of}; weak ones match too: 304 while it holds.",
    )


class ConditionalReads(APIView):
    """A GET's (or HEAD's) 200 gets an ``ETag`` of its body, and its ``If-None-Match`` (and ``If-Match``)
    are evaluated by Django: they were ignored, where RFC 9110 section 13.2.1 asks a server to evaluate
    them, and a client polling a story's versions or a run downloaded the whole answer each time. An
    error (4xx, 5xx) gets no ETag: it stands for no representation of the resource."""

    # Django's 304 (no body) where DRF's stubs say a Response: dispatch takes any.
    def finalize_response(  # type: ignore[override]
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> HttpResponseBase:
        response = super().finalize_response(request, response, *args, **kwargs)
        if request.method not in ("GET", "HEAD") or response.status_code != 200:
            return response
        data = getattr(response, "data", None)
        if data is None:
            return response
        return conditional_response(
            request,
            etag=body_etag(data, media_type=getattr(response, "accepted_media_type", "") or ""),
            response=response,
        )


def conditional_response(request: Request, *, etag: str, response: HttpResponse) -> HttpResponseBase:
    """``response`` (a 200 of a GET or HEAD) with its ``ETag``, or Django's 304 (or 412) for the request's
    conditions."""
    response["ETag"] = etag
    response["Cache-Control"] = PRIVATE_REVALIDATED
    return get_conditional_response(request, etag=etag, response=response) or response


def not_modified(request: HttpRequest | Request, *, etag: str) -> HttpResponseBase | None:
    """Django's 304 (or 412) for the request's conditions against ``etag``, with the ``ETag`` and
    ``Cache-Control`` its 200 would have; None when the 200 is to be made: a read whose ETag comes from
    a stamp cheaper than its body (an export) asks before making it."""
    answer = get_conditional_response(request, etag=etag)
    if answer is not None and answer.status_code == 304:
        answer["ETag"] = etag
        answer["Cache-Control"] = PRIVATE_REVALIDATED
    return answer


def body_etag(data: Any, *, media_type: str) -> str:
    """A strong ``ETag`` for an answer's data as rendered in ``media_type`` (RFC 9110 section 8.8.1)."""
    shown = json.dumps(data, sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder)
    return '"' + hashlib.sha256(f"{media_type}\0{shown}".encode()).hexdigest()[:32] + '"'

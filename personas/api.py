"""REST API for personas: list, detail, one context (the old app's endpoint) and the batch."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.utils.http import parse_etags
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from personas import selectors, serializers
from personas.models import PersonaConfig
from storyproject.conditional import NOT_MODIFIED, ConditionalReads, etag_header, if_none_match_header
from storyproject.parsers import query_param_once

_ETAG_PARAMETER = if_none_match_header()
_ETAG_HEADER = etag_header("Stands for the contexts answered: any edit of one of them changes it.")
# The list and a persona: an ETag of the answer as shown (storyproject.conditional), any edit changing it.
_READ_ETAG_HEADER = etag_header(
    "Stands for the answer as shown: it changes whenever the body does (a persona's edit)."
)


class PersonaListView(ConditionalReads, generics.ListAPIView):
    serializer_class = serializers.PersonaListSerializer
    query_parameters = ("search",)

    @extend_schema(
        summary="Active personas, paginated",
        description="Revalidate with the ETag (If-None-Match): 304 while the page is unchanged.",
        # The serializer that checks the query: its bound (100 characters) is in the schema.
        parameters=[serializers.PersonaSearchSerializer, _ETAG_PARAMETER, _READ_ETAG_HEADER],
        responses={
            200: serializers.PersonaListSerializer(many=True),
            304: NOT_MODIFIED,
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="The search is over 100 characters."),
        },
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[PersonaConfig]:
        search = query_param_once(self.request.query_params, "search")
        query = serializers.PersonaSearchSerializer(data={} if search is None else {"search": search})
        query.is_valid(raise_exception=True)
        return selectors.persona_list(search=query.validated_data.get("search", ""))


class PersonaDetailView(ConditionalReads):
    @extend_schema(
        summary="One active persona with its config",
        description="Revalidate with the ETag (If-None-Match): 304 while it is unchanged.",
        parameters=[_ETAG_PARAMETER, _READ_ETAG_HEADER],
        responses={
            200: serializers.PersonaDetailSerializer,
            304: NOT_MODIFIED,
            404: serializers.ErrorSerializer,
        },
    )
    def get(self, request: Request, name: str) -> Response:
        if len(name) > serializers.NAME_MAX_CHARS:
            return _not_found(name, inactive=False)  # no key is that long: nothing to read
        persona = selectors.persona_get(name=name)
        if persona is None or not persona.is_active:
            return _not_found(name, inactive=persona is not None)
        return Response(serializers.PersonaDetailSerializer(persona).data)


class PersonaContextView(APIView):
    @extend_schema(
        summary="One persona's context (the old app's endpoint; prefer the batch)",
        parameters=[_ETAG_PARAMETER, _ETAG_HEADER],
        responses={
            200: serializers.PersonaContextSerializer,
            304: NOT_MODIFIED,
            404: serializers.ErrorSerializer,
        },
    )
    def get(self, request: Request, name: str) -> Response:
        if len(name) > serializers.NAME_MAX_CHARS:
            return _not_found(name, inactive=False)  # no key is that long: nothing to read or cache
        result = selectors.persona_contexts(names=[name])
        if not result.contexts:
            return _not_found(name, inactive=bool(result.inactive))
        return _with_etag(request, result, _context_json(result.contexts[0]))


class PersonaContextsView(APIView):
    query_parameters = ("names",)

    @extend_schema(
        summary="Contexts of several personas in one request",
        description="Names are de-duplicated and answered in the order asked; unknown and deactivated "
        "names are listed apart. At most STORY_MAX_BATCH_NAMES (50) names. Revalidate with the ETag.",
        parameters=[
            OpenApiParameter(
                "names",
                str,
                required=True,
                pattern=serializers.NAMES_PATTERN,
                description="Comma-separated persona names, each 1 to 100 characters once trimmed.",
            ),
            _ETAG_PARAMETER,
            _ETAG_HEADER,
        ],
        responses={200: serializers.PersonaContextsSerializer, 304: NOT_MODIFIED, 400: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> Response:
        if "names" not in request.query_params:
            return Response(
                {"names": ["Give the persona names: ?names=a,b,c."]}, status=status.HTTP_400_BAD_REQUEST
            )
        # A repeated parameter (?names=a&names=b) counts like a comma-separated one.
        names = serializers.persona_names_parse(",".join(request.query_params.getlist("names")))
        result = selectors.persona_contexts(names=names)
        body = {
            "contexts": [_context_json(context) for context in result.contexts],
            "missing": result.missing,
            "inactive": result.inactive,
        }
        return _with_etag(request, result, body)


def _context_json(context: selectors.PersonaContext) -> dict[str, Any]:
    # The shape of PersonaContextSerializer, built directly: this is the hot path, and a DRF
    # serializer costs more than the cached read itself for 50 contexts.
    return {
        "name": context.name,
        "display_name": context.display_name,
        "context": context.context,
        "tokens": context.tokens,
        "shortened": context.shortened,
    }


def _not_found(name: str, *, inactive: bool) -> Response:
    """A 404 naming the persona asked for, cut at the longest key there can be (the batch's limit).

    The name comes from the URL: echoed whole, a request line of any length came back in the body.
    """
    if len(name) > serializers.NAME_MAX_CHARS:
        name = f"{name[: serializers.NAME_MAX_CHARS]}..."
    if inactive:
        body = {"detail": f"The persona {name!r} is deactivated.", "code": "inactive"}
    else:
        body = {"detail": f"No persona is named {name!r}.", "code": "not_found"}
    return Response(body, status=status.HTTP_404_NOT_FOUND)


def _with_etag(request: Request, result: selectors.PersonaContexts, data: Any) -> Response:
    etag = _etag(result)
    # If-None-Match compares weakly (RFC 9110 section 13.1.2): W/"x" matches "x", as a proxy that
    # compresses (nginx) sends it back.
    asked = [tag.removeprefix("W/") for tag in parse_etags(request.headers.get("If-None-Match", ""))]
    if etag in asked or "*" in asked:
        response = Response(status=status.HTTP_304_NOT_MODIFIED)
    else:
        response = Response(data)
    response["ETag"] = etag
    # Clients may keep the answer but must revalidate: an edit changes the versions, hence the ETag.
    response["Cache-Control"] = "private, no-cache"
    return response


def _etag(result: selectors.PersonaContexts) -> str:
    # The versions identify the texts; the budget decides the cuts; missing and inactive names count.
    state = {
        "versions": [[c.name, c.version] for c in result.contexts],
        "missing": result.missing,
        "inactive": result.inactive,
        "budget": settings.PERSONA_CONTEXT_TOKEN_BUDGET,
    }
    return '"' + hashlib.sha256(json.dumps(state).encode()).hexdigest()[:32] + '"'

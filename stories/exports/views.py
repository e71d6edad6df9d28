"""``GET /api/stories/{id}/versions/{n}/export/?format=...``: a version as a download, for its owner."""

from __future__ import annotations

from collections.abc import Iterable

from django.http import HttpResponse, HttpResponseBase
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from stories import selectors
from stories.exports import EXPORT_FORMATS
from stories.exports.downloads import ExportedFile, export_build, screenplay_version_export_order
from stories.serializers import DetailSerializer, GenerationErrorBodySerializer
from storyproject.conditional import (
    NOT_MODIFIED,
    PRIVATE_REVALIDATED,
    etag_header,
    if_none_match_header,
    not_modified,
)
from storyproject.parsers import query_param_once

_FORMAT_MAX_CHARS = 20

# The media type each format is served with, as the schema's 200 (it said application/octet-stream,
# which no format is): the JSON export is the screenplay object, the others are files.
_DOWNLOADS = {
    (200, export.content_type.split(";")[0]): (
        OpenApiTypes.OBJECT if export.content_type == "application/json" else OpenApiTypes.BINARY
    )
    for export in EXPORT_FORMATS.values()
}


class _JsonErrorsNegotiation(BaseContentNegotiation):
    """DRF reads ``?format=`` as a renderer name; here it names the file format, and errors are JSON."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> None:
        return None

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


class ScreenplayVersionExportApi(APIView):
    renderer_classes = [JSONRenderer]
    content_negotiation_class = _JsonErrorsNegotiation
    query_parameters = ("format",)

    @extend_schema(
        summary="Download a version as Fountain, Final Draft (FDX), PDF or JSON",
        description="Revalidate with the `ETag` (`If-None-Match`): 304 while the file is the same, "
        "without reading the version or building the file. A PDF's tag is weak (`W/`): two builds differ "
        "in their bytes.",
        tags=["stories"],
        parameters=[
            OpenApiParameter("format", str, OpenApiParameter.QUERY, required=True, enum=list(EXPORT_FORMATS)),
            etag_header("Stands for the file: its version, format, title page and file name."),
            if_none_match_header("an earlier download"),
        ],
        responses={
            **_DOWNLOADS,
            304: NOT_MODIFIED,
            400: OpenApiResponse(
                inline_serializer(
                    "ExportFormatRefused",
                    {"detail": serializers.CharField(), "code": serializers.CharField()},
                ),
                description="Unknown format; the message lists the formats offered.",
            ),
            404: OpenApiResponse(DetailSerializer, description="No such story or version among yours."),
            429: OpenApiResponse(
                GenerationErrorBodySerializer,
                description="`busy`: another request is building this PDF, or STORY_EXPORT_BUILDS_AT_ONCE of "
                "yours are being built; `rate_limited`: STORY_EXPORT_BUILDS_PER_HOUR PDFs were built for you in "
                "the last hour. Retry after `Retry-After` seconds.",
            ),
        },
    )
    def get(self, request: Request, story_id: int, number: int) -> HttpResponseBase:
        fmt = (query_param_once(request.query_params, "format") or "").strip().lower()[:_FORMAT_MAX_CHARS]
        if fmt not in EXPORT_FORMATS:
            formats = ", ".join(EXPORT_FORMATS)
            return Response(
                {
                    "detail": f"Choose an export format with ?format=, one of: {formats}.",
                    "code": "invalid_parameter",
                },
                status=400,
            )
        story = selectors.story_get_for_user(user=request.user, story_id=story_id)
        order = screenplay_version_export_order(story=story, number=number, fmt=fmt)
        return not_modified(request, etag=order.etag) or download_response(
            export_build(order), etag=order.etag
        )


def download_response(exported: ExportedFile, *, etag: str) -> HttpResponse:
    """The file as a download (the API's export and the story page's export links), with its ``ETag``
    (``ExportOrder.etag``), to be revalidated (If-None-Match) before each use."""
    response = HttpResponse(exported.data, content_type=exported.content_type)
    response["Content-Disposition"] = attachment_header(exported)
    response["ETag"] = etag
    response["Cache-Control"] = PRIVATE_REVALIDATED
    return response


def attachment_header(exported: ExportedFile) -> str:
    """``attachment`` with the file name; a name beyond ASCII as RFC 6266 asks: an ASCII ``filename``
    first for the clients that read no ``filename*``, which the others prefer. With ``filename*`` alone,
    ``curl -OJ`` saved nothing (it reads ``filename`` only) and older clients named the file "export"."""
    header = content_disposition_header(True, exported.filename) or ""
    if exported.filename.isascii() or not exported.ascii_filename:
        return header
    return f'attachment; filename="{exported.ascii_filename}"; {header.removeprefix("attachment; ")}'

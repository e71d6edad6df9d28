"""REST API for a writer's own stories, their screenplay versions and their generation runs.

Thin DRF views: parse with a serializer, call one selector or service, render. Another user's
objects are looked up through owner-filtered selectors, so they are 404, not 403.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Any, cast

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import QuerySet
from django.http import HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.urls import reverse
from django.utils.cache import get_conditional_response
from django.utils.http import parse_etags
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import generics, status
from rest_framework import serializers as drf_serializers
from rest_framework.exceptions import APIException, NotFound, ParseError
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer
from rest_framework.views import APIView

from personas.selectors import persona_matches
from stories import selectors, services
from stories.errors import GenerationCancelled, GenerationError
from stories.generation.events import DoneEvent, RunOutcome, SavedEvent, events_fold
from stories.generation.pipeline import generation_run
from stories.generation.regenerate import scene_regenerate_body_parse, scene_regenerate_run
from stories.generation.requests import fields_known_check, generation_request_parse
from stories.imports import import_format_for, import_too_large, screenplay_import
from stories.models import GenerationRun, ScreenplayVersion, Story
from stories.runs.addresses import MAX_ID
from stories.runs.follow import run_after_past_end, run_events
from stories.runs.runner import RunStart, run_cancel, run_start
from stories.runs.sse import END_ID, SseBody, request_credential, run_has_more, sse_after, sse_confirm
from stories.screenplay_diff import screenplay_diff
from stories.screenplay_stats import screenplay_stats
from stories.serializers import (
    DetailSerializer,
    GenerationErrorBodySerializer,
    GenerationResultSerializer,
    GenerationRunDetailSerializer,
    GenerationRunSerializer,
    PersonaMatchSerializer,
    ScreenplayDiffSerializer,
    ScreenplayStatsSerializer,
    ScreenplayVersionSerializer,
    ScreenplayVersionSummarySerializer,
    StorableCharField,
    StoryImportSerializer,
    StorySerializer,
    VersionWriteSerializer,
)
from stories.validation import VERSION_NUMBER_MAX, version_number_parse
from stories.ws_sessions import slot_take
from storyproject.conditional import NOT_MODIFIED, ConditionalReads, etag_header, if_none_match_header
from storyproject.parsers import BoundedJSONParser, JsonErrors, StrictMultiPartParser, query_param_once

# DRF's own error body: {"detail": ...}.
_DETAIL = DetailSerializer
_NOT_FOUND = OpenApiResponse(_DETAIL, description="No such object among yours.")
# A serializer's errors: a list of messages per field (``non_field_errors`` for the body as a whole).
_FIELD_ERRORS = inline_serializer(
    "FieldErrors",
    {"non_field_errors": drf_serializers.ListField(child=drf_serializers.CharField(), required=False)},
)
_BAD_REQUEST = OpenApiResponse(
    _FIELD_ERRORS, description="Invalid input; the body names each field's problem."
)
# A generation error (stories.exception_handlers), or DRF's own {"detail": ...}.
_GENERATION_ERROR = GenerationErrorBodySerializer


# The read endpoints a client polls (its stories, a story's versions, a version, the runs ...): an ETag, and
# If-None-Match answered 304 by Django's own evaluation, as for the story itself (StoryDetailApi).
_READ_ETAG = etag_header("Stands for the answer as shown: it changes whenever the body does.")
_IF_NONE_MATCH_READ = if_none_match_header()


@extend_schema_view(
    get=extend_schema(
        summary="Your stories, most recently updated first",
        description="Revalidate with the `ETag` (`If-None-Match`): 304 while the page is unchanged.",
        tags=["stories"],
        parameters=[_READ_ETAG, _IF_NONE_MATCH_READ],
        responses={200: StorySerializer(many=True), 304: NOT_MODIFIED},
    ),
    post=extend_schema(
        summary="Create a story (no versions yet)",
        tags=["stories"],
        responses={201: StorySerializer, 400: _BAD_REQUEST},
    ),
)
class StoryListCreateApi(ConditionalReads, generics.ListCreateAPIView):
    serializer_class = StorySerializer

    def get_queryset(self) -> QuerySet[Story]:
        return selectors.stories_for_user(user=self.request.user)

    def perform_create(self, serializer: BaseSerializer) -> None:
        data = serializer.validated_data
        # IsAuthenticated has run: the user is a real account, never AnonymousUser.
        owner = cast(AbstractBaseUser, self.request.user)
        serializer.instance = services.story_create(owner=owner, title=data["title"], plot=data["plot"])


_STORY_ETAG = OpenApiParameter(
    "ETag",
    str,
    OpenApiParameter.HEADER,
    response=[200, 304, 412],
    required=True,
    description="Stands for the story as a `GET` shows it: any change of it (its title or plot, a version "
    "saved, its cast) changes it.",
)
_IF_MATCH = OpenApiParameter(
    "If-Match",
    str,
    OpenApiParameter.HEADER,
    description=(
        "The story's ETag as the client read it, or a list of tags (any of them holds); a weak tag never "
        "matches. `*` (or none): no check. Any other value: 400."
    ),
)
_IF_NONE_MATCH_WRITE = OpenApiParameter(
    "If-None-Match",
    str,
    OpenApiParameter.HEADER,
    description="Tags (weakly compared) or `*`: the write is refused (412) when the story is one of them.",
)
_PRECONDITION_FAILED = OpenApiResponse(
    _DETAIL,
    description="The story changed since the ETag in If-Match (or is one If-None-Match names); nothing was done.",
)


@extend_schema_view(
    get=extend_schema(
        summary="One of your stories",
        description=(
            "Its `ETag` stands for the story as shown: sent back in `If-None-Match`, the answer is a 304 "
            "without a body while the story is unchanged; in a `PATCH`'s or `DELETE`'s `If-Match`, they "
            "are refused (412) once it changed."
        ),
        parameters=[
            _STORY_ETAG,
            _IF_NONE_MATCH_READ,
        ],
        tags=["stories"],
        responses={
            200: StorySerializer,
            304: NOT_MODIFIED,
            404: _NOT_FOUND,
        },
    ),
    patch=extend_schema(
        summary="Change the title or plot",
        description=(
            "With `If-Match` (the `ETag` of a `GET` or an earlier `PATCH`), nothing is written when the "
            "story changed since (another client changed its title or plot, a Regenerate saved a version "
            "and its plot): 412, the body saying so, the response's `ETag` that of the story now. Without "
            "it, the last write wins."
        ),
        parameters=[_STORY_ETAG, _IF_MATCH, _IF_NONE_MATCH_WRITE],
        tags=["stories"],
        responses={
            200: StorySerializer,
            400: _BAD_REQUEST,
            404: _NOT_FOUND,
            412: _PRECONDITION_FAILED,
        },
    ),
    delete=extend_schema(
        summary="Delete a story with its versions and cast (its runs are kept)",
        description="With `If-Match`, nothing is deleted when the story changed since (412), as for `PATCH`.",
        parameters=[_IF_MATCH, _IF_NONE_MATCH_WRITE],
        tags=["stories"],
        responses={204: None, 400: _BAD_REQUEST, 404: _NOT_FOUND, 412: _PRECONDITION_FAILED},
    ),
)
class StoryDetailApi(generics.RetrieveUpdateDestroyAPIView):
    serializer_class = StorySerializer
    http_method_names = ["get", "patch", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[Story]:
        return selectors.stories_for_user(user=self.request.user)

    def get_object(self) -> Story:
        # The 404 says which story in words (DRF's named the model: "No Story matches the given query.").
        story = self.get_queryset().filter(pk=self.kwargs["pk"]).first()
        if story is None:
            raise selectors.story_not_found(self.kwargs["pk"])
        self.check_object_permissions(self.request, story)
        return story

    # Django's 304 (no body, no Content-Type) where DRF's stubs say a Response: dispatch takes any.
    def finalize_response(  # type: ignore[override]
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> HttpResponseBase:
        response = super().finalize_response(request, response, *args, **kwargs)
        if response.status_code != 200 or not isinstance(response.data, dict):
            return response
        response["ETag"] = story_etag(response.data)
        if request.method not in ("GET", "HEAD"):
            return response
        # The writer's own: kept by their browser only, and asked again (If-None-Match) before each use.
        response["Cache-Control"] = "private, no-cache"
        # Django's evaluation of If-None-Match (weak comparison, a 304 keeping the ETag and Vary) and of
        # a GET's If-Match (RFC 9110 section 13.2.2).
        return get_conditional_response(request, etag=response["ETag"], response=response) or response

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        if isinstance(exc, StoryPreconditionFailed):
            response["ETag"] = exc.etag
        return response

    def perform_update(self, serializer: BaseSerializer) -> None:
        data = serializer.validated_data
        try:
            serializer.instance = services.story_update(
                story=cast(Story, serializer.instance),
                title=data.get("title"),
                plot=data.get("plot"),
                expected=_as_if_match_says(self.request),
            )
        except services.DetailsChanged:
            raise self._precondition_failed() from None

    def perform_destroy(self, instance: Story) -> None:
        try:
            services.story_delete(story=instance, expected=_as_if_match_says(self.request))
        except services.DetailsChanged:
            raise self._precondition_failed() from None

    def _precondition_failed(self) -> StoryPreconditionFailed:
        etag = story_etag(StorySerializer(self.get_object()).data)
        tags = if_match_tags(self.request)
        return StoryPreconditionFailed(etag=etag, changed=tags is not None and etag not in tags)


def story_etag(data: dict[str, Any]) -> str:
    """The ``ETag`` of a story as ``StorySerializer`` shows it: a strong validator, which changes whenever
    what a ``GET`` shows does (RFC 9110 section 8.8.1). It stood for the title and plot only, so a 304
    could not be answered with it (the latest version would have been stale)."""
    shown = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return '"' + hashlib.sha256(shown.encode()).hexdigest()[:32] + '"'


def _as_if_match_says(request: Request) -> Callable[[Story], bool] | None:
    """Whether a story as it is now is one the request's preconditions allow a write to (RFC 9110 section
    13.1): one If-Match names (strongly), and none If-None-Match names (weakly, ``*`` naming any); no
    precondition, no check."""
    tags = if_match_tags(request)
    # Django's parse (a malformed one names nothing), the weak comparison dropping W/.
    unwanted = [tag.removeprefix("W/") for tag in parse_etags(request.headers.get("If-None-Match", ""))]
    if tags is None and not unwanted:
        return None

    def allowed(now: Story) -> bool:
        etag = story_etag(StorySerializer(now).data)
        return (tags is None or etag in tags) and "*" not in unwanted and etag not in unwanted

    return allowed


class StoryPreconditionFailed(APIException):
    """A write whose If-Match is not the story's ETag now (or whose If-None-Match is): 412, with the
    story's ETag now."""

    status_code = status.HTTP_412_PRECONDITION_FAILED
    default_code = "precondition_failed"

    def __init__(self, *, etag: str, changed: bool = True) -> None:
        super().__init__(
            "The story changed since the ETag in If-Match (its title or plot, or a version saved); nothing "
            "was done. GET the story to see it, or send the ETag of this response to go ahead."
            if changed
            else "The story is as If-None-Match names it (this response's ETag); nothing was done."
        )
        self.etag = etag


# RFC 9110 section 8.8.3: entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE, etagc = %x21 / %x23-7E / obs-text
# (a header's value reaches Django decoded as Latin-1, so obs-text is \x80-\xff).
_ENTITY_TAG = r'(?:W/)?"[\x21\x23-\x7e\x80-\xff]*"'
# If-Match = "*" / #entity-tag: a list, whose empty elements a recipient accepts (section 5.6.1).
_ENTITY_TAG_LIST = re.compile(rf"[ \t]*(?:{_ENTITY_TAG})?[ \t]*(?:,[ \t]*(?:{_ENTITY_TAG})?[ \t]*)*")


def if_match_tags(request: Request) -> list[str] | None:
    """The entity tags of the request's ``If-Match`` (RFC 9110 section 13.1.1), to be compared strongly
    (a weak tag, ``W/"..."``, never matches a strong ETag); ``None`` without one, or with ``*``. A value
    that is neither ``*`` nor at least one entity tag (a tag without its quotes, an empty field) is a
    400: taken as no condition, the write it guards would win without a word."""
    value = request.headers.get("If-Match")
    if value is None or value.strip(" \t") == "*":
        return None
    tags = re.findall(_ENTITY_TAG, value) if _ENTITY_TAG_LIST.fullmatch(value) else []
    if not tags:
        raise ParseError('If-Match is not "*" or a list of entity tags (quoted, as the ETag of a GET is).')
    return tags


def _own_story(view: generics.GenericAPIView) -> Story:
    # The story in the URL among the requesting user's stories; anyone else's is a 404.
    return selectors.story_get_for_user(user=view.request.user, story_id=view.kwargs["story_id"])


@extend_schema_view(
    get=extend_schema(
        summary="A story's screenplay versions, newest first",
        description="Revalidate with the `ETag` (`If-None-Match`): 304 while no version was saved.",
        tags=["versions"],
        parameters=[_READ_ETAG, _IF_NONE_MATCH_READ],
        responses={
            200: ScreenplayVersionSummarySerializer(many=True),
            304: NOT_MODIFIED,
            404: _NOT_FOUND,
        },
    ),
    post=extend_schema(
        summary="Save the writer's own screenplay (JSON or Fountain) as the next version",
        description=(
            "No model, no run, no cost: the version's `origin` is `edited`. With `base_version`, the save "
            "fails with 409 (`version_conflict`, nothing saved) when a newer version than that one exists, "
            "unless `save_anyway` is true (the edit still starts from `base_version`). "
            "Fountain is parsed with screenplain; an error names the line. A Fountain edit keeps the "
            "characters (personas, descriptions) of the version it started from."
        ),
        tags=["versions"],
        request=VersionWriteSerializer,
        responses={
            201: ScreenplayVersionSerializer,
            400: _GENERATION_ERROR,
            404: _NOT_FOUND,
            409: _GENERATION_ERROR,
        },
    ),
)
class StoryVersionListApi(ConditionalReads, generics.ListAPIView):
    serializer_class = ScreenplayVersionSummarySerializer
    queryset = ScreenplayVersion.objects.none()

    def get_queryset(self) -> QuerySet[ScreenplayVersion]:
        if getattr(self, "swagger_fake_view", False):
            return ScreenplayVersion.objects.none()
        return selectors.story_versions_list(story=_own_story(self))

    def post(self, request: Request, story_id: int) -> Response:
        story = _own_story(self)
        body = VersionWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        if "fountain" in data:
            version = services.screenplay_version_write_fountain(
                user_id=_user_id(request),
                story=story,
                fountain=data["fountain"],
                base_version=data.get("base_version"),
                save_anyway=data["save_anyway"],
            )
        else:
            version = services.screenplay_version_write(
                user_id=_user_id(request),
                story=story,
                content=data["content"],
                base_version=data.get("base_version"),
                save_anyway=data["save_anyway"],
            )
        return Response(ScreenplayVersionSerializer(version).data, status=status.HTTP_201_CREATED)


@extend_schema(
    summary="One screenplay version with its content",
    description="Revalidate with the `ETag` (`If-None-Match`): 304 while it is unchanged.",
    tags=["versions"],
    parameters=[_READ_ETAG, _IF_NONE_MATCH_READ],
    responses={200: ScreenplayVersionSerializer, 304: NOT_MODIFIED, 404: _NOT_FOUND},
)
class StoryVersionDetailApi(ConditionalReads, generics.RetrieveAPIView):
    serializer_class = ScreenplayVersionSerializer
    queryset = ScreenplayVersion.objects.none()

    def get_object(self) -> ScreenplayVersion:
        return selectors.story_version_get(story=_own_story(self), number=self.kwargs["number"])


@extend_schema(
    summary="Your generation runs, newest first, with stage timings and token usage",
    description="Revalidate with the `ETag` (`If-None-Match`): 304 while the page is unchanged.",
    tags=["runs"],
    parameters=[_READ_ETAG, _IF_NONE_MATCH_READ],
    responses={200: GenerationRunSerializer(many=True), 304: NOT_MODIFIED},
)
class GenerationRunListApi(ConditionalReads, generics.ListAPIView):
    serializer_class = GenerationRunSerializer
    queryset = GenerationRun.objects.none()

    def get_queryset(self) -> QuerySet[GenerationRun]:
        return selectors.run_list_for_user(user=self.request.user)


@extend_schema(
    summary="One of your generation runs, with the model text it received",
    description="The run as the list has it, and `raw_text`: the model text received, kept when the run "
    "ends. For a failed or cancelled run it is all that is left of what was written once the run's events "
    "are gone (after their retention, or a restart without Redis). Revalidate with the `ETag` "
    "(`If-None-Match`): 304 while the run is unchanged.",
    tags=["runs"],
    parameters=[_READ_ETAG, _IF_NONE_MATCH_READ],
    responses={200: GenerationRunDetailSerializer, 304: NOT_MODIFIED, 404: _NOT_FOUND},
)
class GenerationRunDetailApi(ConditionalReads, generics.RetrieveAPIView):
    serializer_class = GenerationRunDetailSerializer
    queryset = GenerationRun.objects.none()

    def get_object(self) -> GenerationRun:
        return selectors.run_get_for_user(user=self.request.user, run_id=self.kwargs["run_id"])


# --- Generation: POST /api/ai/generate-screenplay/ (issue 4) ---------------------------------------
# The old app's blocking endpoint, kept: the same pipeline as the WebSocket, folded to its end.


_RUN_STARTED = inline_serializer(
    "RunStarted",
    {
        "run_id": drf_serializers.IntegerField(),
        "events_url": drf_serializers.CharField(),
        "cancel_url": drf_serializers.CharField(),
    },
)

# The 201 of a blocking generation or scene rewrite (_generation_body).
_GENERATION_RESULT = GenerationResultSerializer
# A story deleted (by another request) between the run's save and the answer: 404 not_found.
_STORY_DELETED = OpenApiResponse(
    _GENERATION_ERROR,
    description="`not_found`: the story was deleted by another request before the answer, with the new version.",
)


@extend_schema(
    summary="Generate a screenplay and save it: blocking (201), or started in the background (202)",
    tags=["generation"],
    parameters=[
        OpenApiParameter(
            "Location",
            str,
            OpenApiParameter.HEADER,
            response=[202],
            required=True,
            description="The run's `events_url`.",
        )
    ],
    request=inline_serializer(
        "GenerateScreenplay",
        {
            # The bounds stories.generation.requests checks (generation_request_parse reads the body).
            "plot": drf_serializers.CharField(max_length=settings.STORY_MAX_PLOT_CHARS),
            "personas": drf_serializers.ListField(
                child=drf_serializers.RegexField(r"^[-a-zA-Z0-9_]{1,100}$"),
                min_length=1,
                help_text=f"1 to {settings.STORY_MAX_PERSONAS} distinct persona names; a name given more than "
                "once takes part once (duplicates are dropped before counting).",
            ),
            "title": drf_serializers.CharField(
                required=False, allow_null=True, allow_blank=True, max_length=settings.STORY_MAX_TITLE_CHARS
            ),
            "story_id": drf_serializers.IntegerField(
                required=False, allow_null=True, min_value=1, max_value=MAX_ID
            ),
            "model": drf_serializers.CharField(required=False, allow_null=True),
            "max_tokens": drf_serializers.IntegerField(
                required=False,
                allow_null=True,
                min_value=settings.STORY_MIN_MAX_TOKENS,
                max_value=settings.STORY_MAX_MAX_TOKENS,
            ),
            "mode": drf_serializers.ChoiceField(
                choices=["single", "parallel"], required=False, allow_null=True, allow_blank=True
            ),
            "wait": drf_serializers.BooleanField(required=False, default=True),
        },
    ),
    responses={
        201: OpenApiResponse(
            _GENERATION_RESULT,
            description=(
                "The story (id, title, plot, url), the version, timings, usage and `cast_dropped` (the cast "
                "members left out because an editor deleted their persona while the run was writing)."
            ),
        ),
        202: OpenApiResponse(
            _RUN_STARTED,
            description='With `"wait": false`: the run started and goes on without this request. Follow it '
            "at `events_url` (Server-Sent Events, or `attach` on the WebSocket); `Location` is the same URL.",
        ),
        403: OpenApiResponse(
            _GENERATION_ERROR, description="`forbidden`: `story_id` is not one of your stories."
        ),
        404: _STORY_DELETED,
        **{code: _GENERATION_ERROR for code in (400, 401, 409, 422, 429, 500, 502, 503, 504)},
    },
)
class GenerateScreenplayView(APIView):
    """Generate a screenplay, save it, and return the story and its new version (blocking)."""

    # JSON only: the fields are JSON types (a list of personas, a boolean wait) that a form cannot carry.
    parser_classes = [BoundedJSONParser]

    def post(self, request: Request) -> Response:
        # A GenerationError (a bad request, a refusal, a failed run) is answered by
        # stories.exception_handlers with its code's status.
        fields, wait = _wait_split(request.data)
        generation = generation_request_parse(fields)
        # Blocking: nobody sees text as it streams (the fold drops it), so none is merged; merged text
        # events would only make the run's log hold more text (generation.coalesce).
        events = generation_run(
            request=generation, user=request.user, coalesce=not wait, credential=request_credential(request)
        )
        if not wait:
            return _run_accepted(async_to_sync(run_start)(events))
        outcome = async_to_sync(events_fold)(run_events(events))
        return _generation_response(outcome)


def _wait_split(data: Any) -> tuple[Any, bool]:
    """The request without ``wait``, and ``wait`` (true unless the client says false).

    Unlike the optional fields that take null as "not given", a null ``wait`` is refused: a client
    that sends a falsy value may mean "do not wait", and blocking it instead would be a surprise."""
    if not isinstance(data, dict) or "wait" not in data:
        return data, True
    fields = {key: value for key, value in data.items() if key != "wait"}
    if not isinstance(data["wait"], bool):
        raise GenerationError("invalid_request", "wait must be true or false")
    return fields, data["wait"]


def _run_accepted(start: RunStart) -> Response:
    """202 with the started run's id and where to follow it (or the refusal's error)."""
    if start.run_id is None:
        assert start.refusal is not None
        raise GenerationError.from_event(start.refusal)
    urls = _run_urls(start.run_id)
    response = Response({"run_id": start.run_id, **urls}, status=status.HTTP_202_ACCEPTED)
    response["Location"] = urls["events_url"]
    return response


def _run_urls(run_id: int) -> dict[str, str]:
    return {
        "events_url": reverse("stories-api:run-events", args=[run_id]),
        "cancel_url": reverse("stories-api:run-cancel", args=[run_id]),
    }


def _generation_response(outcome: RunOutcome) -> Response:
    """201 with the story and the version the run saved."""
    saved = outcome.saved_event()
    try:
        version = selectors.story_version_saved_get(story_id=saved["story_id"], number=saved["version"])
    except ScreenplayVersion.DoesNotExist:
        raise _story_deleted_since(story_id=saved["story_id"], number=saved["version"]) from None
    return Response(_generation_body(version, saved, outcome.done), status=status.HTTP_201_CREATED)


def _story_deleted_since(*, story_id: int, number: int) -> GenerationError:
    # Another request (the writer's own, elsewhere) deleted the story between this save and its answer.
    return GenerationError(
        "not_found", f"story {story_id} was deleted after version {number} of it was saved, with that version"
    )


def _generation_body(version: ScreenplayVersion, saved: SavedEvent, done: DoneEvent) -> dict[str, Any]:
    story = version.story
    return {
        "run_id": saved["run_id"],
        "story": {"id": story.pk, "title": story.title, "plot": story.plot, "url": saved["url"]},
        "version": {
            "number": version.number,
            "content": version.content,
            "model": version.model,
            "max_tokens": version.max_tokens,
            # As DRF writes every other date of the API ("Z" for UTC).
            "created_at": drf_serializers.DateTimeField().to_representation(version.created_at),
        },
        "timings": done["timings"],
        "usage": done["usage"],
        # Personas an editor deleted while the run was writing: out of the story's cast (docs/generation.md).
        "cast_dropped": saved.get("cast_dropped", []),
    }


# --- End of generation -----------------------------------------------------------------------------


# --- Parallel mode: rewrite one scene (issue 9) -----------------------------------------------------


@extend_schema(
    summary="Rewrite one scene of a version with the same context; save the result as a new version",
    description=(
        "Blocking. The scene is written the way parallel mode writes every scene: with the instructions, "
        "the cast's persona contexts and an outline rebuilt from this version. `index` is the scene's "
        "0-based position. The rest of the screenplay is kept as it is."
    ),
    tags=["generation"],
    request=inline_serializer(
        "SceneRegenerate",
        {
            "instructions": drf_serializers.CharField(
                required=False,
                allow_null=True,
                allow_blank=True,
                max_length=settings.STORY_MAX_REGENERATE_INSTRUCTIONS_CHARS,
            ),
            "model": drf_serializers.CharField(required=False, allow_null=True),
            "max_tokens": drf_serializers.IntegerField(
                required=False,
                allow_null=True,
                min_value=settings.STORY_MIN_MAX_TOKENS,
                max_value=settings.STORY_MAX_MAX_TOKENS,
            ),
            "base_version": drf_serializers.IntegerField(
                required=False,
                allow_null=True,
                min_value=1,
                max_value=2**63 - 1,
                help_text="The story's latest version as the client knows it: a newer one is a 409 "
                "version_conflict before any model call.",
            ),
        },
    ),
    responses={
        201: OpenApiResponse(
            _GENERATION_RESULT, description="The story, the new version, timings, usage and `cast_dropped`."
        ),
        # Another writer's story or none (DRF's {"detail"}), or one deleted during the rewrite (not_found).
        404: OpenApiResponse(
            _GENERATION_ERROR, description="No such story among yours, or deleted meanwhile."
        ),
        **{code: _GENERATION_ERROR for code in (400, 401, 409, 422, 429, 500, 502, 503, 504)},
    },
)
class SceneRegenerateApi(APIView):
    parser_classes = [BoundedJSONParser]  # as a generation: max_tokens is a JSON integer

    def post(self, request: Request, story_id: int, number: int, index: int) -> Response:
        # Another user's story is a 404 here, as everywhere in the API.
        story = selectors.story_get_for_user(user=request.user, story_id=story_id)
        body: Any = request.data if hasattr(request.data, "keys") else {}
        regenerate = scene_regenerate_body_parse(
            {key: body.get(key) for key in body}, story_id=story.pk, version=number, index=index
        )
        credential = request_credential(request)
        try:
            outcome = async_to_sync(events_fold)(
                run_events(scene_regenerate_run(request=regenerate, user=request.user, credential=credential))
            )
        except (GenerationError, GenerationCancelled) as error:
            # The story was the writer's a moment ago (else the 404 above): another tab or request
            # deleted it while the scene was rewritten, before the run began (its admission refuses the
            # story) or while it ran (the deletion cancels it). The URL names it: the 404 it answers now.
            deleted = (
                error.code == "forbidden"
                if isinstance(error, GenerationError)
                else not Story.objects.filter(pk=story.pk).exists()
            )
            if not deleted:
                raise
            raise GenerationError(
                "not_found",
                f"story {story.pk} was deleted while its scene was being rewritten; nothing was saved",
            ) from None
        return _generation_response(outcome)


# --- The writer's own versions: restore, diff, import, stats (issue 17) ---------------------------------


@extend_schema(
    summary="Make version n the current one: a new version with its content (history stays append-only)",
    tags=["versions"],
    request=None,
    responses={201: ScreenplayVersionSerializer, 400: _GENERATION_ERROR, 404: _NOT_FOUND},
)
class StoryVersionRestoreApi(APIView):
    def post(self, request: Request, story_id: int, number: int) -> Response:
        story = selectors.story_get_for_user(user=request.user, story_id=story_id)
        selectors.story_version_get(story=story, number=number)
        _body_none(request)
        version = services.screenplay_version_restore(user_id=_user_id(request), story=story, number=number)
        return Response(ScreenplayVersionSerializer(version).data, status=status.HTTP_201_CREATED)


def _body_none(request: Request) -> None:
    """Refuse the fields of a body an endpoint that reads none would drop without a word (a restore's
    ``base_version``, which a client may take for a conflict check); a form's CSRF token is no field."""
    data = request.data  # a JSON object or a form (a QueryDict); a JSON list or text is DRF's 400
    if isinstance(data, dict):
        fields_known_check(data, ("csrfmiddlewaretoken",))


# The bounds _query_number applies (version_number_parse), for the schema.
_VERSION_NUMBER = {"type": "integer", "minimum": 1, "maximum": VERSION_NUMBER_MAX}


@extend_schema(
    summary="Line changes between two versions, scenes paired by heading",
    description=(
        "Every scene of either version in order: `same` (no lines), `changed`, `added` or `removed`, with "
        "its lines marked `equal`, `delete` (only in `from`) or `insert` (only in `to`). Dialogue lines "
        "read `NAME: line`. Revalidate with the `ETag` (`If-None-Match`): 304 while it is unchanged."
    ),
    tags=["versions"],
    parameters=[
        OpenApiParameter("from", _VERSION_NUMBER, required=True, description="The older version's number"),
        OpenApiParameter("to", _VERSION_NUMBER, required=True, description="The newer version's number"),
        _READ_ETAG,
        _IF_NONE_MATCH_READ,
    ],
    responses={200: ScreenplayDiffSerializer, 304: NOT_MODIFIED, 400: _GENERATION_ERROR, 404: _NOT_FOUND},
)
class StoryDiffApi(ConditionalReads):
    query_parameters = ("from", "to")

    def get(self, request: Request, story_id: int) -> Response:
        story = selectors.story_get_for_user(user=request.user, story_id=story_id)
        numbers = [_query_number(request, key) for key in ("from", "to")]
        old, new = (selectors.story_version_get(story=story, number=n) for n in numbers)
        body = {
            "from_version": old.number,
            "to_version": new.number,
            "scenes": screenplay_diff(old=old.content, new=new.content),
        }
        return Response(body)


def _query_number(request: Request, key: str) -> int:
    number = version_number_parse(query_param_once(request.query_params, key) or "")
    if number is None:
        raise GenerationError("invalid_request", f"{key} must be a version number, like ?from=1&to=2")
    return number


@extend_schema(
    summary="A version's shape: estimated pages, scenes, and each character's lines, words and scenes",
    description=(
        "Pages are estimated from the industry layout (about 55 printed lines a page; action wrapped at 60 "
        "characters, dialogue at 35), not counted in the PDF. `lines` counts speeches. Revalidate with the "
        "`ETag` (`If-None-Match`): 304 while they are unchanged."
    ),
    tags=["versions"],
    parameters=[_READ_ETAG, _IF_NONE_MATCH_READ],
    responses={200: ScreenplayStatsSerializer, 304: NOT_MODIFIED, 404: _NOT_FOUND},
)
class StoryVersionStatsApi(ConditionalReads):
    def get(self, request: Request, story_id: int, number: int) -> Response:
        story = selectors.story_get_for_user(user=request.user, story_id=story_id)
        version = selectors.story_version_get(story=story, number=number)
        return Response(screenplay_stats(version.content).as_json())


@extend_schema(
    summary="Create a story from a Fountain or Final Draft (FDX) screenplay",
    description=(
        "Multipart `file` (.fountain or .fdx) or JSON `fountain` text. The title page gives the title and "
        "logline (the story's plot, cut to STORY_MAX_PLOT_CHARS when longer: `plot_cut`). Answers with the story, its version 1 (`origin` `imported`) and, for "
        "each character, the active persona whose display name or key matches its name (case-insensitive), "
        "or null. Send `cast` ({name: persona key or null}) to cast them in version 1; otherwise version 1 "
        "has no personas and the writer confirms the cast in a new version. Limits: "
        "STORY_IMPORT_MAX_BYTES, STORY_IMPORT_MAX_SCENES, STORY_IMPORT_MAX_ELEMENTS, STORY_IMPORT_MAX_CHARACTERS."
    ),
    tags=["stories"],
    request={
        "multipart/form-data": StoryImportSerializer,
        # A JSON body carries no file: only pasted text (StoryImportSerializer reads both).
        "application/json": inline_serializer(
            "StoryImportJSON",
            {
                "fountain": StorableCharField(
                    label="fountain", trim_whitespace=False, max_bytes_setting="STORY_IMPORT_MAX_BYTES"
                ),
                "cast": drf_serializers.DictField(
                    child=drf_serializers.CharField(allow_null=True, max_length=100), required=False
                ),
            },
        ),
    },
    responses={
        201: inline_serializer(
            "StoryImportResponse",
            {
                "story": StorySerializer(),
                "version": ScreenplayVersionSerializer(),
                "matches": PersonaMatchSerializer(many=True),
                "plot_cut": drf_serializers.BooleanField(
                    help_text="The logline was longer than STORY_MAX_PLOT_CHARS: the story's plot is its "
                    "beginning, cut at a word with '…' (the version keeps the whole logline)."
                ),
            },
        ),
        400: _GENERATION_ERROR,
        404: _STORY_DELETED,
    },
)
class StoryImportApi(APIView):
    parser_classes = [BoundedJSONParser, StrictMultiPartParser]

    def post(self, request: Request) -> Response:
        body = StoryImportSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        content = _imported_content(data)
        version = services.story_import(user_id=_user_id(request), content=content, cast=data.get("cast"))
        names = [c["name"] for c in version.content.get("characters", [])]
        matches = [
            {
                "character": name,
                "persona": p.name if p else None,
                "display_name": p.display_name if p else None,
            }
            for name, p in persona_matches(names=names).items()
        ]
        story = selectors.story_find_for_user(story_id=version.story_id, user_id=_user_id(request))
        if story is None:
            raise _story_deleted_since(story_id=version.story_id, number=version.number)
        return Response(
            {
                "story": StorySerializer(story).data,
                "version": ScreenplayVersionSerializer(version).data,
                "matches": matches,
                "plot_cut": services.imported_plot(content=version.content).cut,
            },
            status=status.HTTP_201_CREATED,
        )


def _imported_content(data: dict[str, Any]) -> dict[str, Any]:
    if "fountain" in data:
        return screenplay_import(data=data["fountain"], fmt="fountain")
    upload = data["file"]
    fmt = import_format_for(upload.name or "")
    if upload.size > settings.STORY_IMPORT_MAX_BYTES:
        raise import_too_large(upload.size)
    return screenplay_import(data=upload.read(), fmt=fmt)


def _user_id(request: Request) -> int:
    # IsAuthenticated has run: the user is a saved account with a primary key.
    return int(request.user.pk or 0)


# --- Durable runs: follow and cancel (issue 16) ------------------------------------------------------


class EventStreamRenderer(BaseRenderer):
    """``text/event-stream``, so that an EventSource's Accept header is acceptable; errors stay JSON
    (``RunEventsApi.finalize_response``)."""

    media_type = "text/event-stream"
    format = "sse"
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        return json.dumps(data).encode() if data is not None else b""


# One SSE message of RunEventsApi (stories.runs.sse), as an SSE parser reads it: there is no ``event:``
# field, so its event type is "message", which EventSource.onmessage sees. OpenAPI 3.0 cannot say
# that ``data`` holds JSON of a given schema (3.2's itemSchema and contentSchema can): its description
# and pattern do.
_SSE_EVENT = {
    "type": "object",
    "properties": {
        "id": {
            "type": "string",
            "pattern": rf"^([0-9]{{1,18}}|{END_ID})$",
            "description": "The event's seq; `end` for a run's end rebuilt from the database.",
        },
        "event": {"type": "string", "enum": ["message"]},
        "data": {
            "type": "string",
            "pattern": r"^\{.*\}$",
            "description": "One event of the protocol (docs/protocol.md) as a JSON object on one line, as "
            "the WebSocket sends it: its `type` is one of accepted, resumed, delta, outline_delta, outline, "
            "scene_delta, scene, scene_retry, progress, saved, done, error, cancelled; the last three end "
            "the stream. With `confirm=true`, the first is `attached` (no `id`): where the replay ends "
            "(`replay_to`) and the run's time so far (`elapsed_ms`).",
        },
        "retry": {"type": "integer", "description": "The reconnection delay in milliseconds (2000)."},
    },
}


def _own_run(request: Request, run_id: int) -> GenerationRun:
    run = selectors.run_find_for_user(run_id=run_id, user_id=int(request.user.pk or 0))
    if run is None:
        raise NotFound(selectors.run_not_found_message(run_id))
    return run


@extend_schema(
    summary="Follow a run's events as Server-Sent Events",
    description=(
        "Every event with `seq` greater than `after` (or the `Last-Event-ID` header, which wins; both are "
        "checked, a bad one is a 400 even when the other is given), then "
        "the live ones, ending with the terminal event (`done`, `error` or `cancelled`). Each message's "
        "`id:` is the event's seq and its `data:` the event's JSON, as on the WebSocket "
        "(docs/protocol.md). An EventSource resumes by itself; `curl -N` shows the stream. 204 once the "
        "client has the terminal event; a seq past it is a 400 (`invalid_request`), and a stream of a live run "
        "that ends before that seq ends with an `error` saying so. After the retention (or a restart without Redis), a finished run's "
        "end comes from the database with `seq` null: its saved scenes and `saved` without an `id:`, then "
        "its terminal event with `id: end`."
    ),
    tags=["generation"],
    parameters=[
        # The bounds sse_after applies.
        OpenApiParameter(
            "after",
            {"type": "integer", "minimum": 0, "maximum": MAX_ID},
            OpenApiParameter.QUERY,
            description="The last seq the client has.",
        ),
        OpenApiParameter(
            "Last-Event-ID",
            str,
            OpenApiParameter.HEADER,
            pattern=rf"^([0-9]{{1,18}}|{END_ID})$",
            description="Sent by EventSource on a reconnect: a seq, or `end`.",
        ),
        OpenApiParameter(
            "confirm",
            {"type": "string", "enum": ["true", "false"]},
            OpenApiParameter.QUERY,
            description="`true`: the first message is `attached` (without an `id:`), as a WebSocket "
            "`attach` with `confirm` is answered: `replay_to`, the seq where the replay ends and the live "
            "events begin, and `elapsed_ms`, the run's time so far. Sent again on every reconnect.",
        ),
    ],
    responses={
        (200, "text/event-stream"): OpenApiResponse(
            _SSE_EVENT,
            description="The events as Server-Sent Events, each message described by this schema (after a "
            "first message of `retry: 2000` alone).",
        ),
        204: OpenApiResponse(description="The client already has the run's terminal event."),
        # Errors are JSON whatever the client accepts (RunEventsApi.finalize_response), never an event.
        (400, "application/json"): _GENERATION_ERROR,
        404: _NOT_FOUND,
        (429, "application/json"): OpenApiResponse(
            _GENERATION_ERROR,
            description="`busy`: the user already holds STORY_WS_MAX_SOCKETS_PER_USER open sockets and streams.",
        ),
    },
)
class RunEventsApi(JsonErrors, APIView):
    renderer_classes = [JSONRenderer, EventStreamRenderer]
    query_parameters = ("after", "confirm")

    def get(self, request: Request, run_id: int) -> HttpResponseBase:
        run = _own_run(request, run_id)
        confirm = sse_confirm(query_param_once(request.query_params, "confirm"))
        after = sse_after(
            query=query_param_once(request.query_params, "after"),
            last_event_id=request.headers.get("Last-Event-ID"),
        )
        if after is None:
            return _nothing_more()
        if not async_to_sync(run_has_more)(run_id=run.pk, after=after):
            # The client has the run's terminal event, or its seq is past it (another run's, a made-up
            # one): that is said (400), not answered as "you have it all".
            if past_end := async_to_sync(run_after_past_end)(run_id=run.pk, after=after):
                raise past_end
            return _nothing_more()
        # Past the user's cap on open sockets and streams: 429 busy (stories.exception_handlers).
        slot = slot_take(user_id=int(request.user.pk or 0))
        response = StreamingHttpResponse(
            SseBody(
                run_id=run.pk,
                after=after,
                credential=request_credential(request),
                slot=slot,
                started_by=run.started_by,
                confirm=confirm,
            ),
            content_type="text/event-stream; charset=utf-8",
        )
        response["Cache-Control"] = "no-cache"
        # A reverse proxy (nginx) passes each event on at once instead of buffering the stream.
        response["X-Accel-Buffering"] = "no"
        return response


def _nothing_more() -> HttpResponse:
    """204: the client has the run's terminal event, which stops an EventSource from reconnecting."""
    nothing = HttpResponse(status=status.HTTP_204_NO_CONTENT)
    del nothing["Content-Type"]  # no body to label (Django labels every response text/html)
    return nothing


_RUN_STATUS = inline_serializer(
    "RunCancelling", {"run_id": drf_serializers.IntegerField(), "status": drf_serializers.CharField()}
)


@extend_schema(
    summary="Cancel a run, wherever it runs",
    description=(
        "The run stops within a second, in whatever server process runs it, and is recorded `cancelled`; "
        "its followers get `cancelled`. A run whose process died (orphaned, not resumed yet) is closed "
        "`cancelled` at once and never resumed (200, status `cancelled`). A run that has already ended is "
        "left as it is (200 with its status)."
    ),
    tags=["generation"],
    request=None,
    responses={
        202: _RUN_STATUS,
        400: OpenApiResponse(
            _GENERATION_ERROR, description="A body with a field: this operation reads none."
        ),
        200: OpenApiResponse(
            _RUN_STATUS,
            description="The run had already ended (or was orphaned and is now `cancelled`): its status.",
        ),
        404: _NOT_FOUND,
    },
)
class RunCancelApi(APIView):
    def post(self, request: Request, run_id: int) -> Response:
        run = _own_run(request, run_id)
        _body_none(request)
        if run.status != GenerationRun.Status.STREAMING:
            return Response({"run_id": run.pk, "status": run.status})
        if async_to_sync(run_cancel)(run_id=run.pk):
            # Orphaned (its process died): nothing ran it, and it was closed as cancelled at once.
            return Response({"run_id": run.pk, "status": GenerationRun.Status.CANCELLED})
        return Response({"run_id": run.pk, "status": "cancelling"}, status=status.HTTP_202_ACCEPTED)

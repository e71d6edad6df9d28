"""REST API for a writer's own stories, their screenplay versions and their generation runs.

Thin DRF views: parse with a serializer, call one selector or service, render. Another user's
objects are looked up through owner-filtered selectors, so they are 404, not 403.
"""

from __future__ import annotations

from typing import Any, cast

from asgiref.sync import async_to_sync
from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view, inline_serializer
from rest_framework import generics, status
from rest_framework import serializers as drf_serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer
from rest_framework.views import APIView

from stories import selectors, services
from stories.generation.events import DoneEvent, RunOutcome, SavedEvent, events_fold
from stories.generation.pipeline import generation_run
from stories.generation.regenerate import scene_regenerate_request_parse, scene_regenerate_run
from stories.generation.requests import generation_request_parse
from stories.models import GenerationRun, ScreenplayVersion, Story
from stories.serializers import (
    GenerationRunSerializer,
    ScreenplayVersionSerializer,
    ScreenplayVersionSummarySerializer,
    StorySerializer,
)

_NOT_FOUND = OpenApiResponse(description="No such object among yours.")
_BAD_REQUEST = OpenApiResponse(description="Invalid input; the body names each field's problem.")


@extend_schema_view(
    get=extend_schema(summary="Your stories, most recently updated first", tags=["stories"]),
    post=extend_schema(
        summary="Create a story (no versions yet)",
        tags=["stories"],
        responses={201: StorySerializer, 400: _BAD_REQUEST},
    ),
)
class StoryListCreateApi(generics.ListCreateAPIView):
    serializer_class = StorySerializer

    def get_queryset(self) -> QuerySet[Story]:
        return selectors.stories_for_user(user=self.request.user)

    def perform_create(self, serializer: BaseSerializer) -> None:
        data = serializer.validated_data
        # IsAuthenticated has run: the user is a real account, never AnonymousUser.
        owner = cast(AbstractBaseUser, self.request.user)
        serializer.instance = services.story_create(owner=owner, title=data["title"], plot=data["plot"])


@extend_schema_view(
    get=extend_schema(
        summary="One of your stories", tags=["stories"], responses={200: StorySerializer, 404: _NOT_FOUND}
    ),
    patch=extend_schema(
        summary="Change the title or plot",
        tags=["stories"],
        responses={200: StorySerializer, 400: _BAD_REQUEST, 404: _NOT_FOUND},
    ),
    delete=extend_schema(
        summary="Delete a story with its versions and cast (its runs are kept)",
        tags=["stories"],
        responses={204: None, 404: _NOT_FOUND},
    ),
)
class StoryDetailApi(generics.RetrieveUpdateDestroyAPIView):
    serializer_class = StorySerializer
    http_method_names = ["get", "patch", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[Story]:
        return selectors.stories_for_user(user=self.request.user)

    def perform_update(self, serializer: BaseSerializer) -> None:
        data = serializer.validated_data
        serializer.instance = services.story_update(
            story=cast(Story, serializer.instance), title=data.get("title"), plot=data.get("plot")
        )

    def perform_destroy(self, instance: Story) -> None:
        services.story_delete(story=instance)


def _own_story(view: generics.GenericAPIView) -> Story:
    # The story in the URL among the requesting user's stories; anyone else's is a 404.
    return selectors.story_get_for_user(user=view.request.user, story_id=view.kwargs["story_id"])


@extend_schema(
    summary="A story's screenplay versions, newest first",
    tags=["versions"],
    responses={200: ScreenplayVersionSummarySerializer(many=True), 404: _NOT_FOUND},
)
class StoryVersionListApi(generics.ListAPIView):
    serializer_class = ScreenplayVersionSummarySerializer
    queryset = ScreenplayVersion.objects.none()

    def get_queryset(self) -> list[ScreenplayVersion]:  # type: ignore[override]
        if getattr(self, "swagger_fake_view", False):
            return []
        return selectors.story_versions_list(story=_own_story(self))


@extend_schema(
    summary="One screenplay version with its content",
    tags=["versions"],
    responses={200: ScreenplayVersionSerializer, 404: _NOT_FOUND},
)
class StoryVersionDetailApi(generics.RetrieveAPIView):
    serializer_class = ScreenplayVersionSerializer
    queryset = ScreenplayVersion.objects.none()

    def get_object(self) -> ScreenplayVersion:
        return selectors.story_version_get(story=_own_story(self), number=self.kwargs["number"])


@extend_schema(
    summary="Your generation runs, newest first, with stage timings and token usage", tags=["runs"]
)
class GenerationRunListApi(generics.ListAPIView):
    serializer_class = GenerationRunSerializer
    queryset = GenerationRun.objects.none()

    def get_queryset(self) -> QuerySet[GenerationRun]:
        return selectors.run_list_for_user(user=self.request.user)


# --- Generation: POST /api/ai/generate-screenplay/ (issue 4) ---------------------------------------
# The old app's blocking endpoint, kept: the same pipeline as the WebSocket, folded to its end.

# A generation error (stories.exception_handlers) carries code/message/retryable/retry_after; a body
# DRF cannot parse or authenticate gets DRF's own {"detail": ...}. Both shapes are documented as one
# object with optional fields.
_GENERATION_ERROR = inline_serializer(
    "GenerationErrorBody",
    {
        "code": drf_serializers.CharField(required=False),
        "message": drf_serializers.CharField(required=False),
        "retryable": drf_serializers.BooleanField(required=False),
        "retry_after": drf_serializers.IntegerField(required=False),
        "detail": drf_serializers.CharField(required=False),
    },
)


@extend_schema(
    summary="Generate a screenplay, save it, return the story and its new version (blocking)",
    tags=["generation"],
    request=inline_serializer(
        "GenerateScreenplayRequest",
        {
            "plot": drf_serializers.CharField(),
            "personas": drf_serializers.ListField(child=drf_serializers.CharField(), required=False),
            "title": drf_serializers.CharField(required=False),
            "story_id": drf_serializers.IntegerField(required=False, allow_null=True),
            "model": drf_serializers.CharField(required=False, allow_null=True),
            "max_tokens": drf_serializers.IntegerField(required=False, allow_null=True),
            "mode": drf_serializers.ChoiceField(choices=["single", "parallel"], required=False),
        },
    ),
    responses={
        201: OpenApiResponse(description="The story (id, title, plot, url), the version, timings and usage."),
        **{code: _GENERATION_ERROR for code in (400, 401, 403, 422, 429, 500, 502, 503, 504)},
    },
)
class GenerateScreenplayView(APIView):
    """Generate a screenplay, save it, and return the story and its new version (blocking)."""

    def post(self, request: Request) -> Response:
        # A GenerationError (a bad request, a refusal, a failed run) is answered by
        # stories.exception_handlers with its code's status.
        generation = generation_request_parse(request.data)
        # Blocking: no text is shown as it streams, so none is merged either (generation.coalesce).
        run = generation_run(request=generation, user=request.user, coalesce=False)
        outcome = async_to_sync(events_fold)(run)
        return _generation_response(outcome)


def _generation_response(outcome: RunOutcome) -> Response:
    """201 with the story and the version the run saved."""
    saved = outcome.saved_event()
    version = selectors.story_version_saved_get(story_id=saved["story_id"], number=saved["version"])
    return Response(_generation_body(version, saved, outcome.done), status=status.HTTP_201_CREATED)


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
            "created_at": version.created_at.isoformat(),
        },
        "timings": done["timings"],
        "usage": done["usage"],
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
        "SceneRegenerateRequest",
        {
            "instructions": drf_serializers.CharField(required=False, allow_blank=True),
            "model": drf_serializers.CharField(required=False, allow_null=True),
            "max_tokens": drf_serializers.IntegerField(required=False, allow_null=True),
        },
    ),
    responses={
        201: OpenApiResponse(description="The story, the new version, timings and usage."),
        404: _NOT_FOUND,
        **{code: _GENERATION_ERROR for code in (400, 401, 422, 429, 500, 502, 503, 504)},
    },
)
class SceneRegenerateApi(APIView):
    def post(self, request: Request, story_id: int, number: int, index: int) -> Response:
        # Another user's story is a 404 here, as everywhere in the API.
        story = selectors.story_get_for_user(user=request.user, story_id=story_id)
        body: Any = request.data if hasattr(request.data, "keys") else {}
        fields = {key: body.get(key) for key in body}
        regenerate = scene_regenerate_request_parse(
            {**fields, "story_id": story.pk, "version": number, "index": index}
        )
        outcome = async_to_sync(events_fold)(scene_regenerate_run(request=regenerate, user=request.user))
        return _generation_response(outcome)

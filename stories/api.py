"""REST API for a writer's own stories, their screenplay versions and their generation runs.

Thin DRF views: parse with a serializer, call one selector or service, render. Another user's
objects are looked up through owner-filtered selectors, so they are 404, not 403.
"""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics
from rest_framework.serializers import BaseSerializer

from stories import selectors, services
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
        serializer.instance = services.story_create(
            owner=self.request.user, title=data["title"], plot=data["plot"]
        )


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
            story=serializer.instance, title=data.get("title"), plot=data.get("plot")
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
        return selectors.generation_runs_for_user(user=self.request.user)

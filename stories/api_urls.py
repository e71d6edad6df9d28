from __future__ import annotations

from django.urls import path

from stories import api
from stories.exports.views import ScreenplayVersionExportApi

app_name = "stories-api"

urlpatterns = [
    path("stories/", api.StoryListCreateApi.as_view(), name="story-list"),
    path("stories/import/", api.StoryImportApi.as_view(), name="story-import"),
    path("stories/<int:pk>/", api.StoryDetailApi.as_view(), name="story-detail"),
    path("stories/<int:story_id>/diff/", api.StoryDiffApi.as_view(), name="story-diff"),
    path("stories/<int:story_id>/versions/", api.StoryVersionListApi.as_view(), name="version-list"),
    path(
        "stories/<int:story_id>/versions/<int:number>/",
        api.StoryVersionDetailApi.as_view(),
        name="version-detail",
    ),
    path(
        "stories/<int:story_id>/versions/<int:number>/restore/",
        api.StoryVersionRestoreApi.as_view(),
        name="version-restore",
    ),
    path(
        "stories/<int:story_id>/versions/<int:number>/stats/",
        api.StoryVersionStatsApi.as_view(),
        name="version-stats",
    ),
    path(
        "stories/<int:story_id>/versions/<int:number>/export/",
        ScreenplayVersionExportApi.as_view(),
        name="version-export",
    ),
    path(
        "stories/<int:story_id>/versions/<int:number>/scenes/<int:index>/regenerate/",
        api.SceneRegenerateApi.as_view(),
        name="scene-regenerate",
    ),
    path("runs/", api.GenerationRunListApi.as_view(), name="run-list"),
    path("runs/<int:run_id>/", api.GenerationRunDetailApi.as_view(), name="run-detail"),
    path("runs/<int:run_id>/events/", api.RunEventsApi.as_view(), name="run-events"),
    path("runs/<int:run_id>/cancel/", api.RunCancelApi.as_view(), name="run-cancel"),
    path("ai/generate-screenplay/", api.GenerateScreenplayView.as_view(), name="generate-screenplay"),
]

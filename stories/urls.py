from __future__ import annotations

from django.urls import path

from stories import views

app_name = "stories"

urlpatterns = [
    path("", views.story_list, name="story-list"),
    path("stories/new/", views.story_create, name="story-create"),
    path("stories/import/", views.story_import, name="story-import"),
    path("stories/import/confirm/", views.story_import_confirm, name="story-import-confirm"),
    path("stories/<int:story_id>/", views.story_detail, name="story-detail"),
    path("stories/<int:story_id>/edit/", views.story_edit_latest, name="story-edit-latest"),
    path("stories/<int:story_id>/versions/<int:number>/edit/", views.story_edit, name="story-edit"),
    path("stories/<int:story_id>/preview/", views.story_preview, name="story-preview"),
    path(
        "stories/<int:story_id>/versions/<int:number>/restore/", views.version_restore, name="version-restore"
    ),
    path("stories/<int:story_id>/versions/<int:number>/export/", views.version_export, name="version-export"),
    path("stories/<int:story_id>/diff/", views.story_diff, name="story-diff"),
    path("stories/<int:story_id>/settings/", views.story_settings, name="story-settings"),
    path("stories/<int:story_id>/delete/", views.story_delete, name="story-delete"),
    path(
        "stories/<int:story_id>/versions/<int:number>/scenes/<int:index>/regenerate/",
        views.scene_regenerate,
        name="scene-regenerate",
    ),
    path("runs/", views.run_list, name="run-list"),
    path("runs/<int:run_id>/", views.run_detail, name="run-detail"),
]

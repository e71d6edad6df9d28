from __future__ import annotations

from django.urls import path

from stories import views

app_name = "stories"

urlpatterns = [
    path("", views.story_list, name="story-list"),
    path("stories/new/", views.story_create, name="story-create"),
    path("stories/<int:story_id>/", views.story_detail, name="story-detail"),
    path(
        "stories/<int:story_id>/versions/<int:number>/scenes/<int:index>/regenerate/",
        views.scene_regenerate,
        name="scene-regenerate",
    ),
    path("runs/", views.run_list, name="run-list"),
]

from __future__ import annotations

from django.urls import URLPattern, path

from stories.api import GenerateScreenplayView

app_name = "stories-api"

urlpatterns: list[URLPattern] = [
    path("ai/generate-screenplay/", GenerateScreenplayView.as_view(), name="generate-screenplay"),
]

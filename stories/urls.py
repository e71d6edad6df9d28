from __future__ import annotations

from django.urls import path
from django.views.generic import RedirectView

app_name = "stories"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/"), name="story-list"),
]

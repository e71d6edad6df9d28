from __future__ import annotations

from django.urls import URLPattern, path

from personas import api

app_name = "personas"

# "contexts/" comes before "<name>/" so that it is never read as a persona called "contexts".
urlpatterns: list[URLPattern] = [
    path("personas/", api.PersonaListView.as_view(), name="list"),
    path("personas/contexts/", api.PersonaContextsView.as_view(), name="contexts"),
    path("personas/<str:name>/", api.PersonaDetailView.as_view(), name="detail"),
    path("personas/<str:name>/context/", api.PersonaContextView.as_view(), name="context"),
]

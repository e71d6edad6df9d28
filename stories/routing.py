from __future__ import annotations

from django.urls import URLPattern, path

from stories.consumers import GenerateConsumer

websocket_urlpatterns: list[URLPattern] = [
    path("ws/generate/", GenerateConsumer.as_asgi()),  # type: ignore[arg-type]
]

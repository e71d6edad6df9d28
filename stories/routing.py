from __future__ import annotations

from django.urls import URLPattern, path

from stories.consumers import GenerateConsumer

# Django's reverse() does not see Channels' routes: pages get the socket's path from here.
GENERATE_WS_PATH = "/ws/generate/"

websocket_urlpatterns: list[URLPattern] = [
    path(GENERATE_WS_PATH.removeprefix("/"), GenerateConsumer.as_asgi()),  # type: ignore[arg-type]
]

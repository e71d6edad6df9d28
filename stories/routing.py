from __future__ import annotations

from django.urls import URLPattern, path, re_path

from stories.consumers import GenerateConsumer
from storyproject.middleware import websocket_refuse

# Django's reverse() does not see Channels' routes: pages get the socket's path from here.
GENERATE_WS_PATH = "/ws/generate/"

websocket_urlpatterns: list[URLPattern] = [
    path(GENERATE_WS_PATH.removeprefix("/"), GenerateConsumer.as_asgi()),
    # Any other path: a refused handshake (403). Channels' URLRouter raised "No route found", which
    # daphne answered 500 with an ERROR traceback in the log, for every such handshake.
    re_path(r"", websocket_refuse),  # type: ignore[arg-type]
]

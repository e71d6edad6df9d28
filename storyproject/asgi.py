"""ASGI entry point: Django for HTTP, Channels for the WebSocket, both behind daphne."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "storyproject.settings")
# Django must be set up before the consumers (and their models) are imported.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.utils.module_loading import import_string  # noqa: E402

from stories.routing import websocket_urlpatterns  # noqa: E402
from stories.ws_auth import websocket_stack  # noqa: E402

# Load the model back-end now rather than in the first writer's generation: importing the anthropic
# SDK takes seconds on a busy machine (bench/results/flow.md).
import_string(settings.STORY_BACKEND)

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Same-origin check (cross-site WebSocket hijacking), then session cookie or token auth.
        "websocket": websocket_stack(URLRouter(websocket_urlpatterns)),
    }
)

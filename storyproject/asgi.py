"""ASGI entry point: Django for HTTP, Channels for the WebSocket, both behind daphne."""

from __future__ import annotations

import os
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "storyproject.settings")
# Django must be set up before the consumers (and their models) are imported.
django.setup(set_prefix=False)

from storyproject.handlers import SyncStackASGIHandler  # noqa: E402

django_asgi_app = SyncStackASGIHandler()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from stories.generation.backends.registry import backend_class_load  # noqa: E402
from stories.generation.resume import orphans_watch_start  # noqa: E402
from stories.metrics import loop_lag_watch_start  # noqa: E402
from stories.routing import websocket_urlpatterns  # noqa: E402
from stories.ws_auth import websocket_stack  # noqa: E402
from storyproject.runtime import (  # noqa: E402
    autobahn_connection_log_unformatted,
    daphne_close_reason_sent,
    daphne_form_parsing_off,
    daphne_long_request_refused,
    daphne_reason_phrases_known,
    daphne_request_body_bounded,
    server_runtime_tune,
)
from storyproject.send_buffer import unsent_extension_add  # noqa: E402
from storyproject.ws_inbound import inbound_bounded  # noqa: E402

# Load the model back-end now: a wrong STORY_BACKEND fails at start-up, and the first writer does not
# wait seconds for the SDK to import (bench/results/flow.md).
backend_class_load()

router = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Same-origin check (cross-site WebSocket hijacking), then session cookie or token auth.
        "websocket": websocket_stack(URLRouter(websocket_urlpatterns)),
    }
)
# daphne hands bodies on as they came: Twisted's own parse of POST forms held the event loop.
daphne_form_parsing_off()
# Twisted kept a whole body, whatever its size, before the application could answer 413.
daphne_request_body_bounded()
# Twisted closed a connection whose request line was too long without a word (and a header section: 400).
daphne_long_request_refused()
# daphne sent a WebSocket close's code without its reason (docs/protocol.md's close codes name reasons).
daphne_close_reason_sent()
# daphne's status lines said "429 Unknown Status": Twisted has no phrase for some statuses.
daphne_reason_phrases_known()
# autobahn pretty-printed its settings at every WebSocket connection for a debug line nobody logs.
autobahn_connection_log_unformatted()
# Start-up is done: the GIL's switch interval and the garbage collector set for serving.
server_runtime_tune()


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The router, with this process's orphaned-run watcher and its event loop's lag watcher (metrics)
    started on the first connection, and a WebSocket's unsent bytes in its scope and its incoming messages
    bounded (storyproject/ws_inbound.py).

    daphne speaks no ASGI lifespan, so the first request (a probe, a page) is the earliest moment the
    server's event loop runs app code. Starting them costs one check per connection after that.
    """
    if not _watch_started:
        _watch_started.append(orphans_watch_start())
        loop_lag_watch_start()
    if scope["type"] == "websocket":
        # How much of what the socket sent its client has not read (storyproject/send_buffer.py).
        scope = unsent_extension_add(scope, send)
        await inbound_bounded(router, scope, receive, send)
        return
    await router(scope, receive, send)


# Set once the watchers were started or found turned off (STORY_RUN_RECOVERY and the metrics settings,
# read at the first request).
_watch_started: list[bool] = []

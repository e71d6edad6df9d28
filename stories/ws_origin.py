"""Cross-site WebSocket hijacking protection: the handshake's Origin must be this very site.

Channels' AllowedHostsOriginValidator accepts any Origin whose *host name* is in ALLOWED_HOSTS, on any
port, so a page served by another program on the same machine (http://127.0.0.1:9999) could open a
socket with the writer's session cookie (cookies are not isolated by port). It also reads
ALLOWED_HOSTS once, at import. This validator replaces it with Django's CSRF rule, read per handshake:
the Origin's host must be in ALLOWED_HOSTS and its host and port must match the Host the browser
connected to, unless the Origin is listed in CSRF_TRUSTED_ORIGINS. A missing, "null" or foreign Origin
is refused. (The scheme is not compared: behind a TLS proxy the server may see ws while the page is
https, and one host and port cannot serve both.)
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import validate_host

from storyproject.middleware import websocket_refuse

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


def _host_port(netloc: str, default_port: int) -> tuple[str, int] | None:
    try:
        parts = urlsplit("//" + netloc)
        return (parts.hostname or "").lower(), parts.port or default_port
    except ValueError:
        return None


def origin_allowed(headers: list[tuple[bytes, bytes]]) -> bool:
    """True when the Origin is an allowed host and names the scheme-host-port the client connected to.

    Settings are read on every handshake, so ALLOWED_HOSTS and CSRF_TRUSTED_ORIGINS apply as they are.
    """
    origin = _header(headers, b"origin")
    if origin is None:
        return False
    if origin.lower() in {trusted.lower() for trusted in settings.CSRF_TRUSTED_ORIGINS}:
        return True
    try:
        parsed = urlsplit(origin)
        origin_hostname = parsed.hostname
    except ValueError:
        return False
    default_port = _DEFAULT_PORTS.get(parsed.scheme)
    if default_port is None or not origin_hostname:
        return False
    if not validate_host(origin_hostname, settings.ALLOWED_HOSTS):
        return False
    host = _header(headers, b"host")
    if host is None:
        # Every browser sends Host; only in-process test clients omit it. ALLOWED_HOSTS applied above.
        return True
    origin_host = _host_port(parsed.netloc, default_port)
    return origin_host is not None and origin_host == _host_port(host, default_port)


class SameOriginValidator:
    """ASGI wrapper that refuses a WebSocket handshake whose Origin fails ``origin_allowed``."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not origin_allowed(scope.get("headers", [])):
            return await websocket_refuse(scope, receive, send)
        return await self.application(scope, receive, send)

"""Content-Security-Policy on every response Django renders, with a fresh nonce per request.

Templates put ``nonce="{{ request.csp_nonce }}"`` on the few inline <script>/<style> blocks they need;
everything else must come from our own origin. No CDN is allowed: static files, Swagger UI (from
drf-spectacular-sidecar) and the admin are all served by the app itself.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponseBase
from django.utils.decorators import sync_and_async_middleware

CSP_HEADER = "Content-Security-Policy"


def csp_policy(*, nonce: str, host: str | None) -> str:
    # Browsers before CSP level 3 do not let 'self' cover ws:/wss:, so the host is named explicitly.
    sockets = f" ws://{host} wss://{host}" if host else ""
    directives = [
        "default-src 'self'",
        f"script-src 'self' 'nonce-{nonce}'",
        f"style-src 'self' 'nonce-{nonce}'",
        "img-src 'self' data:",
        "font-src 'self'",
        f"connect-src 'self'{sockets}",
        "frame-ancestors 'none'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
    ]
    return "; ".join(directives)


def _host(request: HttpRequest) -> str | None:
    try:
        return request.get_host()
    except DisallowedHost:
        return None


def _apply(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    if CSP_HEADER not in response:
        response[CSP_HEADER] = csp_policy(nonce=request.csp_nonce, host=_host(request))  # type: ignore[attr-defined]
    return response


@sync_and_async_middleware
def content_security_policy_middleware(
    get_response: Callable[[HttpRequest], HttpResponseBase | Awaitable[HttpResponseBase]],
) -> Callable[[HttpRequest], HttpResponseBase | Awaitable[HttpResponseBase]]:
    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> HttpResponseBase:
            request.csp_nonce = secrets.token_urlsafe(18)  # type: ignore[attr-defined]
            response = await get_response(request)  # type: ignore[misc]
            return _apply(request, response)

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponseBase:
        request.csp_nonce = secrets.token_urlsafe(18)  # type: ignore[attr-defined]
        response = get_response(request)
        return _apply(request, response)  # type: ignore[arg-type]

    return middleware

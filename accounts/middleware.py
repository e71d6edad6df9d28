"""Sets the login throttle's device cookie (accounts.throttle) on the response to a successful login."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.utils.deprecation import MiddlewareMixin

from accounts.throttle import DEVICE_COOKIE


class LoginDeviceCookieMiddleware(MiddlewareMixin):
    """A login form that signed someone in (the site's or the admin's) leaves the cookie's value on the
    request; it is set here, where the response is, with the session cookie's ``Secure`` setting."""

    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        value = getattr(request, "login_device_cookie", None)
        if value:
            response.set_cookie(
                DEVICE_COOKIE,
                value,
                max_age=settings.LOGIN_DEVICE_COOKIE_SECONDS,
                secure=settings.SESSION_COOKIE_SECURE,
                httponly=True,
                samesite="Lax",
            )
        return response

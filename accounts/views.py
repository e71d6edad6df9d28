"""The login page, and the account page: a writer creates, replaces and revokes the API token scripts use,
and changes their password."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm, PasswordChangeForm
from django.contrib.auth.views import LoginView, PasswordChangeView
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from accounts import selectors, services
from accounts.forms import ThrottledAuthenticationForm, ThrottledPasswordChangeForm
from accounts.throttle import device_cookie_value


class ThrottledLoginView(LoginView):
    """Django's login page with its throttled form; a lockout is answered 429 with Retry-After."""

    authentication_form = ThrottledAuthenticationForm

    def form_invalid(self, form: AuthenticationForm) -> HttpResponse:
        return _refusal_answered(form, super().form_invalid(form))


def _refusal_answered(form: Any, response: HttpResponse) -> HttpResponse:
    """A form refused by the login throttle (its ``refusal``) answered 429 with Retry-After."""
    refusal = getattr(form, "refusal", None)
    if refusal is not None:
        response.status_code = 429
        response["Retry-After"] = str(refusal.retry_after)
    return response


@never_cache
@login_required
@require_http_methods(["GET", "HEAD"])
def account(request: HttpRequest) -> HttpResponse:
    token = selectors.api_token_get(user=request.user)  # type: ignore[arg-type]
    return render(request, "account.html", {"token": token, "new_key": None})


@never_cache
@login_required
@require_POST
def api_token_create(request: HttpRequest) -> HttpResponse:
    token = services.api_token_create(user=request.user)  # type: ignore[arg-type]
    # The key is shown in this response only (not stored in a message cookie); never_cache keeps it
    # out of shared caches and the browser's back-forward history.
    return render(request, "account.html", {"token": token, "new_key": token.key})


@login_required
@require_POST
def api_token_revoke(request: HttpRequest) -> HttpResponse:
    if services.api_token_revoke(user=request.user):  # type: ignore[arg-type]
        messages.success(request, "Your API token was revoked; scripts using it can no longer sign in.")
    else:
        messages.info(request, "You had no API token.")
    return redirect("accounts:account")


class PasswordChange(PasswordChangeView):
    """Django's password change (signed in; the old password asked; the validators of
    AUTH_PASSWORD_VALIDATORS): this session stays signed in, every other session of the writer is
    signed out, and their open sockets close within ws_sessions.WATCH_SECONDS (docs/security.md)."""

    form_class = ThrottledPasswordChangeForm
    template_name = "registration/password_change_form.html"
    success_url = reverse_lazy("accounts:account")

    def get_form_kwargs(self) -> dict[str, Any]:
        return {**super().get_form_kwargs(), "request": self.request}

    def form_valid(self, form: PasswordChangeForm) -> HttpResponse:
        response = super().form_valid(form)
        # The new password retires the account's device cookies (accounts.throttle), this browser's too:
        # it gets one for the new password, as a login would give it.
        self.request.login_device_cookie = device_cookie_value(user=form.user)  # type: ignore[attr-defined]
        messages.success(self.request, "Your password was changed; your other sessions were signed out.")
        return response

    def form_invalid(self, form: PasswordChangeForm) -> HttpResponse:
        response = super().form_invalid(form)
        response.status_code = 400
        return _refusal_answered(form, response)

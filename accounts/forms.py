"""The login forms (the site's and the admin's) and the password change's old password, throttled by
accounts.throttle."""

from __future__ import annotations

from typing import Any

from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm, PasswordChangeForm
from django.core.exceptions import ValidationError

from accounts.throttle import (
    DEVICE_COOKIE,
    LoginAttempt,
    LoginRefusal,
    device_cookie_value,
    login_attempt_begin,
    login_attempt_failed,
    login_attempt_succeeded,
    login_attempt_void,
)


def attempt_begin(form: Any, *, username: str) -> LoginAttempt:
    """Count a password check of ``username`` from ``form.request``'s address before it is made; a lock
    is kept as ``form.refusal`` and raised as the form's error, the password unchecked."""
    address = str(form.request.META.get("REMOTE_ADDR", "")) if form.request else ""
    device = str(form.request.COOKIES.get(DEVICE_COOKIE, "")) if form.request else ""
    attempt = login_attempt_begin(username=username, address=address, device=device)
    if isinstance(attempt, LoginRefusal):
        form.refusal = attempt
        raise ValidationError(attempt.message, code="login_throttled")
    return attempt


class ThrottledLoginMixin:
    """Refuse a locked account or address before the password is checked; count each attempt first."""

    request: Any
    cleaned_data: dict[str, Any]
    refusal: LoginRefusal | None = None

    def clean(self) -> dict[str, Any]:
        username = str(self.cleaned_data.get("username") or "")
        if not username:  # the field's own error says so; nothing is checked, nothing counted
            return super().clean()  # type: ignore[misc]
        attempt = attempt_begin(self, username=username)
        try:
            cleaned: dict[str, Any] = super().clean()  # type: ignore[misc]
        except ValidationError as error:
            # The admin's form refuses a right password of an account that is not staff with the same
            # "invalid_login" (AdminAuthenticationForm.confirm_login_allowed): not a guess, and counting
            # it locked a writer out of the site after a few tries at /admin/. Only a password that
            # authenticated no one (``user_cache`` None) is a failure.
            if error.code == "invalid_login" and getattr(self, "user_cache", None) is None:
                login_attempt_failed(attempt)
            else:
                login_attempt_void(attempt)
            raise
        user = getattr(self, "user_cache", None)
        if user is None:
            # No password was checked: AuthenticationForm.clean authenticates only with a password, and a
            # blank one is the field's own error. Not a guess, and above all not a success: counted as one,
            # it cleared the account's count between guesses and gave a device cookie for any username.
            login_attempt_void(attempt)
            return cleaned
        login_attempt_succeeded(attempt)
        if self.request is not None:
            # This browser is now known to the account (accounts.throttle): LoginDeviceCookieMiddleware
            # sets the cookie on the response.
            self.request.login_device_cookie = device_cookie_value(user=user)
        return cleaned


class ThrottledAuthenticationForm(ThrottledLoginMixin, AuthenticationForm):
    pass


class ThrottledAdminAuthenticationForm(ThrottledLoginMixin, AdminAuthenticationForm):
    pass


class ThrottledPasswordChangeForm(PasswordChangeForm):
    """The password change's old password is checked as a login of the account is (accounts.throttle):
    a signed-in session, someone else's left open, cannot guess it without limit; a lock refuses it."""

    refusal: LoginRefusal | None = None

    def __init__(self, user: Any, *args: Any, request: Any = None, **kwargs: Any) -> None:
        super().__init__(user, *args, **kwargs)
        self.request = request

    def clean_old_password(self) -> str:
        attempt = attempt_begin(self, username=self.user.get_username())
        try:
            old_password: str = super().clean_old_password()
        except ValidationError:
            login_attempt_failed(attempt)
            raise
        login_attempt_succeeded(attempt)
        return old_password

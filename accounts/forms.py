"""The login forms (the site's and the admin's), throttled by accounts.throttle."""

from __future__ import annotations

from typing import Any

from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from accounts.throttle import LoginRefusal, login_failure_record, login_refusal, login_success_record


class ThrottledLoginMixin:
    """Refuse a locked account or address before the password is checked; count each failure."""

    request: Any
    cleaned_data: dict[str, Any]
    refusal: LoginRefusal | None = None

    def clean(self) -> dict[str, Any]:
        username = str(self.cleaned_data.get("username") or "")
        address = str(self.request.META.get("REMOTE_ADDR", "")) if self.request else ""
        self.refusal = login_refusal(username=username, address=address)
        if self.refusal is not None:
            raise ValidationError(self.refusal.message, code="login_throttled")
        try:
            cleaned: dict[str, Any] = super().clean()  # type: ignore[misc]
        except ValidationError as error:
            if username and error.code == "invalid_login":
                login_failure_record(username=username, address=address)
            raise
        login_success_record(username=username)
        return cleaned


class ThrottledAuthenticationForm(ThrottledLoginMixin, AuthenticationForm):
    pass


class ThrottledAdminAuthenticationForm(ThrottledLoginMixin, AdminAuthenticationForm):
    pass

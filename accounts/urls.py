from __future__ import annotations

from django.urls import path

from accounts import views

app_name = "accounts"

urlpatterns = [
    path("", views.account, name="account"),
    path("token/", views.api_token_create, name="token-create"),
    path("token/revoke/", views.api_token_revoke, name="token-revoke"),
    path("password/", views.PasswordChange.as_view(), name="password-change"),
]

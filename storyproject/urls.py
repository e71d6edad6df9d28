from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.core.exceptions import BadRequest
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import render
from django.template import loader
from django.templatetags.static import static
from django.urls import include, path
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from accounts.forms import ThrottledAdminAuthenticationForm
from accounts.views import ThrottledLoginView
from storyproject import health
from storyproject.middleware import bad_request_response
from storyproject.pagination import PageNotFound
from storyproject.parsers import JsonErrors

# The admin's login takes the same throttle as the site's (accounts/throttle.py).
admin.site.login_form = ThrottledAdminAuthenticationForm


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponseBase:
    """Django's 400 (handler400), with the message a view raised ``BadRequest`` with: what to fix.

    Other causes (a ``SuspiciousOperation`` such as a disallowed host) keep a plain message: theirs can
    name the server's configuration.
    """
    said = str(exception) if type(exception) is BadRequest else ""
    return bad_request_response(request, said or "The request could not be understood.", code="bad_request")


handler400 = bad_request


def not_found(request: HttpRequest, exception: Exception) -> HttpResponseBase:
    """Django's 404 (handler404): JSON for the API and for a script asking for JSON (the editor's
    preview), the site's page elsewhere. Neither says whether the object exists for someone else; a list's
    page number that names no page (``PageNotFound``) is said, as it tells nothing of anyone's objects."""
    page = exception if isinstance(exception, PageNotFound) else None
    if _json_wanted(request):
        detail = page.message if page is not None else "Not found."
        return JsonResponse({"detail": detail, "code": "not_found"}, status=404)
    return render(request, "not_found.html", {"page_problem": page}, status=404)


def server_error(request: HttpRequest) -> HttpResponseBase:
    """Django's 500 (handler500): a page that needs nothing that may have failed (no user, no request
    context); JSON for the API. The error itself is in the server's log, never in the answer."""
    if _json_wanted(request):
        return JsonResponse(
            {"detail": "The server failed; try again later.", "code": "server_error"}, status=500
        )
    return HttpResponse(loader.get_template("server_error.html").render(), status=500)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponseBase:
    """Django's CSRF failure (``CSRF_FAILURE_VIEW``): what happened and what to do, in the site's page,
    instead of Django's technical one. Most often the form was opened before the writer signed in again
    (in another tab): signing in rotates the token the form carries. ``reason`` is Django's, for the log."""
    message = (
        "This form was opened before you signed in again (in another tab, perhaps), so it can no longer "
        "be sent. Go back, reload the page, and send it again: nothing was changed. (If this happens every "
        "time, your browser is refusing this site's cookies.)"
    )
    if _json_wanted(request):
        return JsonResponse({"detail": message, "code": "csrf_failed"}, status=403)
    back = request.META.get("HTTP_REFERER", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        back = ""
    return render(request, "csrf_failure.html", {"message": message, "back": back}, status=403)


def _json_wanted(request: HttpRequest) -> bool:
    return request.path.startswith("/api/") or not request.accepts("text/html")


handler404 = not_found
handler500 = server_error


class SchemaView(JsonErrors, SpectacularAPIView):
    """The OpenAPI schema (``/api/schema/``), YAML or JSON; its errors JSON."""


class SwaggerUiView(SpectacularSwaggerSplitView):
    """Swagger UI (``/api/docs/``), whose OPTIONS says what it allows, as a Django view's does.

    DRF answers OPTIONS with the view's metadata, rendered by the view's renderer: this view renders HTML
    from a template only, so OPTIONS raised TemplateDoesNotExist, a 500 for anyone.
    """

    # Django's answer to OPTIONS, not DRF's Response: there is nothing to render.
    def options(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:  # type: ignore[override]
        return HttpResponse()  # DRF adds Allow


class FaviconRedirect(RedirectView):
    """``/favicon.ico``, which browsers ask for on pages that name no icon (the admin, Swagger UI)."""

    permanent = True

    def get_redirect_url(self, *args: Any, **kwargs: Any) -> str:
        return static("favicon.svg")  # per request: the manifest's hashed name once collected


urlpatterns = [
    # For probes and Prometheus (storyproject/health.py): no login, no session.
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
    path("favicon.ico", FaviconRedirect.as_view(), name="favicon"),
    path("admin/", admin.site.urls),
    path("accounts/login/", ThrottledLoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("account/", include("accounts.urls")),
    path("api/schema/", SchemaView.as_view(), name="api-schema"),
    path("api/docs/", SwaggerUiView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/", include("personas.urls")),
    path("api/", include("stories.api_urls")),
    path("", include("stories.urls")),
]

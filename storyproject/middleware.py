"""Project middleware: a Content-Security-Policy on every response, and a 400 for text no view can use.

Content-Security-Policy: on every response Django renders, with a fresh nonce per request. Templates put ``nonce="{{ request.csp_nonce }}"`` on the few inline <script>/<style> blocks they need;
everything else must come from our own origin. No CDN is allowed: static files, Swagger UI (from
drf-spectacular-sidecar) and the admin are all served by the app itself.
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.options import IS_FACETS_VAR, IS_POPUP_VAR, TO_FIELD_VAR
from django.contrib.admin.views.main import ALL_VAR, ERROR_FLAG, ORDER_VAR, PAGE_VAR, SEARCH_VAR
from django.core.exceptions import DisallowedHost, FieldDoesNotExist, TooManyFieldsSent, ValidationError
from django.db import DataError, NotSupportedError, models
from django.db.models.constants import LOOKUP_SEP
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse, QueryDict
from django.http.cookie import parse_cookie
from django.http.response import HttpResponseRedirectBase
from django.middleware.common import CommonMiddleware
from django.shortcuts import render
from django.urls import reverse
from django.utils.decorators import sync_and_async_middleware
from django.utils.deprecation import MiddlewareMixin
from django.utils.http import escape_leading_slashes
from django.utils.text import smart_split

from storyproject.parsers import codec_strict
from storyproject.untrusted import form_body_is_text, text_problem

CSP_HEADER = "Content-Security-Policy"
logger = logging.getLogger(__name__)


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
            response = await get_response(request)
            return _apply(request, response)

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponseBase:
        request.csp_nonce = secrets.token_urlsafe(18)  # type: ignore[attr-defined]
        response = get_response(request)
        return _apply(request, response)  # type: ignore[arg-type]

    return middleware


class UnstorableTextMiddleware(MiddlewareMixin):
    """Answer 400, naming the problem, when the URL, a cookie or a header holds NUL or a lone surrogate.

    PostgreSQL refuses NUL in text, so ``/api/personas/a%00b/``, ``/?q=a%00b`` or a session cookie
    ``"abcdefgh\\000"`` (an octal escape the cookie parser decodes) were 500s as soon as a view or the
    session store queried with them. One check here, before any of them runs, instead of one per view.
    """

    def process_request(self, request: HttpRequest) -> HttpResponseBase | None:
        try:
            query = request.GET
        except TooManyFieldsSent:
            # Answered here: under DEBUG, Django's error page read the query again, raised again, and
            # the exception left the application (daphne's bare 500).
            limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
            message = f"The request has more than {limit} query parameters (DATA_UPLOAD_MAX_NUMBER_FIELDS)."
            return bad_request_response(request, message, code="bad_request")
        problem = unstorable_text_problem(
            path=request.path, query=query, cookies=request.COOKIES, headers=request.headers.items()
        )
        return None if problem is None else bad_request_response(request, problem)


class FormTextMiddleware(MiddlewareMixin):
    """A page's form (urlencoded or multipart) whose fields are not text in its encoding (``title=caf%E9``,
    Latin-1), or whose charset is no text encoding at all (``charset=zlib``), is a 400 saying so, as such
    an API body is (``storyproject.parsers.StrictFormParser``, ``StrictMultiPartParser``): Django read it
    with replacement characters, and a story renamed "caf\ufffd" lost its letter without a word. A
    browser sends a page's forms in the page's encoding; a script may not."""

    def process_request(self, request: HttpRequest) -> HttpResponseBase | None:
        if request.method != "POST" or request.path.startswith("/api/"):  # the API's parsers answer for it
            return None
        encoding = request.encoding or settings.DEFAULT_CHARSET
        if request.content_type in _FORM_TYPES and codec_strict(encoding) is None:
            # charset=zlib (a codec, not a text encoding): decoding the form raised LookupError, a 500.
            message = f'The form\'s charset, "{encoding}", is not a text encoding: send it as UTF-8.'
            return bad_request_response(request, message, code="bad_request")
        if request.content_type == "multipart/form-data":
            if _multipart_form_is_text(request, encoding):
                return None
            message = f"The form is not {encoding} text: send each field's {encoding} bytes."
        elif request.content_type == "application/x-www-form-urlencoded":
            if form_body_is_text(request.body, encoding):
                return None
            message = f"The form is not {encoding} text: send each field's {encoding} bytes, percent-encoded."
        else:
            return None
        return bad_request_response(request, message, code="bad_request")


_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def _multipart_form_is_text(request: HttpRequest, encoding: str) -> bool:
    """Whether a multipart form's field values (and names, and file names) are text in ``encoding``.

    Django reads them with ``errors="replace"`` (MultiPartParser): the import page's pasted Fountain, or
    its confirmation's screenplay, in Latin-1 was saved with replacement characters, where the API's
    import refuses the same form. The form is parsed here, once, with the API's strict codec (the CSRF
    check would parse it next); what it parsed stays, under the request's own encoding."""
    strict = codec_strict(encoding)
    if strict is None:
        return False  # no text encoding (FormTextMiddleware refuses it first)
    own = request._encoding  # type: ignore[attr-defined]  # None: settings.DEFAULT_CHARSET
    request.encoding = strict  # drops what was parsed with another encoding
    try:
        request.POST  # noqa: B018  # parsed now
    except UnicodeDecodeError:
        return False
    finally:
        # Not through the setter, which would drop the form just parsed.
        request._encoding = own  # type: ignore[attr-defined]
    request.POST.encoding = encoding
    return True


class PermanentRedirectKeepingMethod(HttpResponseRedirectBase):
    """308: the client asks the new URL again with the same method and body (301 lets it send a GET)."""

    status_code = 308


class ApiSlashCommonMiddleware(CommonMiddleware):
    """Django's CommonMiddleware, except that a write to an API URL without its trailing slash
    (``POST /api/stories``) is redirected with 308, which keeps its method and body.

    Django answers it with 301, which clients follow with a GET: the write was a 200 listing the stories,
    and nothing was saved. Under DEBUG, Django raises RuntimeError instead (it cannot keep the body
    through a 301): a 500.
    """

    def get_full_path_with_slash(self, request: HttpRequest) -> str:
        if _api_write(request):
            return escape_leading_slashes(request.get_full_path(force_append_slash=True))
        return super().get_full_path_with_slash(request)

    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if response.status_code == 404 and _api_write(request) and self.should_redirect_with_slash(request):
            return PermanentRedirectKeepingMethod(self.get_full_path_with_slash(request))
        return super().process_response(request, response)


def _api_write(request: HttpRequest) -> bool:
    return request.path.startswith("/api/") and request.method in ("DELETE", "POST", "PUT", "PATCH")


class AdminRegexFilterMiddleware(MiddlewareMixin):
    """Answer 400 to an admin list filtered by a regular expression (``?title__regex=(``).

    The admin lets staff filter a list by any lookup of a field named in the query string, and the
    database compiles a regex only when the list is read: an invalid one was a 500 (SQLite's REGEXP
    function raises, PostgreSQL answers "invalid regular expression"). The admin's own filters and
    search never use one.
    """

    def process_request(self, request: HttpRequest) -> HttpResponseBase | None:
        if (
            request.GET
            and request.path.startswith(reverse("admin:index"))
            and any(key.rsplit("__", 1)[-1] in ("regex", "iregex") for key in request.GET)
        ):
            return bad_request_response(
                request, "The admin's lists cannot be filtered by a regular expression."
            )
        return None


# Far more words than a search needs; far fewer than SQLite's limit on one query's conditions (each word
# is one more: past about a thousand, "Expression tree is too large").
ADMIN_SEARCH_MAX_WORDS = 50


class AdminSearchWordsMiddleware(MiddlewareMixin):
    """Answer 400 to an admin search of more than ADMIN_SEARCH_MAX_WORDS words.

    Every admin list's search box (``?q=``) and the autocomplete behind a picker (``?term=``) make each
    word a condition: a thousand of them were a 500 on SQLite in every list, ours and Django's own (users,
    groups), and several seconds of a worker on PostgreSQL.
    """

    def process_request(self, request: HttpRequest) -> HttpResponseBase | None:
        if not request.GET or not request.path.startswith(reverse("admin:index")):
            return None
        searches = [*request.GET.getlist(SEARCH_VAR), *request.GET.getlist("term")]
        if any(len(list(smart_split(search))) > ADMIN_SEARCH_MAX_WORDS for search in searches):
            return bad_request_response(
                request, f"A search in the admin has at most {ADMIN_SEARCH_MAX_WORDS} words; use fewer."
            )
        return None


# The query parameters an admin list reads for itself; any other one is a field lookup it filters by.
_ADMIN_LIST_PARAMETERS = frozenset(
    {ALL_VAR, ERROR_FLAG, IS_FACETS_VAR, IS_POPUP_VAR, ORDER_VAR, PAGE_VAR, SEARCH_VAR, TO_FIELD_VAR}
)


class AdminLookupErrorMiddleware(MiddlewareMixin):
    """Answer 400 when an admin list filtered by a lookup in its URL fails as the list is read.

    The admin refuses a lookup it cannot build (``?e=1``), but some fail only once the database runs
    them: ``?config_data__contains=x`` (SQLite has no JSON containment), ``?id__in=`` an integer past 64
    bits (SQLite's OverflowError; PostgreSQL answers an empty list), ``?updated_at__year=99999``
    (Python's dates stop at 9999), ``?id__range=1`` (one bound). Each was a 500 for any staff user,
    in every model's list. A regular expression is refused before the database sees it
    (``AdminRegexFilterMiddleware``).
    """

    _LOOKUP_ERRORS = (DataError, NotSupportedError, OverflowError, ValueError, IndexError)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponseBase | None:
        match = request.resolver_match
        if (
            not isinstance(exception, self._LOOKUP_ERRORS)
            or match is None
            or match.namespace != "admin"
            or not (match.url_name or "").endswith("_changelist")
        ):
            return None
        lookups = sorted(key for key in request.GET if key not in _ADMIN_LIST_PARAMETERS)
        if not lookups:
            return None
        logger.warning("Admin list lookup refused: %s", lookups, exc_info=exception)
        names = ", ".join(_quoted(key) for key in lookups[:5])
        return bad_request_response(
            request, f"The admin's list cannot be filtered this way ({names}): the database cannot run it."
        )


class AdminSecretLookupMiddleware(MiddlewareMixin):
    """Answer 400 to an admin list filtered by a secret: an API token's key, a password hash.

    The admin filters a list by any lookup on its model's own fields, and one step into a related model,
    named in the URL: a staff user who may only view tokens asked ``?key__startswith=4`` (or, viewing
    users, ``?auth_token__gt=4``) and learnt from the count whether any key starts so, a whole key in
    about 400 requests, a superuser's too. Django's own user admin refuses ``password`` lookups; this
    refuses every lookup that reads a secret field (``SECRET_FIELDS``), in every model's admin.
    """

    def process_view(
        self, request: HttpRequest, view_func: Callable[..., Any], view_args: Any, view_kwargs: Any
    ) -> HttpResponseBase | None:
        model_admin = getattr(view_func, "model_admin", None)
        if model_admin is None or not request.GET:
            return None
        model = model_admin.model
        if any(lookup_reads_secret(model, key) for key in request.GET if key not in _ADMIN_LIST_PARAMETERS):
            return bad_request_response(request, "The admin's lists cannot be filtered by a secret field.")
        return None


@functools.cache
def _secret_fields() -> frozenset[models.Field[Any, Any]]:
    """The fields whose values are secrets: an API token's key (its primary key) and a password hash."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    return frozenset({Token._meta.get_field("key"), get_user_model()._meta.get_field("password")})


def lookup_reads_secret(model: type[models.Model], lookup: str) -> bool:
    """Whether filtering ``model`` by ``lookup`` (``auth_token__key__startswith``) compares a secret.

    A relation compared as such (``auth_token__gt``, ``auth_token__in``) compares its target's primary
    key, so a relation to a model whose primary key is a secret counts as that key unless a field of
    the target follows it (``auth_token__created__year`` does not read the key).
    """
    secrets_ = _secret_fields()
    parts = lookup.split(LOOKUP_SEP)
    for index, part in enumerate(parts):
        field = _field(model, part)
        if field is None:
            return False  # a lookup or a transform of the field before, which was no secret
        if field in secrets_:
            return True
        target = field.related_model if field.is_relation else None
        if not (isinstance(target, type) and issubclass(target, models.Model)):
            return False  # not a relation: what follows are transforms and lookups of this field
        following = parts[index + 1] if index + 1 < len(parts) else None
        if (following is None or _field(target, following) is None) and target._meta.pk in secrets_:
            return True
        model = target
    return False


def _field(model: type[models.Model], name: str) -> Any:
    if name == "pk":
        return model._meta.pk
    try:
        return model._meta.get_field(name)
    except FieldDoesNotExist:
        return None


class AdminSelectionMiddleware(MiddlewareMixin):
    """Answer 400 to an admin action whose selected objects are named by ids their model cannot have.

    The admin filters the list's queryset by the posted ids as they come (``pk__in``): a forged ``x``
    was Django's ValueError and an integer past 64 bits SQLite's OverflowError, both 500s, in every
    model's list. The ids are checked here as the model's primary key would clean them, so every admin
    (ours, Django's users and groups, DRF's tokens with their string keys) gets the same rule.
    """

    def process_view(
        self, request: HttpRequest, view_func: Callable[..., Any], view_args: Any, view_kwargs: Any
    ) -> HttpResponseBase | None:
        model_admin = getattr(view_func, "model_admin", None)
        if model_admin is None or request.method != "POST":
            return None
        pk = model_admin.model._meta.pk
        try:
            for value in request.POST.getlist(ACTION_CHECKBOX_NAME):
                pk.run_validators(pk.to_python(value))
        except ValidationError:
            return bad_request_response(
                request, "An action named a selected object by an id no object can have."
            )
        return None


class UnstorableTextGuard:
    """The WebSocket side of ``UnstorableTextMiddleware``: such a handshake is refused (403), not a crash.

    Channels' session middleware queried the database with a NUL-holding session cookie too.
    """

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        headers = [
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in scope.get("headers", [])
        ]
        cookie = ",".join(value for name, value in headers if name.lower() == "cookie")
        problem = unstorable_text_problem(
            path=scope.get("path", ""),
            query=QueryDict(scope.get("query_string", b"")),
            cookies=parse_cookie(cookie),
            headers=headers,
        )
        if problem is not None:
            logger.warning("WebSocket handshake refused: %s", problem)
            return await websocket_refuse(scope, receive, send)
        return await self.application(scope, receive, send)


async def websocket_refuse(scope: Mapping[str, Any], receive: Any, send: Any) -> None:
    """Refuse a WebSocket handshake (the server answers 403) and end at once.

    A ``websocket.close`` in answer to ``websocket.connect`` rejects the connection (ASGI spec,
    "WebSocket", Close). Channels' ``WebsocketDenier`` is a consumer: it then waited for a disconnect
    that a refused handshake never sends, on the channel layer too, until daphne killed it 10 s later
    ("took too long to shut down and was killed"), for every refused cross-origin socket.
    """
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close"})


def unstorable_text_problem(
    *, path: str, query: QueryDict, cookies: Mapping[str, str], headers: Iterable[tuple[str, str]]
) -> str | None:
    """The first problem with the texts of a request or handshake, as a sentence; None when there is none."""
    for where, text in _texts(path, query, cookies, headers):
        problem = text_problem(text)
        if problem is not None:
            return f"{where} {problem}."
    return None


def _texts(
    path: str, query: QueryDict, cookies: Mapping[str, str], headers: Iterable[tuple[str, str]]
) -> Iterator[tuple[str, str]]:
    yield "The URL path", path
    for key, values in query.lists():
        yield "A query parameter name", key
        yield from ((f"The query parameter {_quoted(key)}", value) for value in values)
    for name, value in cookies.items():
        yield "A cookie name", name
        yield f"The cookie {_quoted(name)}", value
    for name, value in headers:
        yield f"The {name.title()} header", value


def _quoted(name: str) -> str:
    # The name is untrusted too: ASCII escapes keep the message printable, whatever it holds.
    return json.dumps(name[:40])


def bad_request_response(
    request: HttpRequest, message: str, *, code: str = "invalid_characters"
) -> HttpResponseBase:
    """A 400 that says why: JSON under /api/ (DRF's ``detail``), the site's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": message, "code": code}, status=400)
    return render(request, "bad_request.html", {"message": message}, status=400)


class MethodNotAllowedPageMiddleware(MiddlewareMixin):
    """A page's 405 (a POST-only address opened in the browser, the admin's logout by a link) was
    Django's empty response, a blank page; outside the API it is a page saying which methods the address
    takes, with the same ``Allow``. The API's 405 is DRF's JSON, left as it is."""

    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if (
            response.status_code != 405
            or request.path.startswith("/api/")
            or not isinstance(response, HttpResponse)
            or response.content
        ):
            return response
        allowed = response.get("Allow", "")
        context = {"allowed": " or ".join(allowed.split(", ")) if allowed else "", "method": request.method}
        page = render(request, "method_not_allowed.html", context, status=405)
        page["Allow"] = allowed
        return page

"""Page numbers, read as strictly as the API's schema states them: the API's lists and the pages' alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest
from rest_framework.exceptions import NotFound
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request

from storyproject.parsers import page_query_once, query_param_once
from storyproject.untrusted import text_quoted

# Beyond any page a list of this product can have, and short enough for int() to read at once.
_PAGE_MAX_DIGITS = 18
_PAGE_QUOTED_CHARS = 20


def page_number_parse(raw: str | None) -> int | None:
    """``?page=`` as a page number: absent is page 1; a whole number from 1 in ASCII digits is itself;
    anything else (empty, "+1", " 1", a full-width one (U+FF11), "last", "1.0", "0") is None.

    Django's ``Paginator.get_page`` and DRF read an empty value as page 1, and ``int()`` read "+1", " 1"
    and a full-width one as pages too: a link or a client that sends something else has a bug to learn
    of, not the first page.
    """
    if raw is None:
        return 1
    if not (raw.isascii() and raw.isdigit()) or len(raw) > _PAGE_MAX_DIGITS:
        return None
    number = int(raw)
    return number if number >= 1 else None


class StrictPageNumberPagination(PageNumberPagination):
    """DRF's page numbers, 20 a page, read by ``page_number_parse``; a value that is not a page number,
    or one past the last page, is a 404 that says which, as the pages' lists say it (``page_of``): DRF's
    "Invalid page." told a client neither that ``0`` is no page number nor how many pages there are."""

    last_page_strings = ()

    def get_page_number(self, request: Request, paginator: Paginator) -> Any:
        raw = query_param_once(request.query_params, self.page_query_param)
        number = page_number_parse(raw)
        if number is None:
            assert raw is not None  # absent is page 1
            raise _api_not_found(page_not_a_number(raw))
        if number > paginator.num_pages:  # the count DRF's paginator.page() reads anyway
            raise _api_not_found(page_past_the_last(number, num_pages=paginator.num_pages))
        return number


def _api_not_found(message: str) -> NotFound:
    return NotFound({"detail": message, "code": "not_found"})


def page_not_a_number(raw: str) -> str:
    """Why ``?page=`` with ``raw`` names no page."""
    return (
        f"{text_quoted(raw, limit=_PAGE_QUOTED_CHARS)} is not a page number: "
        "pages are numbered 1, 2, 3 and so on."
    )


def page_past_the_last(number: int, *, num_pages: int) -> str:
    """Why page ``number`` of a list of ``num_pages`` pages is none."""
    pages = f"{num_pages} page{'' if num_pages == 1 else 's'}"
    return f"There is no page {number}: this list has {pages}."


class PageNotFound(Http404):
    """A page's ``?page=`` that names no page of its list: the 404 page says which and why
    (``storyproject.urls.not_found``), and offers the list's last page when the number is past it."""

    def __init__(self, message: str, *, last_page_url: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.last_page_url = last_page_url


def page_of(*, request: HttpRequest, items: QuerySet[Any] | Sequence[Any], per_page: int) -> Page[Any]:
    """The page of ``items`` a page's ``?page=`` asks for, read as the API reads it; anything else is a
    ``PageNotFound`` (Django's ``get_page`` showed page 1 for "abc" and the last page for 99)."""
    raw = page_query_once(request, "page")
    number = page_number_parse(raw)
    if number is None:
        assert raw is not None  # absent is page 1
        raise PageNotFound(page_not_a_number(raw))
    paginator = Paginator(items, per_page)
    if number > paginator.num_pages:
        raise PageNotFound(
            page_past_the_last(number, num_pages=paginator.num_pages),
            last_page_url=_page_url(request, paginator.num_pages),
        )
    return paginator.page(number)


def _page_url(request: HttpRequest, number: int) -> str:
    return f"{request.path}?{page_query(request, number)}"


def page_query(request: HttpRequest, number: int) -> str:
    """The request's query with ``page`` set to ``number``, its other parameters kept."""
    query = request.GET.copy()
    query["page"] = str(number)
    return query.urlencode()

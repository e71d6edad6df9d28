"""The API's page numbers, read as strictly as the schema states them."""

from __future__ import annotations

from typing import Any

from django.core.paginator import Paginator
from rest_framework.exceptions import NotFound
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request

# Beyond any page a list of this product can have, and short enough for int() to read at once.
_PAGE_MAX_DIGITS = 18


class StrictPageNumberPagination(PageNumberPagination):
    """DRF's page numbers, 20 a page, where ``?page=`` is absent (page 1) or a whole number from 1 in
    ASCII digits; anything else is the 404 a page past the last one gets.

    DRF reads an empty ``?page=`` as page 1, and ``int()`` read "+1", " 1", a full-width one (U+FF11) and DRF's
    own "last" as pages too, while "1.0" was refused: the schema says integer, so a client that sends
    something else has a bug to learn of, not the first page.
    """

    last_page_strings = ()

    def get_page_number(self, request: Request, paginator: Paginator) -> Any:
        raw = request.query_params.get(self.page_query_param)
        if raw is None:
            return 1
        if not (raw.isascii() and raw.isdigit()) or len(raw) > _PAGE_MAX_DIGITS:
            raise NotFound(self.invalid_page_message)
        return int(raw)

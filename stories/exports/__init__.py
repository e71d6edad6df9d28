"""Exports of a screenplay version: Fountain, Final Draft (FDX), PDF and JSON.

``screenplay_export`` is the one entry point (the contract between helpers); the writers are pure
functions of the stored screenplay JSON and an ``ExportMeta``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from stories.exports.fdx import fdx_from_screenplay
from stories.exports.fountain import fountain_from_screenplay
from stories.exports.pdf import pdf_from_screenplay
from stories.exports.screenplay import ExportMeta

__all__ = [
    "EXPORT_FORMATS",
    "EXPORT_FORMAT_VERSION",
    "ExportFormatError",
    "ExportMeta",
    "screenplay_export",
]

# Part of the key of every cached export (stories/exports/downloads.py): raise it whenever a writer's
# output changes (a layout, an escape, a font), so that no file built by the old code is served again.
EXPORT_FORMAT_VERSION = 8


class ExportFormatError(ValueError):
    """The format asked for is not one of EXPORT_FORMATS."""


@dataclass(frozen=True)
class _Format:
    write: Callable[[object, ExportMeta], bytes]
    content_type: str
    extension: str
    # Whether a built file is kept in the "exports" cache: only where building costs far more than
    # keeping. A 300-scene version took 6 s of CPU as PDF (0.9 MB), but 0.2 s as Fountain, 0.14 s as
    # FDX and 0.04 s as JSON, files of 2.5 MB each.
    cached: bool = False
    # Whether two builds of the same version are the same bytes: the ETag is strong then, else weak
    # (RFC 9110 section 8.8.1). A PDF is not: reportlab stamps each build with its time and an /ID.
    reproducible: bool = True


def _fountain(content: object, meta: ExportMeta) -> bytes:
    return fountain_from_screenplay(content=content, meta=meta).encode()


def _json(content: object, meta: ExportMeta) -> bytes:
    # The stored screenplay itself, which is the contract's shape, readable by any client.
    return json.dumps(content, ensure_ascii=False, indent=2).encode()


EXPORT_FORMATS: dict[str, _Format] = {
    "fountain": _Format(_fountain, "text/plain; charset=utf-8", "fountain"),
    "fdx": _Format(lambda c, m: fdx_from_screenplay(content=c, meta=m), "application/xml", "fdx"),
    "pdf": _Format(
        lambda c, m: pdf_from_screenplay(content=c, meta=m),
        "application/pdf",
        "pdf",
        cached=True,
        reproducible=False,
    ),
    "json": _Format(_json, "application/json", "json"),
}


def screenplay_export(*, content: dict, fmt: str, meta: ExportMeta) -> tuple[bytes, str, str]:
    """The screenplay in format ``fmt``: its bytes, its content type and its file extension."""
    export = EXPORT_FORMATS.get(fmt)
    if export is None:
        raise ExportFormatError(f"Unknown export format {fmt!r}; use one of: {', '.join(EXPORT_FORMATS)}.")
    return export.write(content, meta), export.content_type, export.extension

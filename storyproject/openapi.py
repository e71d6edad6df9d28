"""What drf-spectacular cannot see in the views: statuses DRF itself answers, added to the schema."""

from __future__ import annotations

from typing import Any

# DRF's PageNumberPagination answers a page past the end (or not a number) with this.
_PAGE_NOT_FOUND = {
    "description": "No such page: past the last one, or not a page number.",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"detail": {"type": "string"}},
                "required": ["detail"],
            }
        }
    },
}


def paginated_lists_not_found(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Postprocessing hook: every operation with a ``page`` parameter documents the 404 for a bad page."""
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            names = {parameter.get("name") for parameter in operation.get("parameters", [])}
            if "page" in names:
                operation.setdefault("responses", {}).setdefault("404", _PAGE_NOT_FOUND)
    return result

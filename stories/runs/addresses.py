"""The client's run addresses: ``attach`` and ``cancel`` messages, the SSE ``after``, checked strictly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stories.errors import GenerationError
from stories.generation.requests import fields_known_check, int_parse

MAX_ID = 2**63 - 1


@dataclass(frozen=True)
class RunAddress:
    """A run, the last seq the client already has (0: none), and whether it asked to be told where the
    replay ends (``confirm``: the ``attached`` answer, docs/protocol.md)."""

    run_id: int | None
    after: int = 0
    confirm: bool = False


def attach_parse(fields: dict[str, Any]) -> RunAddress:
    """``{"run_id": N, "after": S, "confirm": true}``: run_id required, after optional (0, also when
    null), confirm optional (false, also when null)."""
    fields_known_check(fields, {"run_id", "after", "confirm"})
    if "run_id" not in fields:
        raise GenerationError("invalid_request", "attach needs a run_id")
    confirm = fields.get("confirm")
    if confirm is not None and not isinstance(confirm, bool):
        raise GenerationError("invalid_request", "confirm must be true or false")
    return RunAddress(
        run_id=int_parse(fields["run_id"], "run_id", 1, MAX_ID),
        after=after_parse(0 if fields.get("after") is None else fields["after"]),
        confirm=bool(confirm),
    )


def cancel_parse(fields: dict[str, Any]) -> RunAddress:
    """``{"run_id": N}`` or nothing (the socket's own run)."""
    fields_known_check(fields, {"run_id"})
    run_id = fields.get("run_id")
    return RunAddress(run_id=None if run_id is None else int_parse(run_id, "run_id", 1, MAX_ID))


def after_parse(value: Any) -> int:
    return int_parse(value, "after", 0, MAX_ID)

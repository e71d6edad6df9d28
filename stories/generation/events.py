"""The generation protocol as code: one TypedDict per server event, and the one reader of a run's events.

The events are documented in docs/protocol.md ("Server to client"); keep the two in line (a test
checks the pipeline's events and that page against these types). The WebSocket consumer sends each
event as it comes; every blocking caller (the REST views, the story page's rewrite form, ``manage.py
generate_screenplay``) reads a run with ``events_fold``, which keeps only how the run ended.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, cast

from stories.errors import ERROR_CODES, ErrorCode, GenerationCancelled, GenerationError

__all__ = ["ERROR_CODES", "ErrorCode", "Event", "RunOutcome", "events_fold"]


class AcceptedEvent(TypedDict):
    type: Literal["accepted"]
    run_id: int
    model: str
    model_name: str
    max_tokens: int
    personas: list[str]
    estimated_seconds: float


class KeptScene(TypedDict):
    index: int
    scene: dict[str, Any]


class ResumedEvent(TypedDict):
    type: Literal["resumed"]
    run_id: int
    mode: str
    model: str
    model_name: str
    max_tokens: int
    personas: list[str]
    # Parallel mode: the outline (null in single mode). Both: the scenes kept from the checkpoint.
    outline: dict[str, Any] | None
    scenes: list[KeptScene]


class DeltaEvent(TypedDict):
    type: Literal["delta"]
    text: str


class OutlineDeltaEvent(TypedDict):
    type: Literal["outline_delta"]
    text: str


class ScenePlaceholder(TypedDict):
    index: int
    heading: str


class OutlineEvent(TypedDict):
    type: Literal["outline"]
    outline: dict[str, Any]
    scenes: list[ScenePlaceholder]


class SceneDeltaEvent(TypedDict):
    type: Literal["scene_delta"]
    index: int
    text: str


class SceneEvent(TypedDict):
    type: Literal["scene"]
    index: int
    scene: dict[str, Any]


class SceneRetryEvent(TypedDict):
    type: Literal["scene_retry"]
    index: int
    attempt: int
    code: ErrorCode


class _ProgressFields(TypedDict):
    type: Literal["progress"]
    output_tokens: int
    elapsed_ms: int
    eta_seconds: float


class ProgressEvent(_ProgressFields, total=False):
    # Parallel mode and rewrites only. (A base class rather than NotRequired, which the runtime does
    # not see under `from __future__ import annotations` on Python 3.11.)
    scenes_done: int
    scenes_total: int


class CastDropped(TypedDict):
    """A cast member a save left out: its persona was deleted while the run was writing."""

    persona: str
    character_name: str


class SavedEvent(TypedDict):
    type: Literal["saved"]
    run_id: int
    story_id: int
    version: int
    url: str
    # Empty but when an editor deleted a persona of the run while it was writing (docs/generation.md).
    cast_dropped: list[CastDropped]


class DoneEvent(TypedDict):
    type: Literal["done"]
    run_id: int
    timings: dict[str, int | None]
    usage: dict[str, int]


class _ErrorFields(TypedDict):
    type: Literal["error"]
    code: ErrorCode
    message: str
    retryable: bool


class ErrorEvent(_ErrorFields, total=False):
    # Whole seconds, only when known.
    retry_after: int


class CancelledEvent(TypedDict):
    type: Literal["cancelled"]


class AttachedEvent(TypedDict):
    """Not a run's event (it has no ``seq``): a socket's answer to an ``attach`` sent with ``confirm``,
    before the replay. ``replay_to``: the last seq of the replay (null: all that follows is one);
    ``elapsed_ms``: the run's time so far, or to its end (null when unknown)."""

    type: Literal["attached"]
    run_id: int
    replay_to: int | None
    elapsed_ms: int | None


Event = (
    AcceptedEvent
    | ResumedEvent
    | DeltaEvent
    | OutlineDeltaEvent
    | OutlineEvent
    | SceneDeltaEvent
    | SceneEvent
    | SceneRetryEvent
    | ProgressEvent
    | SavedEvent
    | DoneEvent
    | ErrorEvent
    | CancelledEvent
)

# Each event's type name and its TypedDict, in the order docs/protocol.md lists them.
EVENT_TYPES: dict[str, type] = {
    "accepted": AcceptedEvent,
    "resumed": ResumedEvent,
    "delta": DeltaEvent,
    "outline_delta": OutlineDeltaEvent,
    "outline": OutlineEvent,
    "scene_delta": SceneDeltaEvent,
    "scene": SceneEvent,
    "scene_retry": SceneRetryEvent,
    "progress": ProgressEvent,
    "saved": SavedEvent,
    "done": DoneEvent,
    "error": ErrorEvent,
    "cancelled": CancelledEvent,
    "attached": AttachedEvent,
}

# The address every event of a run carries as a client receives it (added by the run's event log,
# stories.runs): its run and its place in the run's sequence (null for an end rebuilt from the
# database after the log expired). An error refusing a request before any run exists has neither.
ADDRESS_KEYS = frozenset({"run_id", "seq"})

# What a blocking caller keeps: how the run ended. Everything else is dropped as it arrives.
_ENDINGS = frozenset({"saved", "done", "error", "cancelled"})


@dataclass(frozen=True)
class RunOutcome:
    """A run that ended well: its ``done``, and its ``saved`` unless it saved nothing (``--no-save``)."""

    done: DoneEvent
    saved: SavedEvent | None = None

    @property
    def run_id(self) -> int:
        return self.done["run_id"]

    def saved_event(self) -> SavedEvent:
        """The ``saved`` of a run that was to save (every run but ``--no-save``'s has one)."""
        if self.saved is None:
            raise GenerationError("save_failed", "the run ended without saving a version")
        return self.saved


async def events_fold(
    events: AsyncGenerator[dict[str, Any], None], *, on_event: Callable[[Event], None] | None = None
) -> RunOutcome:
    """Read a run's events to the end and return how it ended; streamed text is never kept.

    Raises the run's ``error`` as GenerationError, and GenerationCancelled for ``cancelled``.
    ``on_event`` sees every event as it arrives (the command shows progress and scenes with it).
    The stream is read to its end, never left early: closing the pipeline before it has finished
    would record the run as cancelled.
    """
    endings: dict[str, dict[str, Any]] = {}
    async with aclosing(events) as stream:
        async for event in stream:
            if on_event is not None:
                on_event(cast(Event, event))
            if event["type"] in _ENDINGS:
                endings[event["type"]] = event
    return _outcome(endings)


def _outcome(endings: dict[str, dict[str, Any]]) -> RunOutcome:
    if "error" in endings:
        raise GenerationError.from_event(endings["error"])
    if "cancelled" in endings:
        raise GenerationCancelled("the generation was cancelled; nothing was saved")
    if "done" not in endings:
        raise GenerationError("llm_unavailable", "the generation ended without a result")
    return RunOutcome(
        done=cast(DoneEvent, endings["done"]), saved=cast(SavedEvent | None, endings.get("saved"))
    )

"""The one exception every generation failure becomes, with the error codes of the protocol.

It lives outside ``stories.generation`` so that services, selectors and interfaces can raise and
catch it without importing the generation package. The codes are documented in docs/protocol.md
("Error codes"); their HTTP statuses are set once, in ``stories.exception_handlers``.
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

from storyproject.db import lock_wait_exceeded

ErrorCode = Literal[
    "invalid_request",
    "unknown_personas",
    "unauthenticated",
    "forbidden",
    "rate_limited",
    "busy",
    "llm_overloaded",
    "llm_rate_limited",
    "llm_unavailable",
    # Not retryable, and not the writer's doing: an operator must act (see AnthropicBackend).
    # llm_quota: a spend limit or billing problem with the provider account.
    "llm_quota",
    # llm_config: the key, its permissions or the configured model is wrong.
    "llm_config",
    "llm_timeout",
    "llm_refused",
    "invalid_output",
    "save_failed",
    # REST only: a writer's version based on one that is no longer the latest (nothing was saved).
    "version_conflict",
    # The process running the run stopped (or lost its lease) and the run could not be resumed from
    # its checkpoint (docs/generation.md, "Leases, checkpoints and resume").
    "interrupted",
    # An attach or cancel of a run that does not exist or is not the writer's (nothing else is revealed).
    "not_found",
    # REST only: the server process stopped (make serve's graceful stop) while a blocking request
    # waited for its run, which goes on on another process; the request is not to be sent again.
    "server_stopping",
]

# The codes of the protocol; nothing else reaches a client.
ERROR_CODES: frozenset[str] = frozenset(get_args(ErrorCode))
# The codes that are always retryable (docs/protocol.md, "Error codes"); llm_unavailable mostly is too,
# but not when no key is configured. For an error rebuilt from a run recorded without its own answer.
RETRYABLE_CODES: frozenset[str] = frozenset(
    {"busy", "rate_limited", "llm_overloaded", "llm_rate_limited", "llm_timeout", "interrupted"}
)


class GenerationError(Exception):
    """A failure a client is told about: a protocol code, a message for people, and whether to retry."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        operator_detail: str = "",
        run_id: int | None = None,
    ) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown generation error code {code!r}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        # For the operator's log only (the provider's status, error code and request id); never sent.
        self.operator_detail = operator_detail
        # The run a REST answer names, when the client should follow it rather than ask again.
        self.run_id = run_id

    def reworded(self, message: str) -> GenerationError:
        """The same error (code, retry, operator detail) told with ``message``."""
        return GenerationError(
            self.code,
            message,
            retryable=self.retryable,
            retry_after=self.retry_after,
            operator_detail=self.operator_detail,
            run_id=self.run_id,
        )

    def as_event(self) -> dict[str, Any]:
        """The protocol's ``error`` event (``stories.generation.events.ErrorEvent``)."""
        event: dict[str, Any] = {
            "type": "error",
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
        }
        if self.retry_after is not None:
            # Whole seconds, rounded up: a provider's "retry-after-ms: 5" is no "retry in 0 s".
            event["retry_after"] = max(math.ceil(self.retry_after), 0)
        return event

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> GenerationError:
        """The error an ``error`` event stands for, so a blocking caller can raise what it received."""
        return cls(
            event["code"],
            event["message"],
            retryable=bool(event.get("retryable")),
            retry_after=event.get("retry_after"),
        )


def database_failure(run_id: int | None, error: BaseException | None = None) -> GenerationError:
    """The run's end when the server's own database failed under it (``error``, Django's): not the
    model's doing, and worth trying again (the protocol has no code of its own for it:
    ``llm_unavailable``, retryable). A write that gave up waiting for a lock held on the run elsewhere
    (storyproject.db.lock_wait_bound) says so: the operator's to look for, not an outage."""
    if error is not None and lock_wait_exceeded(error):
        return GenerationError(
            "llm_unavailable",
            f"the server's database kept this run's record locked for too long (run {run_id}); "
            "please try again",
            retryable=True,
        )
    return GenerationError(
        "llm_unavailable",
        f"the server's database failed during the generation (run {run_id}); please try again",
        retryable=True,
    )


class ModelStoppedShort(GenerationError):
    """``invalid_output``: the model ended its reply early for a reason another try would meet again (its
    context window full, a tool use, a paused turn), so parallel mode does not try a scene again, as it
    does one that came out invalid."""

    def __init__(self, message: str) -> None:
        super().__init__("invalid_output", message)


class RunTakenOver(GenerationError):
    """Another server process took the run over (this one stalled past its lease): this copy stops and
    writes nothing more, to the run or to its log, whose end is the other process's to write
    (stories.runs.runner). Its code is the one a caller outside a runner is told."""

    def __init__(self, message: str) -> None:
        super().__init__("interrupted", message, retryable=True)


class GenerationCancelled(Exception):
    """A run that stopped on a ``cancelled`` event: nothing was saved."""

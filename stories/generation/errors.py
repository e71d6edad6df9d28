"""The one exception every generation failure becomes, with the error codes of the WebSocket protocol."""

from __future__ import annotations

# The codes of the protocol (docs/protocol.md, "Error codes"); nothing else reaches a client.
ERROR_CODES = frozenset(
    {
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
    }
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

    def as_event(self) -> dict[str, object]:
        """The protocol's `error` message."""
        event: dict[str, object] = {
            "type": "error",
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
        }
        if self.retry_after is not None:
            event["retry_after"] = max(round(self.retry_after), 0)
        return event

"""The one exception type every generation failure becomes; its code is one of DESIGN.md's."""

from __future__ import annotations


class GenerationError(Exception):
    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable

"""Kept importable for modules not yet moved to ``stories.errors``, where the error now lives."""

from __future__ import annotations

from stories.errors import ERROR_CODES, GenerationError

__all__ = ["ERROR_CODES", "GenerationError"]

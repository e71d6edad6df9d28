"""How long to wait before retrying a model call: the one back-off rule.

The Anthropic back-end's own retries (before any text) and parallel mode's per-scene retries both wait
this long: the server's ``retry-after`` when it gave one of more than 0 s (the SDK's rule), else
exponential back-off with jitter, never past ``STORY_LLM_RETRY_AFTER_CAP_SECONDS`` (nor ``cap_seconds``, when the caller has a tighter bound).
"""

from __future__ import annotations

import random

from django.conf import settings

_BACKOFF_BASE_SECONDS = 0.5


def backoff_seconds(attempt: int, retry_after: float | None, *, cap_seconds: float | None = None) -> float:
    """The wait before retry ``attempt`` (0 for the first retry)."""
    cap = float(settings.STORY_LLM_RETRY_AFTER_CAP_SECONDS)
    if cap_seconds is not None:
        cap = min(cap, cap_seconds)
    if retry_after is not None and retry_after > 0:
        return min(retry_after, cap)
    return min(_BACKOFF_BASE_SECONDS * 2**attempt, cap) * random.uniform(0.75, 1.25)
